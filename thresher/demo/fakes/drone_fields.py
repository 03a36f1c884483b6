"""Synthetic fields with known ground truth, for demos, tests and the benchmark.

A field is a grid of 16x16-pixel blocks, each soil, healthy or stressed crop, with
exact counts: ``vegetation_fraction`` of the blocks are crop and ``stressed_fraction``
of those are stressed. Blocks align with JPEG's 8x8 DCT blocks and RGB JPEGs are
written 4:4:4 at quality 95, so compression barely moves a pixel across a threshold.

Class colours (RGB, DN) and reflectances (multispectral) sit clearly on their side of
every default threshold (docs/drone.md lists the resulting index values).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

SOIL, HEALTHY, STRESSED = 0, 1, 2
BLOCK = 16
RGB_COLOURS = {SOIL: (140, 110, 80), HEALTHY: (60, 140, 50), STRESSED: (130, 150, 60)}
# Reflectance per band: B, G, R, N, RE. Soil rises steadily from blue to NIR (a dry loam); healthy crop has
# the red trough and NIR plateau; stressed crop is moderate stress (NDVI 0.56 beside 0.85), not dead plants.
MS_REFLECTANCE = {
    SOIL: {"B": 0.06, "G": 0.09, "R": 0.13, "N": 0.19, "RE": 0.16},
    HEALTHY: {"B": 0.03, "G": 0.08, "R": 0.04, "N": 0.50, "RE": 0.25},
    STRESSED: {"B": 0.05, "G": 0.10, "R": 0.09, "N": 0.32, "RE": 0.22},
}
MICASENSE_SUFFIX = {"B": 1, "G": 2, "R": 3, "N": 4, "RE": 5}


@dataclass(frozen=True)
class Truth:
    vegetation_fraction: float  # crop pixels / all pixels
    stressed_fraction: float  # stressed pixels / crop pixels


def field_labels(height: int, width: int, vegetation: float, stressed: float, seed: int = 0) -> tuple[np.ndarray, Truth]:
    """Label image (SOIL/HEALTHY/STRESSED) with exact block counts; returns the realised fractions."""
    if height % BLOCK or width % BLOCK:
        raise ValueError(f"size must be a multiple of {BLOCK}")
    hb, wb = height // BLOCK, width // BLOCK
    n = hb * wb
    n_veg = round(vegetation * n)
    n_str = round(stressed * n_veg)
    blocks = np.full(n, SOIL, dtype=np.uint8)
    order = np.random.default_rng(seed).permutation(n)
    blocks[order[:n_veg]] = HEALTHY
    blocks[order[:n_str]] = STRESSED
    labels = np.repeat(np.repeat(blocks.reshape(hb, wb), BLOCK, axis=0), BLOCK, axis=1)
    return labels, Truth(n_veg / n, (n_str / n_veg) if n_veg else 0.0)


def rgb_field(labels: np.ndarray, noise: int = 3, seed: int = 0) -> np.ndarray:
    lut = np.array([RGB_COLOURS[SOIL], RGB_COLOURS[HEALTHY], RGB_COLOURS[STRESSED]], dtype=np.int16)
    img = lut[labels]
    if noise:
        img = img + np.random.default_rng(seed + 1).integers(-noise, noise + 1, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def band_field(labels: np.ndarray, band: str, noise: float = 0.003, seed: int = 0) -> np.ndarray:
    lut = np.array([MS_REFLECTANCE[c][band] for c in (SOIL, HEALTHY, STRESSED)], dtype=np.float32)
    refl = lut[labels]
    if noise:
        refl = refl + np.random.default_rng(seed + 7).normal(0, noise, refl.shape).astype(np.float32)
    return np.clip(np.round(refl * 65535), 0, 65534).astype(np.uint16)  # 65535 would read as saturated


def reflectance_planes(labels: np.ndarray, spectra: dict[int, dict[str, float]], noise: float = 0.003,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 reflectance per band (B, G, R, N, RE) of a label image, with Gaussian noise."""
    rng = np.random.default_rng(seed + 7)
    out = {}
    for band in ("B", "G", "R", "N", "RE"):
        lut = np.zeros(int(labels.max()) + 1, np.float32)
        for cls, spectrum in spectra.items():
            lut[cls] = spectrum[band]
        out[band] = np.clip(lut[labels] + rng.normal(0, noise, labels.shape).astype(np.float32), 0, 1)
    return out


def to_dn16(planes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reflectance -> 16-bit DN as an uncalibrated camera stores it (65535 would read as saturated)."""
    return {b: np.clip(np.round(p * 65535), 0, 65534).astype(np.uint16) for b, p in planes.items()}


def camera_rgb(planes: dict[str, np.ndarray], exposure: float = 2.0, gamma: float = 2.2,
               chroma: float = 1.5) -> np.ndarray:
    """An 8-bit photo of the same scene as an RGB camera renders it: exposure, sRGB-like gamma, the
    saturation boost of the camera's colour matrix (chroma x around the pixel's grey level), rounding."""
    rgb = np.stack([planes["R"], planes["G"], planes["B"]], axis=-1)
    encoded = 255 * np.clip(rgb * exposure, 0, 1) ** (1 / gamma)
    grey = encoded.mean(axis=-1, keepdims=True)
    return np.round(grey + chroma * (encoded - grey)).clip(0, 254).astype(np.uint8)


def _dms(value: float) -> tuple:
    value = abs(value)
    deg = int(value)
    minutes = int((value - deg) * 60)
    seconds = Fraction((value - deg - minutes / 60) * 3600).limit_denominator(10000)
    return (Fraction(deg, 1), Fraction(minutes, 1), seconds)


def gps_exif(lat: float, lon: float, alt: float | None = None):
    """A PIL Exif with a GPS IFD for (lat, lon[, alt])."""
    from PIL import Image, TiffImagePlugin

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    rational = lambda f: TiffImagePlugin.IFDRational(f.numerator, f.denominator)  # noqa: E731
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = tuple(rational(x) for x in _dms(lat))
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = tuple(rational(x) for x in _dms(lon))
    if alt is not None:
        gps[5] = b"\x00" if alt >= 0 else b"\x01"
        gps[6] = rational(Fraction(abs(alt)).limit_denominator(1000))
    return exif


def jpeg_bytes(rgb: np.ndarray, exif=None, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality, subsampling=0, **kwargs)
    return buf.getvalue()


def write_rgb(path: Path, rgb: np.ndarray, gps: tuple[float, float, float] | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    exif = gps_exif(*gps) if gps else None
    if path.suffix.lower() in (".jpg", ".jpeg"):
        path.write_bytes(jpeg_bytes(rgb, exif))
    else:
        kwargs = {"exif": exif} if exif is not None else {}
        Image.fromarray(rgb, "RGB").save(path, **kwargs)


def write_band_tiff(path: Path, plane: np.ndarray, gps: tuple[float, float, float] | None = None) -> None:
    from PIL import Image, TiffImagePlugin

    path.parent.mkdir(parents=True, exist_ok=True)
    info = TiffImagePlugin.ImageFileDirectory_v2()
    if gps:
        # Pillow writes a nested GPS IFD from tiffinfo, not from exif= (which TIFF saving ignores).
        info[0x8825] = dict(gps_exif(*gps).get_ifd(0x8825))
    Image.fromarray(plane).save(path, format="TIFF", tiffinfo=info)


def write_capture(folder: Path, names: dict[str, str], labels: np.ndarray, gps=None, seed: int = 0) -> list[Path]:
    """One single-band TIFF per band, named by ``names`` (band -> file name)."""
    paths = []
    for band, name in names.items():
        write_band_tiff(folder / name, band_field(labels, band, seed=seed), gps)
        paths.append(folder / name)
    return paths


def write_micasense(folder: Path, capture: int, labels: np.ndarray, gps=None, seed: int = 0) -> list[Path]:
    """IMG_xxxx_1..5.tif: 1 Blue, 2 Green, 3 Red, 4 NIR, 5 RedEdge."""
    names = {band: f"IMG_{capture:04d}_{suffix}.tif" for band, suffix in MICASENSE_SUFFIX.items()}
    return write_capture(folder, names, labels, gps, seed)


def write_dji_ms(folder: Path, capture: int, labels: np.ndarray, gps=None, seed: int = 0) -> list[Path]:
    """DJI_xxx1..5.TIF: 1 Blue, 2 Green, 3 Red, 4 RedEdge, 5 NIR."""
    names = {band: f"DJI_{capture:03d}{digit}.TIF" for band, digit in {"B": 1, "G": 2, "R": 3, "RE": 4, "N": 5}.items()}
    return write_capture(folder, names, labels, gps, seed)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 2) -> None:
    """A short MPEG-4 Part 2 video (an encoder every FFmpeg build has)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_samples(folder: Path, count: int = 4, size: tuple[int, int] = (768, 1024), seed: int = 0,
                 multispectral: int = 2, video: bool = False) -> list[dict]:
    """RGB JPEGs with GPS, MicaSense band captures, optionally a video; returns the truth of each."""
    h, w = size
    truths = []
    base_lat, base_lon = 52.0907, 5.1214
    for i in range(count):
        labels, truth = field_labels(h, w, 0.3 + 0.1 * (i % 5), 0.1 + 0.1 * (i % 4), seed + i)
        gps = (base_lat + i * 1e-4, base_lon + i * 1e-4, 60.0 + i)
        write_rgb(folder / f"rgb/field_{i:03d}.jpg", rgb_field(labels, seed=seed + i), gps)
        truths.append({"key": f"rgb/field_{i:03d}.jpg", "cover": truth.vegetation_fraction,
                       "stressed": truth.stressed_fraction, "gps": gps})
    for j in range(multispectral):
        half = lambda x: max(BLOCK, x // 2 // BLOCK * BLOCK)  # noqa: E731 - band files are smaller
        labels, truth = field_labels(half(h), half(w), 0.5, 0.25 + 0.1 * j, seed + 100 + j)
        write_micasense(folder / "micasense", j + 1, labels, (base_lat, base_lon - j * 1e-4, 80.0), seed + j)
        truths.append({"key": f"micasense/IMG_{j + 1:04d}", "cover": truth.vegetation_fraction,
                       "stressed": truth.stressed_fraction})
    if video:
        frames = [rgb_field(field_labels(256, 320, 0.5, 0.2, seed + 200 + k)[0]) for k in range(6)]
        write_video(folder / "video/pass.mp4", frames)
        truths.append({"key": "video/pass.mp4", "cover": 0.5, "stressed": 0.2})
    return truths
