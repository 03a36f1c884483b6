"""The NumPy (CPU) backend: raw planes -> index statistics and a small primary-index map.

Work is float32 and one index at a time, so a 12-megapixel image needs a few
hundred MB at most; the full-resolution index array is dropped as soon as its
statistics (and, for the primary index, the downsampled map) are taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from thresher.jobs.drone import indices as ix
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.stats import IndexStats, index_stats


@dataclass(frozen=True)
class ComputeParams:
    """What the backends need from the job spec, as plain values."""

    indices: tuple[str, ...] = ()  # empty: every applicable index
    thresholds: tuple[tuple[str, float, float], ...] = ()  # (index, vegetation, stressed)
    primary: str = "auto"
    map_max: int = 1024

    def threshold(self, name: str) -> tuple[float, float]:
        for index, veg, stressed in self.thresholds:
            if index == name:
                return veg, stressed
        raise KeyError(name)

    @classmethod
    def from_spec(cls, spec) -> ComputeParams:
        return cls(
            indices=tuple(spec.indices),
            thresholds=tuple((name, spec.thresholds.for_index(name).vegetation,
                              spec.thresholds.for_index(name).stressed) for name in ix.FORMULAS),
            primary=spec.primary_index, map_max=spec.health_map_max_size,
        )


@dataclass
class Computed:
    stats: dict[str, IndexStats]
    primary: str | None
    pixels: int
    saturated: int  # pixels at the maximum DN in some band (excluded)
    nodata: int  # pixels without data (alpha 0), excluded
    map_index: np.ndarray | None = None  # downsampled primary index, NaN where nothing valid
    warnings: list[str] = field(default_factory=list)


def map_factor(height: int, width: int, map_max: int) -> int:
    """Block size for the health map so that its longest side is at most ``map_max``."""
    return max(1, math.ceil(max(height, width) / map_max))


def block_mean(index: np.ndarray, k: int) -> np.ndarray:
    """Mean of finite values over k x k blocks (edge rows/columns that do not fill a block are dropped,
    unless the image is smaller than one block); NaN where a block has no finite value.

    Sums k*k strided slices in a fixed order (much faster than reducing a tiny inner axis); the torch
    backend adds the same slices in the same order, so both give identical float32 maps."""
    h, w = index.shape
    hb, wb = max(1, h // k), max(1, w // k)
    kh, kw = min(k, h), min(k, w)
    x = index[: hb * kh, : wb * kw]
    finite = np.isfinite(x)
    zeroed = np.where(finite, x, np.float32(0))
    total = np.zeros((hb, wb), dtype=np.float32)
    count = np.zeros((hb, wb), dtype=np.int32)
    for i in range(kh):
        for j in range(kw):
            total += zeroed[i::kh, j::kw]
            count += finite[i::kh, j::kw]
    out = np.full((hb, wb), np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def reflectance(plane: np.ndarray, max_dn: float | None) -> np.ndarray:
    """DN -> 0..1 by the sensor's maximum DN (multiplying by a float32 reciprocal, as the torch path does)."""
    if max_dn is None:
        return plane.astype(np.float32, copy=False)
    return np.multiply(plane, np.float32(1.0 / max_dn), dtype=np.float32)


def saturation_mask(planes: dict[str, np.ndarray], max_dn: float | None) -> np.ndarray | None:
    if max_dn is None:
        return None
    mask = None
    for plane in planes.values():
        hit = plane == plane.dtype.type(max_dn)
        mask = hit if mask is None else np.logical_or(mask, hit, out=mask)
    return mask


def compute_numpy(decoded: Decoded, params: ComputeParams) -> Computed:
    planes = decoded.planes
    names = ix.applicable(planes, params.indices)
    primary = ix.primary(planes, names, params.primary)
    saturated = saturation_mask(planes, decoded.max_dn)
    mask = saturated
    if decoded.nodata is not None:
        mask = decoded.nodata if mask is None else (mask | decoded.nodata)
    bands = {name: reflectance(plane, decoded.max_dn) for name, plane in planes.items()}
    stats: dict[str, IndexStats] = {}
    map_index = None
    for name in names:
        values = ix.FORMULAS[name](bands, np)
        veg, stressed = params.threshold(name)
        stats[name] = index_stats(values, mask, veg, stressed, with_histogram=name == primary)
        if name == primary:
            if mask is not None:
                values[mask] = np.nan
            map_index = block_mean(values, map_factor(*values.shape, params.map_max))
        del values
    h, w = next(iter(planes.values())).shape
    return Computed(
        stats=stats, primary=primary, pixels=h * w,
        saturated=int(np.count_nonzero(saturated)) if saturated is not None else 0,
        nodata=int(np.count_nonzero(decoded.nodata)) if decoded.nodata is not None else 0,
        map_index=map_index,
    )


# --- health map colours ------------------------------------------------------------------

NODATA_RGB = (0, 0, 0)


def colorize(small: np.ndarray, vegetation: float, stressed: float) -> np.ndarray:
    """Primary index -> RGB: below the vegetation threshold browns (soil), from vegetation to
    stressed red -> yellow, above stressed yellow-green -> dark green; black where no data."""
    span = max(stressed - vegetation, 0.05)
    eps = 1e-6
    stops = [
        (vegetation - 2 * span, (70, 50, 35)),
        (vegetation - eps, (190, 160, 120)),
        (vegetation, (215, 25, 28)),
        (stressed - eps, (253, 220, 60)),
        (stressed, (200, 230, 100)),
        (stressed + 2 * span, (0, 104, 55)),
    ]
    xs = np.array([s[0] for s in stops], dtype=np.float64)
    out = np.zeros(small.shape + (3,), dtype=np.uint8)
    finite = np.isfinite(small)
    values = np.where(finite, small, 0).astype(np.float64)
    for channel in range(3):
        ys = np.array([s[1][channel] for s in stops], dtype=np.float64)
        out[..., channel] = np.round(np.interp(values, xs, ys)).astype(np.uint8)
    out[~finite] = NODATA_RGB
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=3)  # maps are small; speed over size
    return buf.getvalue()
