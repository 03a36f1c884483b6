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


def quantiles(values: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> list[float]:
    """np.percentile(values, 100*qs) (linear) with one partial sort for all qs; values is 1-D, non-empty."""
    positions = quantile_positions(values.size, qs)
    kth = sorted({k for lo, hi, _ in positions for k in (lo, hi)})
    part = np.partition(values, kth)
    return [float(part[lo]) + w * (float(part[hi]) - float(part[lo])) for lo, hi, w in positions]


def fractions(valid: int, vegetation: int, stressed: int) -> tuple[float | None, float | None]:
    cover = vegetation / valid if valid else None
    stress = stressed / vegetation if vegetation else None
    return cover, stress


def histogram(values: np.ndarray, bins: int = HIST_BINS, value_range: tuple[float, float] = HIST_RANGE) -> list[int]:
    """Counts in equal bins; values outside the range land in the end bins. Bin = floor((v - lo) * bins /
    (hi - lo)) in float32, a definition the torch backend reproduces exactly (np.histogram's edge
    handling differs in the last ulp)."""
    lo, hi = value_range
    clipped = np.clip(values, np.float32(lo), np.float32(hi))
    scaled = (clipped - np.float32(lo)) * np.float32(bins / (hi - lo))
    idx = np.minimum(scaled.astype(np.int64), bins - 1)  # values are >= 0 here, so truncation is floor
    return [int(c) for c in np.bincount(idx, minlength=bins)]


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
    veg = values >= np.float32(vegetation)
    n_veg = int(np.count_nonzero(veg))
    n_stressed = int(np.count_nonzero(veg & (values < np.float32(stressed))))
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
