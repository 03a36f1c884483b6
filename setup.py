"""Build hooks (everything else is in pyproject.toml): the files the demo applies (the Helm
chart, the example schedules, the alert rules) become package data of ``thresher.demo`` in the
wheel, copied from where the repository keeps them, so there is no second copy in git. The list
is ``ASSETS`` in ``thresher/demo/assets.py``, the same one the demo reads at run time. Image
builds leave ``thresher/demo`` out of their context (.dockerignore), and then nothing is copied.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
ASSETS_MODULE = HERE / "thresher" / "demo" / "assets.py"


def _assets() -> dict[str, str]:
    if not ASSETS_MODULE.exists():  # an image build: no demo, no assets
        return {}
    spec = importlib.util.spec_from_file_location("_thresher_demo_assets", ASSETS_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ASSETS


def _files(relative: str) -> list[Path]:
    source = HERE / relative
    if not source.exists():
        raise SystemExit(f"error: the demo asset {relative} is missing from the source tree")
    return [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())


class BuildPyWithDemoAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout (thresher/demo/assets.py)
        target = Path(self.build_lib) / "thresher" / "demo" / "assets"
        for relative in _assets().values():
            for path in _files(relative):
                out = target / path.relative_to(HERE)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)


class SdistWithDemoAssets(sdist):
    def add_defaults(self) -> None:
        super().add_defaults()
        for relative in _assets().values():
            self.filelist.extend(str(p.relative_to(HERE)) for p in _files(relative))


setup(cmdclass={"build_py": BuildPyWithDemoAssets, "sdist": SdistWithDemoAssets})
