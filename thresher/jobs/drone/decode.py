"""Reading drone inputs into raw band planes: the thin I/O layer.

Everything here turns a file into ``Decoded`` (raw integer or float planes named
B, G, R, N, RE plus metadata) or raises ``BadInput`` with a reason a person can act on.
Scaling to reflectance and all maths happen in the backends.

Input scaling: integer planes are divided by their dtype's maximum DN (255 for
8-bit, 65535 for 16-bit); float planes are taken as reflectance already. A pixel
at the maximum DN in any band is saturated and excluded from statistics.
"""

from __future__ import annotations

import ctypes
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from thresher.jobs.drone.discovery import Item

JPEG_EXTENSIONS = frozenset({"jpg", "jpeg"})
TIFF_EXTENSIONS = frozenset({"tif", "tiff"})

# Documented order of a single multi-band TIFF with 4 or 5 bands (MicaSense band order).
MULTIBAND_ORDER = ("B", "G", "R", "N", "RE")
GPS_IFD = 0x8825


class BadInput(Exception):
    """An input that cannot be processed; the message is the reason shown in the summary."""


@dataclass
class Decoded:
    """One image (or video frame) as raw band planes plus what we know about it."""

    planes: dict[str, np.ndarray]  # band name -> 2-D array (uint8/uint16: DN; float: reflectance)
    max_dn: float | None  # DN that means saturated and the reflectance scale; None for float input
    nodata: np.ndarray | None = None  # True where the pixel has no data (alpha == 0)
    gps: dict[str, float] | None = None
    frame_time: float | None = None
    jpeg_bytes: bytes | None = None  # set instead of planes when the backend decodes JPEGs itself
    width: int = 0
    height: int = 0
    warnings: list[str] = field(default_factory=list)


# --- metadata ------------------------------------------------------------------

def _rational(value: Any) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return float(Fraction(int(num), int(den))) if den else float("nan")
    return float(value)


def gps_to_decimal(gps: dict[int, Any]) -> dict[str, float] | None:
    """EXIF GPS IFD (tag ids 1..6) -> {'lat', 'lon'[, 'alt']} in decimal degrees / metres; None if absent."""
    try:
        lat_dms, lon_dms = gps[2], gps[4]
        lat = sum(_rational(v) / 60 ** i for i, v in enumerate(lat_dms))
        lon = sum(_rational(v) / 60 ** i for i, v in enumerate(lon_dms))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(1, "N")).strip("\x00").upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).strip("\x00").upper().startswith("W"):
        lon = -lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    out = {"lat": round(lat, 7), "lon": round(lon, 7)}
    if 6 in gps:
        try:
            alt = _rational(gps[6])
            ref = gps.get(5, 0)
            below = ref in (1, b"\x01") or (isinstance(ref, bytes) and ref[:1] == b"\x01")
            out["alt"] = round(-alt if below else alt, 3)
        except (TypeError, ValueError, ZeroDivisionError):
            pass
    return out


def read_gps(image: Any) -> dict[str, float] | None:
    """GPS of an opened PIL image (reads tags only, decodes no pixels)."""
    try:
        ifd = image.getexif().get_ifd(GPS_IFD)
    except Exception:  # noqa: BLE001 - broken EXIF must not fail an otherwise good image
        return None
    return gps_to_decimal(dict(ifd)) if ifd else None


# --- files ------------------------------------------------------------------------

def read_file(path: Path) -> bytes:
    """Read a whole input; every OS-level failure becomes a BadInput with the reason."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except IsADirectoryError:
        raise BadInput("unreadable: is a directory") from None
    except OSError as err:
        raise BadInput(f"unreadable: {err.strerror or err}") from None
    if not data:
        raise BadInput("empty file (0 bytes)")
    return data


def _max_dn(dtype: np.dtype) -> float | None:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return None


def _planes_from_rgb_array(arr: np.ndarray) -> dict[str, np.ndarray]:
    return {"R": arr[..., 0], "G": arr[..., 1], "B": arr[..., 2]}


# --- Pillow's pixels without a copy ---------------------------------------------------

# Pillow keeps 8-bit RGB as 4 bytes a pixel (R, G, B, pad) in blocks of 16 MiB by default, and
# np.asarray(image) packs that into a new H x W x 3 array: for a 12 MP photo a 36 MB copy and ~9,000
# page faults, about a third of the time the decode itself takes. With one block per image (up to
# PILLOW_BLOCK_SIZE) Pillow >= 11.2 exports its buffer through the Arrow C data interface, and the
# pixels are read where the decoder wrote them (fused.py de-interleaves R, G, B from the 4-byte
# pixels). Larger images, older Pillow or an export that fails fall back to np.asarray.
PILLOW_BLOCK_SIZE = 256 << 20


class _ArrowArray(ctypes.Structure):
    """``struct ArrowArray`` of the Arrow C data interface (a stable ABI)."""


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))), ("dictionary", ctypes.POINTER(_ArrowArray)),
    ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p),
]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Borrowed:
    """An array interface over Pillow's exported buffer that keeps the export (and so the buffer) alive:
    the capsule's destructor releases it when the last array viewing it goes."""

    def __init__(self, address: int, shape: tuple[int, ...], capsule: Any):
        self.__array_interface__ = {"data": (address, True), "shape": shape, "typestr": "|u1", "version": 3}
        self._capsule = capsule


def configure_pillow(core: Any) -> None:
    """One block per image up to PILLOW_BLOCK_SIZE, so that its buffer can be exported (idempotent)."""
    if hasattr(core, "set_block_size") and core.get_block_size() < PILLOW_BLOCK_SIZE:
        core.set_block_size(PILLOW_BLOCK_SIZE)


def pillow_pixels(image: Any) -> np.ndarray:
    """H x W x C uint8 pixels of a loaded 8-bit RGB/RGBA Pillow image: H x W x 4 viewing Pillow's own
    buffer (read-only) when it can be exported, else np.asarray's packed copy."""
    if image.mode in ("RGB", "RGBA") and hasattr(image, "__arrow_c_array__"):
        try:
            _, capsule = image.__arrow_c_array__()
            array = _ArrowArray.from_address(_capsule_pointer(capsule, b"arrow_array"))
            values = array.children[0].contents if array.n_children == 1 else None
            w, h = image.size
            if values is not None and values.n_buffers == 2 and values.length == 4 * w * h and array.offset == 0:
                address = values.buffers[1] + values.offset
                return np.asarray(_Borrowed(address, (h, w, 4), capsule))
        except (ValueError, TypeError, AttributeError):  # e.g. "rows are not contiguous": more than one block
            pass
    return np.asarray(image)


def decode_pil(data: bytes, name: str) -> Decoded:
    """JPEG/PNG (and TIFFs tifffile cannot read) through Pillow."""
    from PIL import Image, UnidentifiedImageError

    configure_pillow(Image.core)
    try:
        with Image.open(io.BytesIO(data)) as image:
            gps = read_gps(image)
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "L", "P", "1", "I", "F", "CMYK", "LA"):
                raise BadInput(f"not an RGB image (mode {mode}, {len(image.getbands())} band(s))")
            nodata = None
            image.load()
            if mode in ("RGBA", "PA"):
                arr = pillow_pixels(image if mode == "RGBA" else image.convert("RGBA"))
                nodata = arr[..., 3] == 0
            else:
                arr = pillow_pixels(image if mode == "RGB" else image.convert("RGB"))
    except BadInput:
        raise
    except UnidentifiedImageError:
        raise BadInput(f"cannot decode {name}: not a recognised image format") from None
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad input, reported with its text
        raise BadInput(f"cannot decode {name}: {err}") from None
    h, w = arr.shape[:2]
    return Decoded(_planes_from_rgb_array(arr), _max_dn(arr.dtype), nodata, gps, width=w, height=h)


def jpeg_header(data: bytes, name: str) -> Decoded:
    """For backends that decode JPEGs themselves (nvJPEG): size and GPS only, no pixels."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG" or image.mode != "RGB":
                raise BadInput(f"not an RGB JPEG ({image.format} {image.mode})")
            gps = read_gps(image)
            w, h = image.size
    except BadInput:
        raise
    except Exception as err:  # noqa: BLE001
        raise BadInput(f"cannot decode {name}: {err}") from None
    return Decoded({}, 255.0, None, gps, jpeg_bytes=data, width=w, height=h)


def _tiff_array(data: bytes, name: str) -> tuple[np.ndarray, str | None]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            photometric = getattr(page.photometric, "name", str(page.photometric))
            arr = page.asarray()
    except Exception as err:  # noqa: BLE001
        raise BadInput(f"cannot decode {name}: {err}") from None
    return arr, photometric


def _gps_from_tiff_bytes(data: bytes) -> dict[str, float] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return read_gps(image)
    except Exception:  # noqa: BLE001 - metadata is optional
        return None


def split_multiband(arr: np.ndarray, photometric: str | None, name: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """A decoded TIFF array -> named planes. 3 bands: R,G,B; RGB+alpha: R,G,B + no-data from alpha;
    4 bands (not RGB): B,G,R,N; 5 bands: B,G,R,N,RE (MicaSense order). Bands-last or bands-first."""
    if arr.ndim == 2:
        raise BadInput(f"wrong band count in {name}: 1 band (single-band files need MicaSense or DJI naming)")
    if arr.ndim != 3:
        raise BadInput(f"wrong band count in {name}: array of {arr.ndim} dimensions")
    if arr.shape[-1] <= 16:
        bands_last = arr
    elif arr.shape[0] <= 16:
        bands_last = np.moveaxis(arr, 0, -1)
    else:
        raise BadInput(f"wrong band count in {name}: shape {arr.shape}")
    count = bands_last.shape[-1]
    is_rgb = (photometric or "").upper() == "RGB"
    if count == 3 or (is_rgb and count == 4):
        nodata = bands_last[..., 3] == 0 if count == 4 else None
        return _planes_from_rgb_array(bands_last), nodata
    if count in (4, 5):
        return {band: bands_last[..., i] for i, band in enumerate(MULTIBAND_ORDER[:count])}, None
    raise BadInput(f"wrong band count in {name}: {count} bands (expected 3, 4 or 5)")


def decode_tiff(data: bytes, name: str) -> Decoded:
    arr, photometric = _tiff_array(data, name)
    planes, nodata = split_multiband(arr, photometric, name)
    h, w = next(iter(planes.values())).shape
    return Decoded(planes, _max_dn(arr.dtype), nodata, _gps_from_tiff_bytes(data), width=w, height=h)


def decode_band_files(members: list[tuple[str, Path]], name: str) -> Decoded:
    """A multispectral capture: one single-band TIFF per band, all of one size and dtype."""
    planes: dict[str, np.ndarray] = {}
    gps = None
    dtype = None
    for band, path in members:
        data = read_file(path)
        arr, _ = _tiff_array(data, f"{name} band {band}")
        if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
            arr = np.squeeze(arr)  # (1, H, W) or (H, W, 1): still one band
        if arr.ndim != 2:
            raise BadInput(f"wrong band count in {name} band {band}: expected one band, got shape {arr.shape}")
        if dtype is not None and arr.dtype != dtype:
            raise BadInput(f"mismatched band types in {name}: {dtype} and {arr.dtype} ({band})")
        dtype = arr.dtype
        if planes:
            first = next(iter(planes.values())).shape
            if arr.shape != first:
                raise BadInput(f"mismatched band sizes in {name}: {first[1]}x{first[0]} and "
                               f"{arr.shape[1]}x{arr.shape[0]} ({band})")
        planes[band] = arr
        if gps is None:
            gps = _gps_from_tiff_bytes(data)
    h, w = next(iter(planes.values())).shape
    return Decoded(planes, _max_dn(dtype), None, gps, width=w, height=h)


def decode_image(path: Path, name: str, ext: str, backend_decodes_jpeg: bool = False) -> Decoded:
    data = read_file(path)
    if ext in TIFF_EXTENSIONS:
        try:
            return decode_tiff(data, name)
        except BadInput as err:
            # tifffile lacks some codecs (e.g. JPEG-in-TIFF without imagecodecs); Pillow may have them.
            if "cannot decode" not in str(err):
                raise
            return decode_pil(data, name)
    if ext in JPEG_EXTENSIONS and backend_decodes_jpeg:
        return jpeg_header(data, name)
    return decode_pil(data, name)


def iter_video_frames(path: Path, name: str, interval: float, max_frames: int) -> Iterator[Decoded]:
    """Frames every ``interval`` seconds of video time, as RGB planes with ``frame_time`` set.

    A stream that breaks after some frames yields those and a warning on the last frame;
    one that yields nothing raises BadInput.
    """
    import av

    if not os.access(path, os.R_OK) or path.is_dir():
        read_file(path)  # raises the precise reason
    if path.stat().st_size == 0:
        raise BadInput("empty file (0 bytes)")
    produced = 0
    next_time = 0.0
    pending: Decoded | None = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInput(f"no video stream in {name}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else produced * interval
                if t + 1e-9 < next_time:
                    continue
                arr = frame.to_ndarray(format="rgb24")
                if pending is not None:
                    yield pending
                pending = Decoded(_planes_from_rgb_array(arr), 255.0, None, None, frame_time=round(float(t), 3),
                                  width=arr.shape[1], height=arr.shape[0])
                produced += 1
                next_time = t + interval
                if produced >= max_frames:
                    break
    except BadInput:
        raise
    except Exception as err:  # noqa: BLE001 - a broken stream: keep the frames we have
        if pending is None:
            raise BadInput(f"cannot decode video {name}: {err}") from None
        pending.warnings.append(f"video {name} ended early after t={pending.frame_time}s: {err}")
    if pending is None:
        raise BadInput(f"no frames decoded from video {name}")
    yield pending


def load(item: Item, root: Path, backend_decodes_jpeg: bool = False) -> list[Decoded]:
    """Decode one discovered item (image, band capture or video) into one or more frames."""
    if item.kind == "bands":
        missing = item.missing_bands()
        if missing:
            raise BadInput(f"incomplete capture {item.key}: missing band(s) {', '.join(missing)}")
        return [decode_band_files([(band, root / rel) for band, rel in item.members], item.key)]
    rel = item.members[0][1]
    ext = rel.rsplit(".", 1)[-1].lower()
    if item.kind == "video":
        raise AssertionError("videos are streamed with iter_video_frames")
    return [decode_image(root / rel, item.key, ext, backend_decodes_jpeg)]
