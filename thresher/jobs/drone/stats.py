"""Per-index statistics over valid pixels: pure functions on NumPy arrays.

The PyTorch backend (``torch_backend.py``) implements the same definitions on
tensors; ``tests/unit/drone/test_torch_equivalence.py`` holds them together:

* valid pixels: finite index value and not masked (saturated or no-data);
* mean in float64 accumulation; p10/median/p90 with linear interpolation between
  order statistics (NumPy's default ``np.percentile`` method);
* cover = vegetation pixels / valid pixels, where vegetation means value >= the
  index's ``vegetation`` threshold;
* stressed = vegetation pixels with value < ``stressed`` / vegetation pixels
  (None when there is no vegetation);
* histogram: HIST_BINS equal bins over HIST_RANGE, values outside clipped into the end bins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

QUANTILES = (0.10, 0.50, 0.90)
HIST_BINS = 40
HIST_RANGE = (-1.0, 1.0)


@dataclass
class IndexStats:
    """Statistics of one index over one image's valid pixels."""

    mean: float | None
    median: float | None
    p10: float | None
    p90: float | None
    valid_pixels: int
    vegetation_pixels: int
    stressed_pixels: int
    cover: float | None  # vegetation / valid
    stressed: float | None  # stressed / vegetation
    histogram: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexStats:
        return cls(**data)


def quantile_positions(n: int, qs: tuple[float, ...] = QUANTILES) -> list[tuple[int, int, float]]:
    """For each q: the two order statistics around q*(n-1) and the interpolation weight."""
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = math.floor(pos)
        out.append((lo, min(lo + 1, n - 1), pos - lo))
    return out


SELECT_MIN_SIZE = 1 << 18  # below this a plain partition is as fast
SELECT_BINS = 1 << 14


def _order_statistics(values: np.ndarray, ks: list[int]) -> dict[int, float]:
    """Exact k-th smallest values for several k. Large arrays: bin by value (a monotonic map, so bins keep
    the order), count, and partition only the few bins that hold a wanted k: about half the time of
    ``np.partition`` on 12 M values, and the same answer."""
    if values.size < SELECT_MIN_SIZE:
        part = np.partition(values, ks)
        return {k: float(part[k]) for k in ks}
    lo, hi = values.min(), values.max()
    if lo == hi:
        return {k: float(lo) for k in ks}
    scale = np.float32(SELECT_BINS / (float(hi) - float(lo)))
    idx = ((values - lo) * scale).astype(np.int32)
    np.minimum(idx, SELECT_BINS - 1, out=idx)
    cum = np.cumsum(np.bincount(idx, minlength=SELECT_BINS))
    out: dict[int, float] = {}
    by_bin: dict[int, list[int]] = {}
    for k in ks:
        by_bin.setdefault(int(np.searchsorted(cum, k, side="right")), []).append(k)
    for b, wanted in by_bin.items():
        start = int(cum[b - 1]) if b > 0 else 0
        members = values[idx == b]
        part = np.partition(members, [k - start for k in wanted])
        out.update({k: float(part[k - start]) for k in wanted})
    return out


def quantiles(values: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> list[float]:
    """np.percentile(values, 100*qs) (linear interpolation) for a 1-D, non-empty array."""
    positions = quantile_positions(values.size, qs)
    stats = _order_statistics(values, sorted({k for lo, hi, _ in positions for k in (lo, hi)}))
    return [stats[lo] + w * (stats[hi] - stats[lo]) for lo, hi, w in positions]


def fractions(valid: int, vegetation: int, stressed: int) -> tuple[float | None, float | None]:
    cover = vegetation / valid if valid else None
    stress = stressed / vegetation if vegetation else None
    return cover, stress


def histogram(values: np.ndarray, bins: int = HIST_BINS, value_range: tuple[float, float] = HIST_RANGE) -> list[int]:
    """Counts in equal bins; values outside the range land in the end bins. Bin = floor(clip((v - lo) *
    bins / (hi - lo), 0, bins - 1)) in float32, a definition the torch backend reproduces exactly
    (np.histogram's edge handling differs in the last ulp)."""
    lo, hi = value_range
    scaled = values - np.float32(lo)
    scaled *= np.float32(bins / (hi - lo))
    np.clip(scaled, 0, bins - 1, out=scaled)  # before the cast: huge values must not overflow int
    return [int(c) for c in np.bincount(scaled.astype(np.int32), minlength=bins)]


def index_stats(index: np.ndarray, mask: np.ndarray | None, vegetation: float, stressed: float,
                with_histogram: bool = False) -> IndexStats:
    """Statistics of ``index`` over pixels that are finite and not in ``mask`` (True = excluded)."""
    valid = np.isfinite(index)
    if mask is not None:
        valid &= ~mask
    values = index[valid]
    n = int(values.size)
    if n == 0:
        return IndexStats(None, None, None, None, 0, 0, 0, None, None,
                          [0] * HIST_BINS if with_histogram else [])
    # Counting "below" twice is cheaper than building the vegetation mask (stressed >= vegetation).
    below_veg = int(np.count_nonzero(values < np.float32(vegetation)))
    n_veg = n - below_veg
    n_stressed = max(0, int(np.count_nonzero(values < np.float32(stressed))) - below_veg)
    p10, median, p90 = quantiles(values)
    cover, stress = fractions(n, n_veg, n_stressed)
    return IndexStats(
        mean=float(values.mean(dtype=np.float64)), median=median, p10=p10, p90=p90,
        valid_pixels=n, vegetation_pixels=n_veg, stressed_pixels=n_stressed,
        cover=cover, stressed=stress, histogram=histogram(values) if with_histogram else [],
    )


def merge_histograms(histograms: list[list[int]]) -> list[int]:
    total = [0] * HIST_BINS
    for h in histograms:
        for i, c in enumerate(h[:HIST_BINS]):
            total[i] += c
    return total
