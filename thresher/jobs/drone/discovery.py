"""Finding inputs and grouping them into items (an image, a multispectral capture, a video).

``scan`` is the thin walk over the file system; ``group`` is pure and decides what
an item is. Band-per-file TIFFs are grouped into captures by their names:

* MicaSense RedEdge: ``IMG_0001_1.tif`` .. ``_5``: 1 Blue, 2 Green, 3 Red, 4 NIR, 5 RedEdge;
* DJI P4 Multispectral: ``DJI_0011.TIF`` .. ``DJI_0015.TIF`` (capture ``DJI_001``, last digit the band):
  1 Blue, 2 Green, 3 Red, 4 RedEdge, 5 NIR. ``DJI_0010.JPG`` (band 0) is the RGB photo: an image of its own.

Only TIFFs are grouped, so ordinary ``DJI_0123.JPG`` photos stay plain RGB images.
An item's fingerprint covers every member's path, size and mtime_ns: a new, changed
or newly arrived band file changes it, and the item is processed again.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from thresher.api.drone import VIDEO_EXTENSIONS

MICASENSE = re.compile(r"^(?P<cap>(?:.*/)?IMG_\d{4})_(?P<band>\d{1,2})\.tiff?$", re.IGNORECASE)
DJI_MS = re.compile(r"^(?P<cap>(?:.*/)?DJI_\d{3})(?P<band>[1-5])\.tiff?$", re.IGNORECASE)
MICASENSE_BANDS = {"1": "B", "2": "G", "3": "R", "4": "N", "5": "RE"}
DJI_BANDS = {"1": "B", "2": "G", "3": "R", "4": "RE", "5": "N"}
REQUIRED_BANDS = ("B", "G", "R", "N", "RE")


@dataclass(frozen=True)
class FileInfo:
    rel: str  # POSIX path relative to the input root
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Item:
    """A unit of work: processed, recorded and retried as one."""

    key: str  # relative path of the image/video, or the capture's stem for band groups
    kind: str  # "image" | "bands" | "video"
    members: tuple[tuple[str, str], ...]  # (band or role, relative path)
    fingerprint: str
    ignored: tuple[str, ...] = ()  # band files of the capture we do not use (e.g. MicaSense Altum thermal)

    def missing_bands(self) -> list[str]:
        have = {band for band, _ in self.members}
        return [band for band in REQUIRED_BANDS if band not in have]


def fingerprint(files: list[FileInfo]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        digest.update(f"{f.rel}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def extension(rel: str) -> str:
    return rel.rsplit(".", 1)[-1].lower() if "." in rel.rsplit("/", 1)[-1] else ""


def group(files: list[FileInfo]) -> list[Item]:
    """Files -> items, sorted by key. Pure: no file-system access."""
    captures: dict[str, dict[str, FileInfo]] = {}
    capture_bands: dict[str, dict[str, str]] = {}
    ignored: dict[str, list[str]] = {}
    items: list[Item] = []
    for f in files:
        match = MICASENSE.match(f.rel) or DJI_MS.match(f.rel)
        if match:
            table = MICASENSE_BANDS if match.re is MICASENSE else DJI_BANDS
            cap = match["cap"]
            captures.setdefault(cap, {})[f.rel] = f
            band = table.get(str(int(match["band"])))
            if band is None:
                ignored.setdefault(cap, []).append(f.rel)
            else:
                capture_bands.setdefault(cap, {})[band] = f.rel
            continue
        kind = "video" if extension(f.rel) in VIDEO_EXTENSIONS else "image"
        items.append(Item(f.rel, kind, (("file", f.rel),), fingerprint([f])))
    for cap, members in captures.items():
        bands = capture_bands.get(cap, {})
        ordered = tuple((band, bands[band]) for band in REQUIRED_BANDS if band in bands)
        items.append(Item(cap, "bands", ordered, fingerprint(list(members.values())),
                          tuple(sorted(ignored.get(cap, ())))))
    return sorted(items, key=lambda item: item.key)


def scan(root: Path, extensions: frozenset[str], recursive: bool = True,
         settle_before_ns: int | None = None, unsettled: list[str] | None = None) -> list[FileInfo]:
    """Files under ``root`` with a wanted extension. Hidden files (``.name``, our temp files) are skipped;
    with ``settle_before_ns`` files modified after it are left for later (still being written)."""
    found: list[FileInfo] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # vanished or unreadable folder: its files are simply not seen this time
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):  # no symlink loops
                    if recursive:
                        pending.append(Path(entry.path))
                    continue
                if extension(entry.name) not in extensions:
                    continue
                st = entry.stat()
            except OSError:
                continue
            if settle_before_ns is not None and st.st_mtime_ns > settle_before_ns:
                if unsettled is not None:
                    unsettled.append(entry.path)
                continue
            rel = Path(entry.path).relative_to(root).as_posix()
            found.append(FileInfo(rel, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: f.rel)
