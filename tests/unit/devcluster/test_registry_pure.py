"""The dev registry's and `make release`'s pure parts: configs, Secrets, pinned chart values."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from thresher.devcluster import images
from thresher.devcluster.registry import RegistryError, auth_config, by_digest, hosts_toml, pull_secret, registry_config
from thresher.devcluster.release import (CHART_DIR, IMAGE_VALUES, ReleaseError, check_request, parse_helm_push,
                                         pin_values)
from thresher.operator.builders import JobImages, pod_spec
from thresher.operator.cli import pull_secret_names

DIGEST = "sha256:" + "ab" * 32


def test_registry_config_serves_tls_with_htpasswd_on_the_given_address(tmp_path):
    cfg = registry_config("127.0.0.1:5123", tmp_path / "data", tmp_path / "r.crt", tmp_path / "r.key",
                          tmp_path / "htpasswd", "s")
    assert cfg["http"]["addr"] == "127.0.0.1:5123"
    assert cfg["http"]["tls"] == {"certificate": str(tmp_path / "r.crt"), "key": str(tmp_path / "r.key")}
    assert cfg["auth"]["htpasswd"]["path"] == str(tmp_path / "htpasswd")
    assert cfg["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")


def test_containerd_hosts_trusts_the_ca_and_holds_no_credentials():
    hosts = tomllib.loads(hosts_toml("127.0.0.1:5123", Path("/s/pki/ca.crt")))
    assert hosts == {"server": "https://127.0.0.1:5123", "ca": "/s/pki/ca.crt",  # the fallback host trusts it too
                     "host": {"https://127.0.0.1:5123": {"capabilities": ["pull", "resolve"], "ca": "/s/pki/ca.crt"}}}


def test_pull_secret_is_a_dockerconfigjson_for_that_registry_only():
    secret = pull_secret("reg", "ns", "127.0.0.1:5123", "u", "p w")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert list(config["auths"]) == ["127.0.0.1:5123"]
    assert base64.b64decode(config["auths"]["127.0.0.1:5123"]["auth"]) == b"u:p w"
    assert auth_config("h:1", "u", "p")["auths"]["h:1"]["password"] == "p"


def test_pods_reference_images_by_digest_and_a_bad_digest_is_refused():
    assert by_digest("127.0.0.1:5123/thresher/jobs", DIGEST) == f"127.0.0.1:5123/thresher/jobs@{DIGEST}"
    with pytest.raises(RegistryError, match="not a sha256 digest"):
        by_digest("r/thresher/jobs", "latest")


def _pushed(target: str) -> images.Pushed:
    return images.Pushed(target, f"reg.example:5000/{images.REPOSITORIES[target]}", "1.2.3", DIGEST, 1.0)


def test_pinned_values_name_each_pushed_image_and_keep_every_comment():
    text = (CHART_DIR / "values.yaml").read_text()
    pushed = {t: _pushed(t) for t in ("operator", "jobs", "jobs-gpu")}
    out = pin_values(text, pushed)
    values, before = yaml.safe_load(out), yaml.safe_load(text)
    for path, target in IMAGE_VALUES.items():
        block = values
        for key in path:
            block = block[key]
        assert block["repository"] == pushed[target].repository and block["digest"] == DIGEST
        assert block["tag"] == "1.2.3"
    assert [line for line in out.splitlines() if line.strip().startswith("#")] == \
        [line for line in text.splitlines() if line.strip().startswith("#")]
    # Nothing else changed.
    for key in ("image", "jobImages"):
        values.pop(key), before.pop(key)
    assert values == before


def test_pinned_values_leave_an_image_that_was_not_pushed_alone():
    text = (CHART_DIR / "values.yaml").read_text()
    values = yaml.safe_load(pin_values(text, {"jobs": _pushed("jobs")}))
    assert values["jobImages"]["gpu"] == yaml.safe_load(text)["jobImages"]["gpu"]
    assert values["image"]["digest"] == ""


def test_helm_push_output_gives_reference_and_digest():
    out = f"Pushed: 127.0.0.1:5123/charts/thresher:0.1.0\nDigest: {DIGEST}\n"
    assert parse_helm_push(out) == ("127.0.0.1:5123/charts/thresher:0.1.0", DIGEST)
    with pytest.raises(ReleaseError, match="no reference"):
        parse_helm_push("Error: unauthorized")


@pytest.mark.parametrize("registry, version, targets, message", [
    ("", "1.0.0", ["jobs"], "REGISTRY must be"),
    ("https://ghcr.io/acme", "1.0.0", ["jobs"], "REGISTRY must be"),
    ("ghcr.io/acme", "v1", ["jobs"], "VERSION must be SemVer"),
    ("ghcr.io/acme", "1.0.0", ["jobz"], "unknown image"),
])
def test_a_bad_release_request_is_one_clear_line(registry, version, targets, message):
    with pytest.raises(ReleaseError, match=message):
        check_request(registry, version, targets)
    check_request("127.0.0.1:5000", "1.0.0-rc.1", ["jobs", "operator", "jobs-gpu"])


def test_job_pods_pull_with_the_configured_secrets():
    from thresher.api.schedule import CollectionScheduleSpec

    spec = CollectionScheduleSpec.model_validate({"schedule": "@daily", "job": {"container": {"image": "x"}}})
    assert "imagePullSecrets" not in pod_spec(spec, JobImages())
    pod = pod_spec(spec, JobImages(pull_secrets=pull_secret_names(" reg, other ,,")))
    assert pod["imagePullSecrets"] == [{"name": "reg"}, {"name": "other"}]


def test_thresher_dev_release_with_a_bad_version_says_so_in_one_line():
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "thresher.cli", "dev", "release", "--registry", "ghcr.io/acme",
                           "--version", "v1"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: VERSION must be SemVer like 1.2.3 (helm needs it for the "
                                                "chart), got 'v1'"]


def test_a_build_keeps_the_newest_archives_of_other_checkouts(tmp_path):
    """Issue 16 (found here): two worktrees sharing ~/.cache/thresher each deleted every other
    archive of a target after their build, so one's image vanished when the other built."""
    import os

    paths = []
    for i in range(5):
        path = tmp_path / f"thresher-jobs-{i}.oci.tar"
        path.write_text("x")
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    current = paths[0]  # the oldest mtime, but the one just built: never stale
    assert images.stale_archives(paths, current, keep=3) == [paths[2], paths[1]]
    assert images.stale_archives([current], current) == []


def test_the_cuda_base_is_passed_fully_qualified_because_buildah_refuses_short_names(tmp_path):
    """`make release` with jobs-gpu failed at once: buildah does not resolve the Dockerfile's
    short name nvidia/cuda:... (Debian's registries.conf lists no search registries). The
    build passes the Dockerfile's own default, qualified as Docker would."""
    from thresher.devcluster.images import ImageError, build_args, dockerfile_arg, qualified

    assert qualified("nvidia/cuda:12.6.3-runtime-ubuntu24.04") == "docker.io/nvidia/cuda:12.6.3-runtime-ubuntu24.04"
    assert qualified("debian:bookworm") == "docker.io/library/debian:bookworm"
    for kept in ("ghcr.io/a/b:1", "localhost/thresher-base:bookworm", "127.0.0.1:5000/x/y@sha256:ab"):
        assert qualified(kept) == kept
    default = dockerfile_arg("GPU_BASE_IMAGE")
    assert default.startswith("nvidia/cuda:")  # the Dockerfile keeps Docker's short form
    assert build_args("jobs-gpu", "localhost/b") == ["--build-arg", "BASE_IMAGE=localhost/b",
                                                     "--build-arg", f"GPU_BASE_IMAGE=docker.io/{default}"]
    assert build_args("jobs", "localhost/b") == ["--build-arg", "BASE_IMAGE=localhost/b"]
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ImageError, match="no ARG GPU_BASE_IMAGE"):
        dockerfile_arg("GPU_BASE_IMAGE", tmp_path / "Dockerfile")
