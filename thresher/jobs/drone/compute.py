"""The CPU backend: raw planes -> index statistics and a small primary-index map, in one pass.

``fused._kernel`` reads each pixel once, at the input's own precision (uint8, uint16 or
float32), computes every requested index with its validity, and accumulates sums, counts,
fine histograms and the health map's block sums; ``stats.finish`` turns those into
``IndexStats``. No full-size float array is ever allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from thresher.api.drone import AUTO_ZONING, DroneJob, Thresholds
from thresher.jobs.drone import fused
from thresher.jobs.drone import indices as ix
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.stats import QBINS, QRANGE, QSCALE, IndexStats, Zoning, finish


def input_kind(max_dn: float | None) -> str:
    """photo8 (8-bit), dn16 (any wider integer DN) or reflectance (float input)."""
    if max_dn is None:
        return "reflectance"
    return "photo8" if max_dn <= 255 else "dn16"


@dataclass(frozen=True)
class ComputeParams:
    """What the backends need from the job spec, as plain values."""

    indices: tuple[str, ...] = ()  # empty: every applicable index
    thresholds: Thresholds = field(default_factory=Thresholds)
    primary: str = "auto"
    map_max: int = 1024
    zoning: str = "auto"
    reference_quantile: float = 0.95
    relative_stressed: float = 0.8
    min_denominator: float = 0.06

    def zoning_for(self, name: str, kind: str) -> Zoning:
        veg, stressed = self.thresholds.cuts(name, kind)
        mode = AUTO_ZONING[kind] if self.zoning == "auto" else self.zoning
        return Zoning(mode, veg, stressed, self.reference_quantile, self.relative_stressed)

    @classmethod
    def from_spec(cls, spec: DroneJob) -> ComputeParams:
        return cls(
            indices=tuple(spec.indices), thresholds=spec.thresholds, primary=spec.primary_index,
            map_max=spec.health_map_max_size, zoning=spec.zoning,
            reference_quantile=spec.relative.reference_quantile, relative_stressed=spec.relative.stressed_below,
            min_denominator=spec.min_denominator,
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
    kind: str = "photo8"


def map_factor(height: int, width: int, map_max: int) -> int:
    """Block size for the health map so that its longest side is at most ``map_max``."""
    return max(1, math.ceil(max(height, width) / map_max))


def map_grid(height: int, width: int, k: int) -> tuple[int, int, int, int]:
    """(blocks down, blocks across, block height, block width): k x k blocks; edge rows/columns that
    do not fill a block are left out of the map, unless the image is smaller than one block."""
    return max(1, height // k), max(1, width // k), min(k, height), min(k, width)


def full_scale(max_dn: float | None) -> float:
    return 1.0 if max_dn is None else float(max_dn)


def compute_numpy(decoded: Decoded, params: ComputeParams) -> Computed:
    planes = decoded.planes
    names = ix.applicable(planes, params.indices)
    primary = ix.primary(planes, names, params.primary)
    kind = input_kind(decoded.max_dn)
    first = next(iter(planes.values()))
    h, w = first.shape
    dummy = np.zeros(1, dtype=first.dtype)
    pixels, channels = fused.pixel_array(planes)
    if pixels is None:
        pixels = np.zeros((1, 1, 3), dtype=first.dtype)
        bands = [fused.flat(planes[b]) if b in planes else dummy for b in fused.BANDS]
    else:  # read from the interleaved array; the per-band views are not touched
        bands = [dummy if b in "RGB" else (fused.flat(planes[b]) if b in planes else dummy) for b in fused.BANDS]
    present = np.array([b in planes for b in fused.BANDS], dtype=np.bool_)
    nodata = (fused.flat(decoded.nodata).view(np.uint8) if decoded.nodata is not None
              else np.zeros(1, np.uint8))
    zonings = [params.zoning_for(name, kind) for name in names]
    scale = full_scale(decoded.max_dn)
    hb, wb, kh, kw = map_grid(h, w, map_factor(h, w, params.map_max))
    hist = np.zeros((len(names), 2, QBINS + 1), dtype=np.int32)
    sums = np.zeros(len(names), dtype=np.float64)
    counts = np.zeros((len(names), 2), dtype=np.int64)
    map_sum = np.zeros((hb, wb), dtype=np.float64)
    map_cnt = np.zeros((hb, wb), dtype=np.int64)
    masked = np.zeros(3, dtype=np.int64)
    f32 = np.float32
    fused.image_pass(
        np.array([fused.CODES[n] for n in names], dtype=np.int64), *bands, pixels, channels, present, nodata,
        decoded.nodata is not None, f32(decoded.max_dn if decoded.max_dn is not None else -1.0), h, w,
        f32(scale), f32(params.min_denominator * scale),
        np.array([z.vegetation for z in zonings], dtype=f32), np.array([z.stressed for z in zonings], dtype=f32),
        f32(QRANGE[0]), f32(QSCALE), names.index(primary) if primary else -1, kh, kw, hb, wb,
        hist, sums, counts, map_sum, map_cnt, masked)
    stats = {}
    for s, name in enumerate(names):
        fine = hist[s, 0, :QBINS].astype(np.int64) + hist[s, 1, :QBINS]
        valid = int(fine.sum())
        stats[name] = finish(fine, valid, int(counts[s, 0]), int(counts[s, 1]), h * w - valid - int(masked[2]),
                             float(sums[s]), zonings[s], with_histogram=name == primary)
    return Computed(stats=stats, primary=primary, pixels=h * w, saturated=int(masked[0]), nodata=int(masked[1]),
                    map_index=block_means(map_sum, map_cnt) if primary else None, kind=kind)


def block_means(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    out = np.full(total.shape, np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out
