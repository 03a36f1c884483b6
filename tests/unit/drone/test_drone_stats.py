"""Statistics definitions: quantiles, fractions, histogram, block means, saturation and no-data masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thresher.jobs.drone import compute as cp
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.stats import HIST_BINS, histogram, index_stats, quantiles


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=st.floats(-5, 5, width=32)))
def test_quantiles_equal_numpy_percentile(values):
    expected = np.percentile(values.astype(np.float64), [10, 50, 90])
    np.testing.assert_allclose(quantiles(values.copy()), expected, rtol=1e-6, atol=1e-6)


def test_index_stats_fractions_and_masks():
    index = np.array([[np.nan, -0.5, 0.1, 0.25], [0.5, 0.9, 0.3, 2.0]], dtype=np.float32)
    mask = np.array([[False, False, False, False], [False, False, False, True]])  # 2.0 is masked
    s = index_stats(index, mask, vegetation=0.2, stressed=0.4, with_histogram=True)
    assert s.valid_pixels == 6  # NaN and the masked pixel excluded
    assert s.vegetation_pixels == 4  # 0.25, 0.5, 0.9, 0.3
    assert s.stressed_pixels == 2  # 0.25, 0.3
    assert s.cover == pytest.approx(4 / 6) and s.stressed == pytest.approx(0.5)
    assert s.mean == pytest.approx(np.mean([-0.5, 0.1, 0.25, 0.5, 0.9, 0.3]))
    assert sum(s.histogram) == 6 and len(s.histogram) == HIST_BINS


def test_no_valid_pixels_gives_none_not_nan():
    s = index_stats(np.full((2, 2), np.nan, np.float32), None, 0.1, 0.2)
    assert s.valid_pixels == 0 and s.mean is None and s.cover is None and s.stressed is None


def test_no_vegetation_gives_stressed_none():
    s = index_stats(np.zeros((3, 3), np.float32), None, 0.1, 0.2)
    assert s.cover == 0.0 and s.stressed is None


def test_histogram_clips_out_of_range_into_end_bins():
    h = histogram(np.array([-7, -1, 0.0, 0.999, 1, 9], dtype=np.float32))
    assert h[0] == 2 and h[-1] == 3 and h[HIST_BINS // 2] == 1 and sum(h) == 6


def test_block_mean_ignores_nan_and_marks_empty_blocks():
    x = np.array([[1, 3, np.nan, np.nan], [np.nan, 2, np.nan, np.nan]], dtype=np.float32)
    out = cp.block_mean(x, 2)
    assert out.shape == (1, 2) and out[0, 0] == pytest.approx(2.0) and np.isnan(out[0, 1])
    assert cp.map_factor(3000, 4000, 1024) == 4


def test_saturated_pixels_are_excluded_and_counted():
    """A pixel at the maximum DN in any one band is saturated, even if the others are fine."""
    rgb = np.full((4, 4, 3), (60, 140, 50), dtype=np.uint8)
    rgb[0, 0, 1] = 255
    rgb[1, 1] = (255, 255, 255)
    planes = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}
    out = cp.compute_numpy(Decoded(planes, 255.0), cp.ComputeParams.from_spec(__import__(
        "thresher.api.drone", fromlist=["DroneJob"]).DroneJob()))
    assert out.saturated == 2 and out.stats["GLI"].valid_pixels == 14


def test_nodata_pixels_are_excluded():
    rgb = np.full((2, 2, 3), 100, dtype=np.uint8)
    nodata = np.array([[True, False], [False, False]])
    planes = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}
    from thresher.api.drone import DroneJob

    out = cp.compute_numpy(Decoded(planes, 255.0, nodata), cp.ComputeParams.from_spec(DroneJob()))
    assert out.nodata == 1 and out.stats["VARI"].valid_pixels == 3


def test_colorize_classes():
    rgb = cp.colorize(np.array([[np.nan, -0.5, 0.25, 0.9]], dtype=np.float32), 0.2, 0.33)
    assert tuple(rgb[0, 0]) == cp.NODATA_RGB
    assert rgb[0, 1, 0] < 200 and rgb[0, 2, 0] > 200  # soil brownish, stressed red/yellow
    assert rgb[0, 3, 1] > rgb[0, 3, 0]  # healthy: green dominates
