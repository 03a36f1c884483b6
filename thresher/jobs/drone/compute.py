"""The CPU backend: raw planes -> index statistics and a small primary-index map, in one pass.

``fused.image_pass`` reads each pixel once, at the input's own precision (uint8, uint16 or
float32), computes every requested index with its validity, and accumulates sums, counts,
fine histograms and the health map's block sums; ``stats.finish`` turns those into
``IndexStats``. No full-size float array is ever allocated.
"""

from __future__ import annotations

import math
import threading
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


TABLE_INDICES = frozenset({"VARI", "GLI", "ExG"})  # 8-bit input: counted in tables of term pairs (fused.py)
_local = threading.local()


def pair_table() -> np.ndarray:
    """This thread's tables of term pairs (``fused._table_finish`` leaves them cleared after each window)."""
    table = getattr(_local, "pair_table", None)
    if table is None:
        table = _local.pair_table = np.zeros(fused.TABLE_SIZE, dtype=np.int32)
    return table


class Pass:
    """The fused pass's accumulators for one image or one orthomosaic, fed window by window.

    A photo is one window; an orthomosaic many (``ortho.py``). Counts are summed in int64 across
    windows (the kernel's histogram copies are int32 per window), so the statistics of a mosaic are
    those of one image of all its pixels: pixel-weighted, exactly as for photos."""

    def __init__(self, bands: set[str] | dict, max_dn: float | None, params: ComputeParams,
                 map_shape: tuple[int, int] = (1, 1)):
        self.names = ix.applicable(bands, params.indices)
        self.primary = ix.primary(bands, self.names, params.primary)
        self.kind = input_kind(max_dn)
        self.max_dn = max_dn
        self.zonings = [params.zoning_for(name, self.kind) for name in self.names]
        self.scale = full_scale(max_dn)
        self.floor = params.min_denominator * self.scale
        n = len(self.names)
        self.hist = np.zeros((n, QBINS + 1), dtype=np.int64)
        self.sums = np.zeros(n, dtype=np.float64)
        self.counts = np.zeros((n, 2), dtype=np.int64)
        self.masked = np.zeros(3, dtype=np.int64)
        self.pixels = 0
        self.map_sum = np.zeros(map_shape, dtype=np.float64)
        self.map_cnt = np.zeros(map_shape, dtype=np.int64)

    def add(self, planes: dict[str, np.ndarray], nodata: np.ndarray | None, k: int = 1,
            map_rows: slice | None = None) -> None:
        """One window: ``planes`` H x W per band; the primary index's k x k block sums go to rows
        ``map_rows`` of the map (whole blocks only; None: the whole map, as for a photo)."""
        first = next(iter(planes.values()))
        h, w = first.shape
        f32 = np.float32
        dummy = np.zeros(1, dtype=first.dtype)
        pixels, channels = fused.pixel_array(planes)
        if pixels is None:
            pixels = np.zeros((1, 1, 3), dtype=first.dtype)
            bands = [fused.flat(planes[b]) if b in planes else dummy for b in fused.BANDS]
        else:  # read from the interleaved array; the per-band views are not touched
            bands = [dummy if b in "RGB" else (fused.flat(planes[b]) if b in planes else dummy)
                     for b in fused.BANDS]
        present = np.array([b in planes for b in fused.BANDS], dtype=np.bool_)
        flat_nodata = fused.flat(nodata).view(np.uint8) if nodata is not None else np.zeros(1, np.uint8)
        map_sum = self.map_sum if map_rows is None else self.map_sum[map_rows]
        map_cnt = self.map_cnt if map_rows is None else self.map_cnt[map_rows]
        hb, wb = map_sum.shape
        hist = np.zeros((len(self.names), 2, QBINS + 1), dtype=np.int32)
        words, shifts = fused.pixel_words(pixels, channels)
        use_table = np.array([n in TABLE_INDICES for n in self.names], dtype=np.bool_)
        table = pair_table() if first.dtype == np.uint8 and use_table.any() else None
        fused.image_pass(
            np.array([fused.CODES[n] for n in self.names], dtype=np.int64), *bands, pixels, channels, present,
            flat_nodata, nodata is not None, f32(self.max_dn if self.max_dn is not None else -1.0), h, w,
            f32(self.scale), f32(self.floor),
            np.array([z.vegetation for z in self.zonings], dtype=f32),
            np.array([z.stressed for z in self.zonings], dtype=f32),
            f32(QRANGE[0]), f32(QSCALE), self.names.index(self.primary) if self.primary else -1,
            min(k, h), min(k, w), hb, wb, hist, self.sums, self.counts, map_sum, map_cnt, self.masked, words, shifts,
            table, use_table)
        self.hist += hist[:, 0, :].astype(np.int64) + hist[:, 1, :]
        self.pixels += h * w

    def finish(self) -> dict[str, IndexStats]:
        stats = {}
        for s, name in enumerate(self.names):
            fine = self.hist[s, :QBINS]
            valid = int(fine.sum())
            stats[name] = finish(fine, valid, int(self.counts[s, 0]), int(self.counts[s, 1]),
                                 self.pixels - valid - int(self.masked[2]), float(self.sums[s]), self.zonings[s],
                                 with_histogram=name == self.primary)
        return stats


def compute_numpy(decoded: Decoded, params: ComputeParams) -> Computed:
    planes = decoded.planes
    first = next(iter(planes.values()))
    h, w = first.shape
    k = map_factor(h, w, params.map_max)
    hb, wb, _, _ = map_grid(h, w, k)
    acc = Pass(planes, decoded.max_dn, params, (hb, wb))
    acc.add(planes, decoded.nodata, k)
    return Computed(stats=acc.finish(), primary=acc.primary, pixels=h * w, saturated=int(acc.masked[0]),
                    nodata=int(acc.masked[1]),
                    map_index=block_means(acc.map_sum, acc.map_cnt) if acc.primary else None, kind=acc.kind)


def block_means(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """total / count as float32, NaN where the count is 0 (a plain division: twice as fast as a masked one)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (total / count).astype(np.float32)
