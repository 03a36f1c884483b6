"""The demo's files (chart, example schedules, alert rules) come with the package: `pip install
thresher && thresher demo` works outside the source tree, and the images, built without
thresher/demo, still run every product command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from thresher.demo.assets import ASSETS, AssetError, asset

REPO = Path(__file__).resolve().parents[3]
# What a checkout holds that the wheel is built from (tests, docs and benchmarks are not needed).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "thresher", "charts", "manifests")


def _copy_sources(dest: Path, leave_out: tuple[str, ...] = ()) -> Path:
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *leave_out))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _wheel(src: Path, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("thresher-*.whl")
    return wheel


def _install(wheel: Path, target: Path) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The installed copy first, then the project venv's dependencies. Run with INSTALLED (python
    # -S): no site processing, so the venv's editable-install finder (a .pth hook) cannot serve a
    # module the wheel lacks from the checkout, as it would for thresher.demo.
    return {**os.environ, "PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}"}


INSTALLED = [sys.executable, "-S"]


def test_assets_prefer_the_installed_copy_then_the_checkout(tmp_path):
    installed, checkout = tmp_path / "site" / "thresher" / "demo", tmp_path / "repo"
    (checkout / "manifests" / "examples").mkdir(parents=True)
    assert asset("examples", installed, checkout) == checkout / "manifests" / "examples"
    (installed / "assets" / "manifests" / "examples").mkdir(parents=True)
    assert asset("examples", installed, checkout) == installed / "assets" / "manifests" / "examples"


def test_a_missing_asset_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(AssetError) as err:
        asset("chart", tmp_path / "pkg", tmp_path / "repo")
    assert "charts/thresher" in str(err.value) and "\n" not in str(err.value)


def test_the_wheel_carries_the_demo_files_and_the_demo_finds_them_installed(tmp_path):
    """Issue 12: `thresher demo` read charts/ and manifests/ from the source tree, so it failed
    from an installed wheel. Built in a temp dir, installed elsewhere, run from a third folder:
    every file the demo applies resolves inside the installed package."""
    wheel = _wheel(_copy_sources(tmp_path / "src"), tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    for relative in ASSETS.values():
        assert any(n.startswith(f"thresher/demo/assets/{relative}") for n in names), relative
    assert "thresher/demo/fakes/tmdb_server.py" in names
    env = _install(wheel, tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import thresher, json\n"
        "from thresher.demo.assets import ASSETS, asset\n"
        "from thresher.demo.loop import EXAMPLES, load_examples\n"
        "paths = {name: str(asset(name)) for name in ASSETS}\n"
        "chart = asset('chart')\n"
        "print(json.dumps({'package': thresher.__file__, 'paths': paths, 'examples': len(load_examples()),\n"
        "                  'chart': (chart / 'Chart.yaml').is_file() and any((chart / 'crds').glob('*.yaml'))}))\n"
    )
    proc = subprocess.run([*INSTALLED, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    got = json.loads(proc.stdout)
    site = str(tmp_path / "site")
    assert got["package"].startswith(site)
    assert all(p.startswith(site) for p in got["paths"].values()), got["paths"]
    assert got["examples"] == 5 and got["chart"]
    demo_help = subprocess.run([*INSTALLED, "-m", "thresher.demo", "--help"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=60)
    assert demo_help.returncode == 0 and "fake-tmdb" in demo_help.stdout


def test_a_wheel_built_like_the_images_has_no_demo_and_every_product_command_works(tmp_path):
    """The Dockerfile's context leaves thresher/demo out (.dockerignore); a wheel built from
    such a context carries no demo, and `thresher --help`, `thresher job tmdb --help` and the
    operator's command still import (nothing in the product needs the demo)."""
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip().startswith("thresher/")]
    assert "thresher/demo" in ignored and "thresher/devcluster" in ignored  # host-only (issue 16: devcluster)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):  # what the Dockerfile's builder stage copies
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "thresher", src / "thresher", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in ignored:
        shutil.rmtree(src / folder)
    wheel = _wheel(src, tmp_path / "dist")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("thresher/demo")]
    env = _install(wheel, tmp_path / "site")
    for args in (["--help"], ["job", "tmdb", "--help"], ["job", "drone", "--help"], ["operator", "run", "--help"]):
        proc = subprocess.run([*INSTALLED, "-m", "thresher.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
