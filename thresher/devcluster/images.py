"""Container images for the real local node, built without a registry or Docker.

* the pod sandbox ("pause") image: a static Go program (``node/pause.go``) alone in an image;
* the base image: a minimal Debian bookworm rootfs with python3, made by ``debootstrap``;
* Thresher's ``operator`` and ``jobs`` images: the project's Dockerfile built by ``buildah``
  with ``--build-arg BASE_IMAGE=<the local base>``;
* pushed to a registry with ``skopeo copy`` from the archive (``push``): the dev cluster's
  own registry (``registry.py``) or any the user names (``release.py``).

Everything is cached under ``$THRESHER_CACHE_DIR`` or ``~/.cache/thresher``: buildah's own
storage in ``buildah/`` and one OCI archive per image in ``images/``. The node imports only the
pause archive into containerd (the CRI pulls the sandbox image with no pod's credentials);
Thresher's images are pushed to the dev registry and pulled by the kubelet by digest. Each
archive is keyed by a hash of what it is built from, so a changed input is rebuilt and an
unchanged one never is.

``thresher dev images [--push-to STATE_DIR] [pause|base|jobs|operator ...]`` (``make images``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from thresher.devcluster.binaries import cache_root

Log = Callable[[str], None]

REPO = Path(__file__).resolve().parents[2]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("THRESHER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the Dockerfile's base stage needs: python3 with venv (and `python`), useradd (in minbase).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_IMAGE = "localhost/thresher-base:bookworm"
# The names Kubernetes objects use; containerd normalises "thresher-jobs:0.1.0" to these, so
# the operator's default --job-image already matches.
PAUSE_IMAGE = "localhost/thresher/pause:1"
JOBS_IMAGE = "docker.io/library/thresher-jobs:0.1.0"
OPERATOR_IMAGE = "docker.io/library/thresher-operator:0.1.0"
JOBS_GPU_IMAGE = "docker.io/library/thresher-jobs-gpu:0.1.0"
TARGETS = {"jobs": JOBS_IMAGE, "operator": OPERATOR_IMAGE, "jobs-gpu": JOBS_GPU_IMAGE}
# Where each image goes in a registry: REGISTRY/<repository> (`make release`, the dev registry).
REPOSITORIES = {"operator": "thresher/operator", "jobs": "thresher/jobs", "jobs-gpu": "thresher/jobs-gpu"}
REQUIRED_TOOLS = {"buildah": "buildah", "debootstrap": "debootstrap", "go": "golang (Go 1.24+)",
                  "skopeo": "skopeo"}


class ImageError(RuntimeError):
    """An image could not be built; the message names the step and the cause."""


def images_dir() -> Path:
    return cache_root() / "images"


def _buildah(*args: str) -> list[str]:
    """buildah with its storage in the cache, so it never touches /var/lib/containers."""
    root = cache_root() / "buildah"
    return ["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run"),
            "--storage-driver", "overlay", *args]


def _run(step: str, cmd: list[str], log: Log, cwd: Path | None = None, env: dict | None = None) -> str:
    tool = cmd[0]
    if shutil.which(tool) is None:
        raise ImageError(f"image step '{step}' failed: `{tool}` is not installed "
                         f"(apt-get install {REQUIRED_TOOLS.get(tool, tool)})")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-25:])
        raise ImageError(f"image step '{step}' failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{tail}")
    log(f"  [{step}] done in {time.monotonic() - start:.0f}s")
    return proc.stdout


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:10]


def _image_exists(name: str) -> bool:
    if shutil.which("buildah") is None:
        return False
    return subprocess.run(_buildah("inspect", "--type", "image", name), capture_output=True).returncode == 0


def _push_archive(image: str, archive: Path, log: Log) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    _run(f"save {image}", _buildah("push", "--quiet", image, f"oci-archive:{tmp}:{image}"), log)
    os.replace(tmp, archive)  # complete archives only
    return archive


# --- pause ------------------------------------------------------------------------------

def pause_archive(log: Log = print) -> Path:
    """The sandbox image as an OCI archive: one static binary, entrypoint /pause."""
    source = resources.files("thresher.devcluster").joinpath("node/pause.go").read_bytes()
    archive = images_dir() / f"pause-{_digest(source)}.oci.tar"
    if archive.exists():
        return archive
    log(f"building the sandbox image {PAUSE_IMAGE} (static Go program, no registry)")
    with tempfile.TemporaryDirectory(prefix="thresher-pause-") as tmp:
        work = Path(tmp)
        (work / "pause.go").write_bytes(source)
        env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "off", "GOTOOLCHAIN": "local"}
        _run("compile pause", ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "pause", "pause.go"],
             log, cwd=work, env=env)
        ctr = _run("pause container", _buildah("from", "scratch"), log).strip()
        try:
            _run("copy pause", _buildah("copy", "--chmod", "0755", ctr, str(work / "pause"), "/pause"), log)
            _run("configure pause", _buildah("config", "--entrypoint", '["/pause"]', "--cmd", "",
                                             "--user", "65535:65535", "--os", "linux", "--arch", "amd64",
                                             ctr), log)
            _run("commit pause", _buildah("commit", "--quiet", ctr, PAUSE_IMAGE), log)
        finally:
            subprocess.run(_buildah("rm", ctr), capture_output=True)
    return _push_archive(PAUSE_IMAGE, archive, log)


# --- base -------------------------------------------------------------------------------

def base_recipe() -> str:
    return _digest(DEBIAN_SUITE.encode(), " ".join(BASE_PACKAGES).encode())


def ensure_base(log: Log = print) -> str:
    """Build the Debian base image into buildah's storage once; return its name."""
    stamp = images_dir() / f"base-{base_recipe()}.built"
    if stamp.exists() and _image_exists(BASE_IMAGE):
        return BASE_IMAGE
    log(f"building the base image {BASE_IMAGE}: debootstrap {DEBIAN_SUITE} "
        f"(+{', '.join(BASE_PACKAGES)}) from {DEBIAN_MIRROR}")
    start = time.monotonic()
    images_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="thresher-base-", dir=images_dir()) as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        _run("debootstrap", ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                             DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR], log)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "tmp"):
            path = rootfs / junk
            if path.is_dir():
                for child in path.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    elif child.name != "lock":
                        child.unlink()
        # Device nodes and mount points are the runtime's business, not the image's.
        _run("pack rootfs", ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*",
                             "--exclude=./proc/*", "--exclude=./sys/*", "-cf", str(tarball), "."], log)
        ctr = _run("base container", _buildah("from", "scratch"), log).strip()
        try:
            _run("add rootfs", _buildah("add", ctr, str(tarball), "/"), log)
            _run("configure base", _buildah(
                "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', "--os", "linux", "--arch", "amd64", ctr), log)
            _run("commit base", _buildah("commit", "--quiet", "--rm", ctr, BASE_IMAGE), log)
        except ImageError:
            subprocess.run(_buildah("rm", ctr), capture_output=True)
            raise
    stamp.write_text(BASE_IMAGE + "\n")
    log(f"base image built in {time.monotonic() - start:.0f}s")
    return BASE_IMAGE


# --- Thresher's images --------------------------------------------------------------------

def excluded_from_images() -> tuple[str, ...]:
    """Folders of thresher/ that .dockerignore keeps out of the images (the demo and its fakes:
    they run on the host; pods reach the fake TMDB server over the node's bridge)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return tuple(line.strip().rstrip("/") for line in lines if line.strip().startswith("thresher/"))


def in_build_context(relative: str, excluded: tuple[str, ...]) -> bool:
    """Whether a file of thresher/ reaches the images."""
    parts = Path(relative).parts
    return ("__pycache__" not in parts and not relative.endswith((".pyc", ".pyo"))
            and not any(relative == p or relative.startswith(p + "/") for p in excluded))


def _context_digest() -> str:
    """What the Dockerfile copies (see .dockerignore): pyproject, README/LICENSE, thresher/
    without the demo, so a demo change never rebuilds an image."""
    files = [REPO / "Dockerfile", REPO / ".dockerignore", REPO / "pyproject.toml", *sorted(REPO.glob("README*")),
             *sorted(REPO.glob("LICENSE*"))]
    excluded = excluded_from_images()
    files += sorted(p for p in (REPO / "thresher").rglob("*")
                    if p.is_file() and in_build_context(str(p.relative_to(REPO)), excluded))
    parts = []
    for path in files:
        parts += [str(path.relative_to(REPO)).encode(), path.read_bytes()]
    return _digest(base_recipe().encode(), *parts)


def _host_trust_mounts(tmp: Path) -> list[str]:
    """Build-time only (never in the image): the host's CA bundle and a pip.conf that uses it,
    so `pip install` in RUN steps works behind a TLS-intercepting proxy as it does on the host;
    PIP_INDEX_URL / PIP_EXTRA_INDEX_URL of the host carry over the same way."""
    bundle = Path(os.environ.get("THRESHER_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
    if not bundle.is_file():
        return []
    conf = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
    for var, key in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        if os.environ.get(var):
            conf.append(f"{key} = {os.environ[var]}")
    (tmp / "pip.conf").write_text("\n".join(conf) + "\n")
    return ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
            "--volume", f"{tmp / 'pip.conf'}:/etc/pip.conf:ro"]


def _pull_policy(target: str) -> list[str]:
    """Never pull: every stage builds on the local base, except jobs-gpu's CUDA runtime base
    (the Dockerfile's GPU_BASE_IMAGE), pulled once when missing (only `make release` builds it)."""
    return ["--pull=false"] if target == "jobs-gpu" else ["--pull-never"]


def archive_path(target: str) -> Path:
    return images_dir() / f"thresher-{target}-{_context_digest()}.oci.tar"


# Archives kept per target: the newest few, not only this tree's, because checkouts of the project
# share the cache (git worktrees, a branch and main): each must not delete the other's image.
KEEP_ARCHIVES = 3


def stale_archives(found: list[Path], current: Path, keep: int = KEEP_ARCHIVES) -> list[Path]:
    """All but the ``keep`` newest archives (by mtime; ``current`` always kept)."""
    others = sorted((p for p in found if p != current), key=lambda p: p.stat().st_mtime, reverse=True)
    return others[keep - 1:]


def qualified(reference: str) -> str:
    """An image reference with its registry spelled out, as Docker normalises a short name
    (``nvidia/cuda:12`` -> ``docker.io/nvidia/cuda:12``, ``debian`` ->
    ``docker.io/library/debian``). buildah refuses short names unless registries.conf lists
    search registries, which Debian's does not."""
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference}" if rest else f"docker.io/library/{reference}"


def dockerfile_arg(name: str, dockerfile: Path | None = None) -> str:
    """The default of ``ARG name=...`` in the Dockerfile (its one source of truth)."""
    for line in (dockerfile or REPO / "Dockerfile").read_text().splitlines():
        if line.startswith(f"ARG {name}="):
            return line.split("=", 1)[1].strip()
    raise ImageError(f"the Dockerfile declares no ARG {name}=...")


def build_args(target: str, base: str) -> list[str]:
    """``--build-arg``s of one target: the local base for every stage built on it; for
    jobs-gpu also the CUDA runtime base, fully qualified so buildah can pull it."""
    args = ["--build-arg", f"BASE_IMAGE={base}"]
    if target == "jobs-gpu":
        args += ["--build-arg", f"GPU_BASE_IMAGE={qualified(dockerfile_arg('GPU_BASE_IMAGE'))}"]
    return args


def build_target(target: str, log: Log = print) -> Path:
    """Build one Dockerfile target on the local base and save it as an OCI archive."""
    archive = archive_path(target)
    if archive.exists():
        log(f"{TARGETS[target]}: up to date ({archive.name})")
        return archive
    base = ensure_base(log)
    log(f"building {TARGETS[target]} (Dockerfile target {target}, BASE_IMAGE={base}) with buildah")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thresher-bud-") as tmp:
        _run(f"build {target}", _buildah(
            "bud", "--isolation", "chroot", "--network", "host", *_pull_policy(target), "--layers",
            *_host_trust_mounts(Path(tmp)),
            *build_args(target, base), "--target", target, "-t", TARGETS[target],
            "-f", str(REPO / "Dockerfile"), str(REPO)), log)
    _push_archive(TARGETS[target], archive, log)
    for old in stale_archives(sorted(images_dir().glob(f"thresher-{target}-*.oci.tar")), archive):
        old.unlink(missing_ok=True)
    # Each source change leaves the previous build's images untagged (a few hundred MB of
    # layers each); drop them. The base, pause and current images stay tagged, so the next
    # build loses only the layer cache of its first few cheap steps.
    subprocess.run(_buildah("rmi", "--prune"), capture_output=True)
    log(f"{TARGETS[target]} built in {time.monotonic() - start:.0f}s ({archive.stat().st_size / 2**20:.0f} MiB)")
    return archive


# --- pushing to a registry ----------------------------------------------------------------

@dataclass(frozen=True)
class Pushed:
    """One image in a registry: ``repository`` includes the registry (``127.0.0.1:5000/thresher/jobs``)."""

    target: str
    repository: str
    tag: str
    digest: str
    seconds: float

    @property
    def reference(self) -> str:
        """By digest: what pods and the chart's values name."""
        return f"{self.repository}@{self.digest}"


def push(target: str, archive: Path, registry: str, tag: str, log: Log = print, *,
         authfile: Path | None = None, cert_dir: Path | None = None) -> Pushed:
    """Copy an OCI archive to ``registry/<REPOSITORIES[target]>:tag`` with skopeo (layers as
    built, so the same archive always gets the same digest). Without ``authfile``/``cert_dir``
    skopeo uses the login of `skopeo/buildah/podman login` and the system's CAs."""
    repository = f"{registry.rstrip('/')}/{REPOSITORIES[target]}"
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thresher-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        _run(f"push {target}", ["skopeo", "copy", "--quiet", "--retry-times", "2", "--digestfile", str(digest_file),
                                *(["--dest-authfile", str(authfile)] if authfile else []),
                                *(["--dest-cert-dir", str(cert_dir)] if cert_dir else []),
                                f"oci-archive:{archive}", f"docker://{repository}:{tag}"], log)
        digest = digest_file.read_text().strip()
    pushed = Pushed(target, repository, tag, digest, time.monotonic() - start)
    log(f"pushed {repository}:{tag} in {pushed.seconds:.1f}s: {pushed.reference}")
    return pushed


def build(names: Iterable[str], log: Log = print) -> list[Path]:
    out = []
    for name in names:
        if name == "pause":
            out.append(pause_archive(log))
        elif name == "base":
            ensure_base(log)
        elif name in TARGETS:
            out.append(build_target(name, log))
        else:
            raise ImageError(f"unknown image {name!r}: pause, base, {', '.join(TARGETS)}")
    return out

