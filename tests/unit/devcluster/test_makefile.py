"""What the Makefile's targets install, read from `make -n` (prints the recipes, runs nothing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.tools import REPO


def planned(target: str, venv) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make not found; install it: apt-get install -y make", pytrace=False)
    proc = subprocess.run([make, "-n", "-C", str(REPO), target, f"VENV={venv}"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_demo_never_installs_the_cuda_torch_wheel(tmp_path):
    """Issue 16: `make demo` installed the gpu extra (2.8 GB CUDA torch) that only the torch
    tests of `make test` need. On a fresh venv, demo installs the base extras only; test
    installs them and then the gpu extra."""
    demo = planned("demo", tmp_path / "venv")
    assert "pip install --quiet -e '.[operator,jobs,dev]'" in demo
    assert "[gpu]" not in demo
    test = planned("test", tmp_path / "venv")
    base, gpu = test.index("-e '.[operator,jobs,dev]'"), test.index("-e '.[gpu]'")
    assert base < gpu < test.index("THRESHER_REQUIRE_TORCH=1")


def test_an_installed_base_venv_is_reused_by_the_demo_and_completed_by_test(tmp_path):
    """The two stamps are independent: a venv with the base install is complete for the demo,
    and `make test` adds only the gpu extra to it."""
    venv = tmp_path / "venv"
    venv.mkdir()
    first = planned("venv", venv)
    stamp = next(line for line in first.splitlines() if "touch" in line).split("touch ")[-1]
    Path(stamp).touch()  # as the base install's last step would (VENV is absolute here)
    assert "pip install" not in planned("demo", venv)
    test = planned("test", venv)
    assert "-e '.[gpu]'" in test and "-e '.[operator,jobs,dev]'" not in test


def test_make_release_publishes_every_image_and_images_pushes_to_the_dev_registry(tmp_path):
    """Issue 16: `make release REGISTRY=... VERSION=...` runs the release entry point for every
    image (IMAGES narrows it); `make images` pushes to the dev registry instead of importing."""
    proc = subprocess.run([shutil.which("make") or "make", "-n", "-C", str(REPO), "release", f"VENV={tmp_path}",
                           "REGISTRY=ghcr.io/acme", "VERSION=1.2.3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ('thresher dev release --registry "ghcr.io/acme" --version "1.2.3" '
            "--image operator --image jobs --image jobs-gpu") in proc.stdout
    node_tools = planned("node-tools", tmp_path / "venv")
    assert all(pkg in node_tools for pkg in ("docker-registry", "apache2-utils", "skopeo"))
    assert "thresher dev images --push-to" in planned("images", tmp_path / "venv")
