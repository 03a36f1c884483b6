"""Per-index statistics from one pass's accumulators: pure functions shared by both backends.

A backend (the numba kernel in ``fused.py``, or ``torch_backend.py``) reduces one image and
one index to: valid pixel count, count below the vegetation cut, count below the absolute
stressed cut, invalid pixel count (zero or near-zero denominator), the float64 sum, and a
fine histogram. Everything in ``IndexStats`` follows from those here, so the backends
cannot drift apart:

* valid pixels: finite index value, not masked (saturated or no-data), denominator not
  below the floor (``indices.py``); ``invalid`` counts the others that were not masked;
* mean = sum / valid (float64 accumulation);
* p10 / median / p90: read from a histogram of QBINS equal bins over QRANGE (bin width
  QWIDTH = 0.001), interpolating the rank inside its bin: **error at most one bin width**
  (0.001), except that values outside QRANGE are clamped to its ends;
* cover = vegetation / valid ("of field"), vegetation = value >= the vegetation cut;
* stressed = stressed / vegetation ("of vegetation"), stressed_of_field = stressed / valid;
* zoning ``absolute``: stressed = vegetation with value < the stressed cut (exact count);
  zoning ``relative``: the field's own healthy level is the reference, the
  ``reference_quantile`` (default 0.95) of its vegetation pixels (Holland & Schepers' virtual
  reference); stressed = vegetation whose sufficiency index value / reference is below
  ``relative_stressed`` (default 0.8). The cut is taken on the histogram grid (it is the
  lower edge of the bin that holds reference * relative_stressed), so the count is exact for
  the reported ``stressed_cut``;
* histogram (primary index, reports): HIST_BINS bins over HIST_RANGE summed from the fine one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

QUANTILES = (0.10, 0.50, 0.90)
HIST_BINS = 40
HIST_RANGE = (-1.0, 1.0)
QRANGE = (-2.0, 2.0)
QBINS = 4000
QWIDTH = (QRANGE[1] - QRANGE[0]) / QBINS
QSCALE = QBINS / (QRANGE[1] - QRANGE[0])
QUANTILE_ERROR = QWIDTH  # documented bound of p10/median/p90 and the relative cut


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
    cover: float | None  # vegetation / valid: share of the field
    stressed: float | None  # stressed / vegetation: share of the vegetation
    histogram: list[int] = field(default_factory=list)
    invalid_pixels: int = 0  # zero or near-zero denominator (shadow, water, sky): not in any statistic
    stressed_of_field: float | None = None  # stressed / valid
    zoning: str = "absolute"
    vegetation_cut: float | None = None
    stressed_cut: float | None = None  # the cut actually used (relative: from the field's reference)
    reference: float | None = None  # relative zoning: the field's healthy reference value

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexStats:
        return cls(**data)


@dataclass(frozen=True)
class Zoning:
    """How stressed vegetation is told apart, for one index and one input."""

    mode: str  # absolute | relative
    vegetation: float
    stressed: float  # absolute cut (also used for the absolute count in relative mode's bookkeeping)
    reference_quantile: float = 0.95
    relative_stressed: float = 0.8


def bin_index(values: np.ndarray) -> np.ndarray:
    """Fine-histogram bin of float32 values, the kernels' definition: (v - lo) * scale in float32,
    clamped to [0, QBINS - 1], truncated."""
    t = (np.asarray(values, dtype=np.float32) - np.float32(QRANGE[0])) * np.float32(QSCALE)
    return np.clip(t, np.float32(0), np.float32(QBINS - 1)).astype(np.int64)


def rank_value(hist: np.ndarray, cum: np.ndarray, rank: float) -> float:
    """Approximate value of the order statistic at fractional ``rank`` (0-based), from the histogram:
    the rank's position inside its bin, assuming values spread evenly there (error < one bin)."""
    def at(k: int) -> float:
        b = int(np.searchsorted(cum, k, side="right"))
        before = int(cum[b - 1]) if b > 0 else 0
        inside = (k - before + 0.5) / int(hist[b])
        return QRANGE[0] + (b + inside) * QWIDTH

    lo = math.floor(rank)
    hi = min(lo + 1, int(cum[-1]) - 1)
    w = rank - lo
    a = at(lo)
    return a if w == 0 else a + w * (at(hi) - a)


def coarse_histogram(hist: np.ndarray) -> list[int]:
    """HIST_BINS bins over HIST_RANGE from the fine histogram (edges align; outside -> end bins)."""
    per = round((HIST_RANGE[1] - HIST_RANGE[0]) / HIST_BINS / QWIDTH)
    start = round((HIST_RANGE[0] - QRANGE[0]) / QWIDTH)
    out = [int(hist[start + i * per: start + (i + 1) * per].sum()) for i in range(HIST_BINS)]
    out[0] += int(hist[:start].sum())
    out[-1] += int(hist[start + HIST_BINS * per:].sum())
    return out


def finish(hist: np.ndarray, valid: int, below_veg: int, below_stressed: int, invalid: int, total: float,
           zoning: Zoning, with_histogram: bool = False) -> IndexStats:
    """IndexStats of one index from one pass's accumulators (see the module docstring)."""
    hist = np.asarray(hist, dtype=np.int64)
    n = int(valid)
    if n == 0:
        return IndexStats(None, None, None, None, 0, 0, 0, None, None,
                          [0] * HIST_BINS if with_histogram else [], invalid_pixels=int(invalid),
                          zoning=zoning.mode, vegetation_cut=zoning.vegetation)
    cum = np.cumsum(hist)
    p10, median, p90 = (rank_value(hist, cum, q * (n - 1)) for q in QUANTILES)
    n_veg = n - int(below_veg)
    reference = None
    stressed_cut: float | None = zoning.stressed
    if zoning.mode == "absolute":
        n_stressed = max(0, int(below_stressed) - int(below_veg))
    else:
        n_stressed, stressed_cut = 0, None
        if n_veg > 0:
            reference = rank_value(hist, cum, int(below_veg) + zoning.reference_quantile * (n_veg - 1))
            if reference > 0:  # a sufficiency ratio needs a positive reference
                cut_bin = int(bin_index(np.array([reference * zoning.relative_stressed]))[0])
                stressed_cut = QRANGE[0] + cut_bin * QWIDTH
                below_cut = int(cum[cut_bin - 1]) if cut_bin > 0 else 0
                n_stressed = min(n_veg, max(0, below_cut - int(below_veg)))
    cover = n_veg / n
    return IndexStats(
        mean=float(total) / n, median=median, p10=p10, p90=p90,
        valid_pixels=n, vegetation_pixels=n_veg, stressed_pixels=n_stressed,
        cover=cover, stressed=(n_stressed / n_veg) if n_veg and stressed_cut is not None else None,
        histogram=coarse_histogram(hist) if with_histogram else [],
        invalid_pixels=int(invalid), stressed_of_field=(n_stressed / n) if stressed_cut is not None else None,
        zoning=zoning.mode, vegetation_cut=zoning.vegetation, stressed_cut=stressed_cut, reference=reference,
    )


def reference_stats(values: np.ndarray, mask: np.ndarray | None, zoning: Zoning, with_histogram: bool = False,
                    invalid_extra: int = 0) -> IndexStats:
    """The same statistics straight from an array of float32 index values (NaN = invalid): the
    slow, obvious implementation that tests compare both backends against."""
    keep = np.ones(values.shape, bool) if mask is None else ~mask
    finite = np.isfinite(values) & keep
    v = values[finite]
    hist = np.bincount(bin_index(v), minlength=QBINS)
    return finish(hist, v.size, int(np.count_nonzero(v < np.float32(zoning.vegetation))),
                  int(np.count_nonzero(v < np.float32(zoning.stressed))), int(np.count_nonzero(keep & ~finite)) + invalid_extra,
                  float(v.sum(dtype=np.float64)), zoning, with_histogram)


def merge_histograms(histograms: list[list[int]]) -> list[int]:
    total = [0] * HIST_BINS
    for h in histograms:
        for i, c in enumerate(h[:HIST_BINS]):
            total[i] += c
    return total
