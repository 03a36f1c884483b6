"""Find, or build once, the upstream binaries of the local control plane.

Order of precedence for every binary:

1. ``$PATH``, when the binary there reports the pinned minor version;
2. ``$THRESHER_BIN_DIR``, a directory the user names (same version check);
3. the cache, ``$THRESHER_CACHE_DIR`` or ``~/.cache/thresher``, keyed by version;
4. a build from the Go module proxy into that cache.

Kubernetes cannot be ``go install``-ed: its go.mod replaces every staging module
with a local path (kubernetes/kubernetes#79384). The build therefore writes a
scratch module that requires ``k8s.io/kubernetes`` and replaces each staging
module with its published ``v0.Y.Z`` tag, read from the chosen version's own
go.mod so the list never goes stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from thresher.devcluster import versions


class BuildError(RuntimeError):
    """A step of a binary build failed; the message names the step and the cause."""


@dataclass(frozen=True)
class Component:
    """One upstream binary: how to ask its version and how to build it."""

    name: str
    version: str
    group: str  # binaries of one group build together in one scratch module
    package: str  # Go main package
    version_args: tuple[str, ...]

    @property
    def minor(self) -> str:
        return minor_of(self.version)


def _k8s(name: str, version_args: tuple[str, ...]) -> Component:
    return Component(name, versions.KUBERNETES, "kubernetes", f"k8s.io/kubernetes/cmd/{name}", version_args)


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        _k8s("kube-apiserver", ("--version",)),
        _k8s("kube-controller-manager", ("--version",)),
        _k8s("kube-scheduler", ("--version",)),
        _k8s("kubectl", ("version", "--client")),
        # Only for the opt-in real node (`thresher dev up --node`); not part of CONTROL_PLANE.
        _k8s("kubelet", ("--version",)),
        _k8s("kube-proxy", ("--version",)),
        Component("etcd", versions.ETCD, "etcd", "go.etcd.io/etcd/server/v3", ("--version",)),
        Component("kwok", versions.KWOK, "kwok", "sigs.k8s.io/kwok/cmd/kwok", ("--version",)),
        Component("helm", versions.HELM, "helm", "helm.sh/helm/v3/cmd/helm", ("version", "--short")),
    )
}

# What the control plane needs; helm is resolved on its own by the chart tests.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.\d+")


def minor_of(text: str) -> str:
    """``'Kubernetes v1.34.4'`` -> ``'1.34'``; empty string when there is no version."""
    match = _VERSION_RE.search(text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def cache_root() -> Path:
    return Path(os.environ.get("THRESHER_CACHE_DIR") or Path.home() / ".cache" / "thresher")


BUILD_TAGS = "selinux,notest"


def recipe_id(component: Component) -> str:
    """Short hash of how a binary is built, so a changed recipe never reuses a stale cache."""
    recipe = f"{component.version} {BUILD_TAGS} {_ldflags(component.group, component.version)}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:8]


def cached_path(component: Component) -> Path:
    return (cache_root() / "bin" / f"{component.group}-{component.version}-{recipe_id(component)}"
            / component.name)


def _reported_minor(path: Path, component: Component) -> str:
    try:
        out = subprocess.run(
            [str(path), *component.version_args], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return minor_of(out.stdout + out.stderr)


def candidates(component: Component) -> Iterable[tuple[str, Path]]:
    """Places to look, in precedence order, before building."""
    on_path = shutil.which(component.name)
    if on_path:
        yield "PATH", Path(on_path)
    user_dir = os.environ.get("THRESHER_BIN_DIR")
    if user_dir:
        yield "THRESHER_BIN_DIR", Path(user_dir) / component.name


def locate(component: Component, log: Callable[[str], None] = print) -> Path | None:
    """The binary to use without building, or None when a build is needed."""
    for origin, path in candidates(component):
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        found = _reported_minor(path, component)
        if found == component.minor:
            return path
        log(f"ignoring {component.name} from {origin} ({path}): version {found or 'unknown'}, "
            f"need {component.minor}")
    cached = cached_path(component)
    return cached if cached.is_file() else None


def ensure(names: Iterable[str], log: Callable[[str], None] = print) -> dict[str, Path]:
    """Paths of the named binaries, building whatever is missing (one build per group)."""
    wanted = [COMPONENTS[n] for n in names]
    paths: dict[str, Path] = {}
    missing: dict[str, list[Component]] = {}
    for component in wanted:
        path = locate(component, log)
        if path is None:
            missing.setdefault(component.group, []).append(component)
        else:
            paths[component.name] = path
    for group, components in missing.items():
        build_group(group, components, log)
        for component in components:
            paths[component.name] = cached_path(component)
    return paths


# --- building ---------------------------------------------------------------

def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    return env


# A cold build is minutes of silence per step: CI logs get a line this often, a terminal a
# live spinner with the elapsed time, so nobody mistakes a long compile for a hang.
PROGRESS_INTERVAL = 10.0


def _run(step: str, cmd: list[str], cwd: Path, log: Callable[[str], None],
         interval: float = PROGRESS_INTERVAL, tty: bool | None = None) -> str:
    log(f"  [{step}] {' '.join(cmd)}")
    start = time.monotonic()
    # Output to files, not pipes: `go` can write more than a pipe buffer while we only wait.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=_go_env(), stdout=out, stderr=err)
        _wait_with_progress(proc, step, start, log, interval,
                            sys.stderr.isatty() if tty is None else tty)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-25:])
        raise BuildError(f"build step '{step}' failed (exit {proc.returncode}) in {cwd}:\n{tail}")
    log(f"  [{step}] done in {time.monotonic() - start:.0f}s")
    return stdout


def _wait_with_progress(proc: subprocess.Popen, step: str, start: float, log: Callable[[str], None],
                        interval: float, tty: bool) -> None:
    """Wait for ``proc``: a rich spinner with the elapsed time on a terminal, otherwise a
    "still running" line every ``interval`` seconds (CI logs, make output piped to a file)."""
    if tty:
        from rich.console import Console

        with Console(stderr=True).status(f"{step}: 0s") as status:
            while proc.poll() is None:
                status.update(f"{step}: {time.monotonic() - start:.0f}s")
                time.sleep(0.5)
        return
    next_line = start + interval
    while True:
        try:
            proc.wait(timeout=max(0.0, next_line - time.monotonic()))
            return
        except subprocess.TimeoutExpired:
            log(f"  [{step}] still running, {time.monotonic() - start:.0f}s elapsed")
            next_line += interval


def staging_replaces(kubernetes_gomod: str, version: str) -> dict[str, str]:
    """Map each staging module k8s.io/kubernetes replaces locally to its ``v0.Y.Z`` tag."""
    staging_version = "v0" + version[version.index("."):]
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", kubernetes_gomod, re.MULTILINE)
    return {m: staging_version for m in modules}


def scratch_gomod(group: str, component_version: str, replaces: dict[str, str]) -> str:
    lines = [f"module local/thresher-{group}", "", "go 1.24.0", "", "godebug default=go1.24", ""]
    if replaces:
        lines.append("replace (")
        lines += [f"\t{mod} => {mod} {ver}" for mod, ver in sorted(replaces.items())]
        lines.append(")")
    return "\n".join(lines) + "\n"


def _ldflags(group: str, version: str) -> str:
    flags = ["-s", "-w"]
    if group == "kubernetes":
        major, minor = version.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
    elif group == "kwok":
        flags.append(f"-X sigs.k8s.io/kwok/pkg/consts.Version={version}")
    elif group == "helm":
        # Helm reports the Kubernetes version it was built against to charts' kubeVersion
        # checks (helm template); without these it claims 1.20.
        major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
        flags += [f"-X helm.sh/helm/v3/internal/version.version={version}",
                  f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
                  f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}"]
    return " ".join(flags)


def build_group(group: str, components: list[Component], log: Callable[[str], None] = print) -> None:
    """Build the named binaries of one group into the cache; raise BuildError on failure."""
    if shutil.which("go") is None:
        raise BuildError(
            "build step 'find go' failed: no Go toolchain on PATH. Install Go 1.24+ with access to the "
            "Go module proxy, or put prebuilt binaries in THRESHER_BIN_DIR."
        )
    version = components[0].version
    names = ", ".join(c.name for c in components)
    workdir = cache_root() / "build" / f"{group}-{version}"
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = cached_path(components[0]).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"building {names} {version} from the Go module proxy (once; cached in {out_dir})")
    start = time.monotonic()

    replaces: dict[str, str] = {}
    root_module = _root_module(components[0])
    if group == "kubernetes":
        info = json.loads(_run("download k8s.io/kubernetes", ["go", "mod", "download", "-json",
                                                               f"k8s.io/kubernetes@{version}"], workdir, log))
        replaces = staging_replaces(Path(info["GoMod"]).read_text(), version)
        log(f"  {len(replaces)} staging modules pinned at v0{version[version.index('.'):]}")
    (workdir / "go.mod").write_text(scratch_gomod(group, version, replaces))
    (workdir / "go.sum").touch()
    if group == "kubernetes":
        # Every command must name the version, or go resolves it @upgrade (a newer minor).
        targets = [f"{root_module}@{version}", *(f"{c.package}@{version}" for c in components)]
    else:
        targets = [f"{c.package}@{version}" for c in components]
    _run("resolve modules", ["go", "get", *targets], workdir, log)
    tmp_out = workdir / "out"
    tmp_out.mkdir(exist_ok=True)
    for component in components:
        _run(f"compile {component.name}",
             ["go", "build", "-trimpath", "-tags", BUILD_TAGS, "-ldflags", _ldflags(group, version),
              "-o", str(tmp_out / component.name), component.package], workdir, log)
        # Move into place only when complete, so an interrupted build is never cached.
        os.replace(tmp_out / component.name, cached_path(component))
    log(f"built {names} in {time.monotonic() - start:.0f}s")


def _root_module(component: Component) -> str:
    return {"kubernetes": "k8s.io/kubernetes"}.get(component.group, component.package)


if __name__ == "__main__":  # python -m thresher.devcluster.binaries [names...]
    try:
        for name, path in ensure(sys.argv[1:] or CONTROL_PLANE).items():
            print(f"{name}: {path}")
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
