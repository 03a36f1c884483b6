"""Publish Thresher: every image and the chart, pushed to a registry the user names.

``make release REGISTRY=r VERSION=v`` (``thresher dev release``) is the one command a maintainer
runs: it builds the images with buildah (``images.py``, cached by content), pushes each with
skopeo to ``r/thresher/<target>:v``, packages the chart with ``--version v --app-version v`` and
values that pin those images by digest, pushes it with ``helm push`` to ``oci://r/charts``, and
prints every reference and digest. Users then install exactly what was tested:

    helm install thresher oci://r/charts/thresher --version v

Log in beforehand (``skopeo login r`` or ``buildah login r``, and ``helm registry login r``);
``authfile``/``cert_dir``/``ca_file`` point at other credentials or a private CA (the dev
registry passes its own). The demo and the real-node tests publish to the dev registry through
this same function.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from thresher.devcluster import images
from thresher.devcluster.process import Log
from thresher.devcluster.registry import Registry

CHART_DIR = images.REPO / "charts" / "thresher"
CHART_NAME = "thresher"
DEFAULT_TARGETS = ("operator", "jobs", "jobs-gpu")
# values.yaml blocks that name an image, by their YAML path, and the image that fills each.
IMAGE_VALUES = {("image",): "operator", ("jobImages", "cpu"): "jobs", ("jobImages", "gpu"): "jobs-gpu"}
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$")


class ReleaseError(RuntimeError):
    """A release step failed or was asked wrongly; the message names which."""


@dataclass
class Published:
    registry: str
    version: str
    images: dict[str, images.Pushed] = field(default_factory=dict)
    chart: str = ""  # oci://r/charts/thresher
    chart_digest: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"registry": self.registry, "version": self.version,
                "images": {t: {"reference": p.reference, "tag": f"{p.repository}:{p.tag}", "digest": p.digest}
                           for t, p in self.images.items()},
                "chart": {"reference": self.chart, "version": self.version, "digest": self.chart_digest},
                "install": f"helm install thresher {self.chart} --version {self.version}",
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()}}


# --- pure parts ---------------------------------------------------------------------------

def check_request(registry: str, version: str, targets: Iterable[str]) -> None:
    """A clear one-line error for a bad REGISTRY, VERSION or image list."""
    if not registry or "://" in registry or not _REGISTRY.match(registry):
        raise ReleaseError(f"REGISTRY must be host[:port][/path], e.g. ghcr.io/acme (got {registry!r})")
    if not _SEMVER.match(version or ""):
        raise ReleaseError(f"VERSION must be SemVer like 1.2.3 (helm needs it for the chart), got {version!r}")
    unknown = sorted(set(targets) - set(images.REPOSITORIES))
    if unknown:
        raise ReleaseError(f"unknown image(s) {', '.join(unknown)}: {', '.join(images.REPOSITORIES)}")


def pin_values(text: str, pushed: dict[str, images.Pushed]) -> str:
    """values.yaml with repository, tag and digest of each pushed image filled in, every
    comment and every other line kept (helm reads the packaged values.yaml as the defaults)."""
    out, path = [], []
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):(.*)$", line)
        if match and not stripped.startswith("#"):
            depth = len(match.group(1)) // 2
            path = path[:depth]
            key, rest = match.group(2), match.group(3).strip()
            target = IMAGE_VALUES.get(tuple(path))
            if target in pushed and key in ("repository", "tag", "digest"):
                p = pushed[target]
                value = {"repository": p.repository, "tag": p.tag, "digest": p.digest}[key]
                line = f"{match.group(1)}{key}: {json.dumps(value)}"
            elif rest == "" or rest.startswith("#"):
                path.append(key)  # a mapping opens: deeper keys are under it
        out.append(line)
    return "\n".join(out) + "\n"


def parse_helm_push(output: str) -> tuple[str, str]:
    """``helm push`` prints ``Pushed: host/charts/thresher:1.2.3`` and ``Digest: sha256:...``."""
    pushed = re.search(r"^Pushed:\s*(\S+)", output, re.MULTILINE)
    digest = re.search(r"^Digest:\s*(sha256:[0-9a-f]{64})", output, re.MULTILINE)
    if not (pushed and digest):
        raise ReleaseError(f"helm push printed no reference and digest: {output.strip()[-500:]}")
    return pushed.group(1), digest.group(1)


# --- the steps ----------------------------------------------------------------------------

def helm_command(helm: Path, *args: str, ca_file: Path | None = None,
                 registry_config: Path | None = None) -> list[str]:
    return [str(helm), *args, *(["--ca-file", str(ca_file)] if ca_file else []),
            *(["--registry-config", str(registry_config)] if registry_config else [])]


def _helm(cmd: list[str], step: str, input: str | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=300)
    if proc.returncode != 0:
        raise ReleaseError(f"{step} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc.stdout + proc.stderr


def package_chart(version: str, pushed: dict[str, images.Pushed], helm: Path, out_dir: Path) -> Path:
    """``helm package`` of a copy of charts/thresher whose values pin the pushed images."""
    with tempfile.TemporaryDirectory(prefix="thresher-chart-") as tmp:
        chart = Path(tmp) / CHART_NAME
        shutil.copytree(CHART_DIR, chart)
        values = chart / "values.yaml"
        values.write_text(pin_values(values.read_text(), pushed))
        _helm([str(helm), "package", str(chart), "--version", version, "--app-version", version,
               "--destination", str(out_dir)], "helm package")
    return out_dir / f"{CHART_NAME}-{version}.tgz"


def push_chart(package: Path, registry: str, helm: Path, *, ca_file: Path | None = None,
               registry_config: Path | None = None) -> tuple[str, str]:
    """``helm push`` to ``oci://registry/charts``: (``oci://.../thresher``, digest)."""
    out = _helm(helm_command(helm, "push", str(package), f"oci://{registry}/charts", ca_file=ca_file,
                             registry_config=registry_config), "helm push")
    ref, digest = parse_helm_push(out)
    return "oci://" + ref.rsplit(":", 1)[0], digest


def release(registry: str, version: str, targets: Iterable[str] = DEFAULT_TARGETS, log: Log = print, *,
            helm: Path, authfile: Path | None = None, cert_dir: Path | None = None,
            ca_file: Path | None = None, registry_config: Path | None = None,
            archives: dict[str, Path] | None = None) -> Published:
    """Build (unless ``archives`` gives them), push every image, package and push the chart."""
    targets = tuple(targets)
    check_request(registry, version, targets)
    result = Published(registry.rstrip("/"), version)
    archives = dict(archives or {})
    start = time.monotonic()
    for target in targets:
        if target not in archives:
            archives[target] = images.build_target(target, log)
    result.seconds["build"] = time.monotonic() - start
    for target in targets:
        result.images[target] = images.push(target, archives[target], result.registry, version, log,
                                            authfile=authfile, cert_dir=cert_dir)
        result.seconds[f"push_{target}"] = result.images[target].seconds
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thresher-release-") as tmp:
        package = package_chart(version, result.images, helm, Path(tmp))
        result.chart, result.chart_digest = push_chart(package, result.registry, helm, ca_file=ca_file,
                                                       registry_config=registry_config)
    result.seconds["chart"] = time.monotonic() - start
    log(f"pushed chart {result.chart}:{version} ({result.chart_digest})")
    return result


# --- the dev cluster's registry --------------------------------------------------------------

def chart_version() -> str:
    return str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"])


def publish_to_dev_registry(registry: Registry, helm: Path, log: Log = print,
                            targets: Iterable[str] = ("jobs", "operator")) -> Published:
    """What the demo and the real-node tests install from: ``release`` into the dev registry
    (cached archives, built once), with its credentials and its CA."""
    return release(registry.address, chart_version(), targets, log, helm=helm, authfile=registry.auth_file,
                   cert_dir=registry.cert_dir, ca_file=registry.ca_file,
                   registry_config=registry.helm_login(helm))


def oci_install_args(published: Published, registry: Registry) -> list[str]:
    """The chart reference and flags of ``helm install/upgrade RELEASE ...`` from the dev registry."""
    return [published.chart, "--version", published.version, "--ca-file", str(registry.ca_file),
            "--registry-config", str(registry.dir / "helm-registry.json")]
