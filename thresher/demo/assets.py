"""The files the demo applies, read from the one place each is kept in the repository: the Helm
chart, the example schedules and the alert rules.

Nothing is copied in git. A wheel carries them as package data under ``thresher/demo/assets/``
(same relative paths), copied there at build time by ``setup.py`` from this module's
``ASSETS``; so ``pip install thresher && thresher demo`` works outside the source tree. A source
checkout (editable install, ``PYTHONPATH``) reads them where they are kept. Standard library
only: ``setup.py`` loads this file before any dependency is installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# name -> path in the repository (a folder or a file), and under assets/ in the wheel
ASSETS = {
    "chart": "charts/thresher",
    "examples": "manifests/examples",
    "rules": "manifests/monitoring/thresher-rules.yaml",
}
PACKAGED = "assets"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the repository, when run from a checkout


class AssetError(RuntimeError):
    """A file the demo needs is neither installed nor in a source checkout."""


def asset(name: str, packaged: Path | None = None, source_root: Path | None = None) -> Path:
    """Where ``name`` is: the installed package data first, else the source checkout."""
    relative = ASSETS[name]
    installed = (packaged or Path(str(resources.files("thresher.demo")))) / PACKAGED / relative
    if installed.exists():
        return installed
    source = (source_root or SOURCE_ROOT) / relative
    if source.exists():
        return source
    raise AssetError(f"the demo's {name} ({relative}) is missing: not in {installed.parent} (installed "
                     f"package) nor in a source checkout; reinstall thresher or run from the repository")
