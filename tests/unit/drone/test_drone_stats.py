"""Statistics definitions: histogram quantiles, fractions, zoning, block means, masks, and the
fused kernel against the slow reference implementation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp
from thresher.jobs.drone import indices as ix
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.stats import HIST_BINS, QUANTILE_ERROR, Zoning, bin_index, coarse_histogram, reference_stats

ABS = Zoning("absolute", 0.2, 0.4)


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=st.floats(-1.875, 1.875, width=32)))
def test_quantiles_within_the_documented_error_of_numpy_percentile(values):
    s = reference_stats(values, None, ABS)
    expected = np.percentile(values.astype(np.float64), [10, 50, 90])
    np.testing.assert_allclose([s.p10, s.median, s.p90], expected, rtol=0, atol=QUANTILE_ERROR + 1e-9)


def test_fractions_and_masks():
    index = np.array([[np.nan, -0.5, 0.1, 0.25], [0.5, 0.9, 0.3, 2.0]], dtype=np.float32)
    mask = np.array([[False, False, False, False], [False, False, False, True]])  # 2.0 is masked
    s = reference_stats(index, mask, ABS, with_histogram=True)
    assert s.valid_pixels == 6 and s.invalid_pixels == 1  # NaN invalid, the masked pixel in neither
    assert s.vegetation_pixels == 4  # 0.25, 0.5, 0.9, 0.3
    assert s.stressed_pixels == 2  # 0.25, 0.3
    assert s.cover == pytest.approx(4 / 6) and s.stressed == pytest.approx(0.5)
    assert s.stressed_of_field == pytest.approx(2 / 6)
    assert s.mean == pytest.approx(np.mean([-0.5, 0.1, 0.25, 0.5, 0.9, 0.3]))
    assert sum(s.histogram) == 6 and len(s.histogram) == HIST_BINS


def test_no_valid_pixels_gives_none_not_nan():
    s = reference_stats(np.full((2, 2), np.nan, np.float32), None, ABS)
    assert s.valid_pixels == 0 and s.mean is None and s.cover is None and s.stressed is None


def test_no_vegetation_gives_stressed_none():
    s = reference_stats(np.zeros((3, 3), np.float32), None, ABS)
    assert s.cover == 0.0 and s.stressed is None


def test_coarse_histogram_clips_out_of_range_into_end_bins():
    v = np.array([-7, -1, 0.0, 0.999, 1, 9], dtype=np.float32)
    h = coarse_histogram(np.bincount(bin_index(v), minlength=4000))
    assert h[0] == 2 and h[-1] == 3 and h[HIST_BINS // 2] == 1 and sum(h) == 6


def test_relative_zoning_finds_moderate_stress_beside_healthy_crop():
    """Pins issue 14's invisible stress: 45 % of the vegetation at NDVI 0.56 beside 0.86 read 0 % stressed
    with the absolute cut 0.33; against the field's own reference (p95 of vegetation) it is found."""
    rng = np.random.default_rng(0)
    soil = rng.normal(0.12, 0.02, 4000)
    healthy = rng.normal(0.86, 0.02, 5500)
    stressed = rng.normal(0.56, 0.03, 4500)
    v = np.concatenate([soil, healthy, stressed]).astype(np.float32)
    s = reference_stats(v, None, Zoning("relative", 0.3, 0.33, 0.95, 0.8))
    assert s.zoning == "relative" and s.reference == pytest.approx(0.86 + 1.645 * 0.02, abs=0.01)
    assert s.stressed == pytest.approx(4500 / 10000, abs=0.005)
    assert s.stressed_cut == pytest.approx(0.8 * s.reference, abs=QUANTILE_ERROR)
    # The count is exact for the reported cut.
    assert s.stressed_pixels == np.count_nonzero((v >= np.float32(0.3)) & (bin_index(v) < bin_index(
        np.array([s.stressed_cut + 1e-9]))[0]))
    old = reference_stats(v, None, Zoning("absolute", 0.2, 0.33))
    assert old.stressed == 0.0


def test_relative_zoning_without_a_positive_reference_does_not_rate_stress():
    s = reference_stats(np.full(10, -0.2, np.float32), None, Zoning("relative", -0.5, 0.0))
    assert s.vegetation_pixels == 10 and s.stressed is None and s.stressed_cut is None


def _frame(planes: dict, max_dn, nodata=None) -> Decoded:
    return Decoded(planes, max_dn, nodata)


@pytest.mark.parametrize("dtype,max_dn", [(np.uint8, 255.0), (np.uint16, 65535.0), (np.float32, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_kernel_equals_the_reference_bit_for_bit(dtype, max_dn, seed):
    """The numba pass and the obvious NumPy implementation agree on every count, bin and cut."""
    rng = np.random.default_rng(seed)
    h, w = 37, 53
    if max_dn is None:
        planes = {b: rng.random((h, w), dtype=np.float32) for b in ("B", "G", "R", "N", "RE")}
        planes["R"][0, :4] = np.nan
    else:
        planes = {b: rng.integers(0, int(max_dn) + 1, (h, w)).astype(dtype) for b in ("B", "G", "R", "N", "RE")}
        planes["G"][0, :6] = planes["R"][0, :6] = planes["B"][0, :6] = 0  # zero denominators
    nodata = rng.random((h, w)) < 0.05
    params = cp.ComputeParams.from_spec(DroneJob(healthMapMaxSize=64, zoning="relative" if seed else "absolute"))
    got = cp.compute_numpy(_frame(planes, max_dn, nodata), params)
    scale = cp.full_scale(max_dn)
    mask = nodata.copy()
    if max_dn is not None:
        for p in planes.values():
            mask |= p == max_dn
    bands = {b: p.astype(np.float32) for b, p in planes.items()}
    assert got.saturated == (np.count_nonzero(np.any([p == max_dn for p in planes.values()], axis=0))
                             if max_dn else 0)
    for name, s in got.stats.items():
        ref = reference_stats(ix.values(name, bands, np, scale, params.min_denominator), mask,
                              params.zoning_for(name, got.kind), with_histogram=name == got.primary)
        a, b = s.to_dict(), ref.to_dict()
        assert a.pop("mean") == pytest.approx(b.pop("mean"), abs=1e-6), name
        assert a == b, name


def test_health_map_is_the_block_mean_of_valid_values():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[...] = (60, 140, 50)
    rgb[0, 0] = (0, 0, 0)  # zero denominators: invalid, left out of the block mean
    rgb[2:, 2:] = 0  # a block with nothing valid -> NaN
    out = cp.compute_numpy(_frame({"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}, 255.0),
                           cp.ComputeParams(indices=("GLI",), map_max=2))
    gli = np.float32(2 * 140 - 60 - 50) / np.float32(2 * 140 + 60 + 50)
    assert out.map_index.shape == (2, 2) and out.map_index[0, 0] == pytest.approx(gli, abs=1e-6)
    assert np.isnan(out.map_index[1, 1])
    assert cp.map_factor(3000, 4000, 1024) == 4


def test_saturated_pixels_are_excluded_and_counted():
    """A pixel at the maximum DN in any one band is saturated, even if the others are fine."""
    rgb = np.full((4, 4, 3), (60, 140, 50), dtype=np.uint8)
    rgb[0, 0, 1] = 255
    rgb[1, 1] = (255, 255, 255)
    planes = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}
    out = cp.compute_numpy(Decoded(planes, 255.0), cp.ComputeParams.from_spec(DroneJob()))
    assert out.saturated == 2 and out.stats["GLI"].valid_pixels == 14 and out.stats["GLI"].invalid_pixels == 0


def test_nodata_pixels_are_excluded():
    rgb = np.full((2, 2, 3), 100, dtype=np.uint8)
    nodata = np.array([[True, False], [False, False]])
    planes = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}
    out = cp.compute_numpy(Decoded(planes, 255.0, nodata), cp.ComputeParams.from_spec(DroneJob()))
    assert out.nodata == 1 and out.stats["VARI"].valid_pixels == 3


def test_numba_cache_goes_to_tmp_when_the_package_is_read_only():
    """Job pods have a read-only root filesystem: with cache=True and nowhere to write, numba fails at
    import, so the cache moves to the writable /tmp; an explicit NUMBA_CACHE_DIR wins."""
    from thresher.jobs.drone.fused import numba_cache_dir

    assert numba_cache_dir({}, package_writable=False, tmp="/tmp") == "/tmp/thresher-numba-cache"
    assert numba_cache_dir({}, package_writable=True, tmp="/tmp") is None
    assert numba_cache_dir({"NUMBA_CACHE_DIR": "/x"}, package_writable=False, tmp="/tmp") is None


@pytest.mark.parametrize("zoning", ["absolute", "relative"])
def test_every_row_source_of_the_kernel_gives_the_same_numbers(zoning):
    """The pass reads 8-bit R, G, B from Pillow's 4-byte pixels as uint32 words, from an H x W x 3 array,
    or from separate planes: the same statistics, masks and map bit for bit, in any channel order, and
    equal to the obvious NumPy implementation."""
    from thresher.jobs.drone import fused

    rng = np.random.default_rng(7)
    h, w = 61, 83  # odd sizes: partial map blocks, odd row lengths
    rgbx = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgbx[0, :9, :3] = 0  # zero denominators
    rgbx[1, :5, 1] = 255  # saturated in one band
    rgbx[2, :4, :3] = (20, 25, 45)  # VARI's G + R == B
    nodata = rng.random((h, w)) < 0.03
    params = dataclasses.replace(cp.ComputeParams.from_spec(DroneJob(zoning=zoning)), map_max=16)
    bgrx = np.ascontiguousarray(rgbx[..., [2, 1, 0, 3]])
    rgb3 = np.ascontiguousarray(rgbx[..., :3])
    sources = {
        "words RGBX": {"R": rgbx[..., 0], "G": rgbx[..., 1], "B": rgbx[..., 2]},
        "words BGRX": {"R": bgrx[..., 2], "G": bgrx[..., 1], "B": bgrx[..., 0]},
        "H x W x 3": {"R": rgb3[..., 0], "G": rgb3[..., 1], "B": rgb3[..., 2]},
        "planes": {b: np.ascontiguousarray(rgb3[..., i]) for i, b in enumerate("RGB")},
    }
    pixels, channels = fused.pixel_array(sources["words BGRX"])
    assert fused.pixel_words(pixels, channels)[0] is not None and list(channels) == [2, 1, 0]
    assert fused.pixel_words(*fused.pixel_array(sources["H x W x 3"]))[0] is None
    results = {name: cp.compute_numpy(_frame(planes, 255.0, nodata), params) for name, planes in sources.items()}
    first = results["planes"]
    for name, got in results.items():
        assert (got.saturated, got.nodata) == (first.saturated, first.nodata), name
        assert {k: v.to_dict() for k, v in got.stats.items()} == {k: v.to_dict() for k, v in first.stats.items()}, name
        np.testing.assert_array_equal(got.map_index, first.map_index, err_msg=name)
    mask = nodata | np.any(rgb3 == 255, axis=-1)
    bands = {b: rgb3[..., i].astype(np.float32) for i, b in enumerate("RGB")}
    for name, s in first.stats.items():
        ref = reference_stats(ix.values(name, bands, np, 255.0, params.min_denominator), mask,
                              params.zoning_for(name, first.kind), with_histogram=name == first.primary)
        a, b = s.to_dict(), ref.to_dict()
        assert a.pop("mean") == pytest.approx(b.pop("mean"), abs=1e-6), name
        assert a == b, name


@pytest.mark.parametrize("zoning", ["absolute", "relative"])
def test_8bit_pair_tables_equal_the_per_pixel_pass(zoning):
    """8-bit VARI, GLI and ExG are counted in tables of (G, R + B) and (G - R, G + R - B) cells
    (``fused._table_finish``); the same pixels as uint16 with max DN 255 take the per-pixel loops.
    Every statistic, the masks and the map agree (the mean to summation rounding)."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (300, 400, 3)).astype(np.uint8)
    g = rng.integers(0, 256, 4000)
    r = rng.integers(0, 256, 4000)
    rgb[:10, :, 1], rgb[:10, :, 0] = g.reshape(10, 400), r.reshape(10, 400)
    rgb[:10, :, 2] = np.clip(g + r, 0, 255).reshape(10, 400)  # VARI's G + R == B (and saturated where clipped)
    rgb[10:12] = 0  # every denominator zero
    rgb[12, :50] = (10, 12, 5)  # below the floor, not zero
    nodata = rng.random((300, 400)) < 0.02
    params = cp.ComputeParams.from_spec(DroneJob(healthMapMaxSize=100, zoning=zoning))
    planes8 = {b: rgb[..., i] for i, b in enumerate("RGB")}
    planes16 = {b: p.astype(np.uint16) for b, p in planes8.items()}
    table = cp.compute_numpy(_frame(planes8, 255.0, nodata), params)
    pixel = cp.compute_numpy(_frame(planes16, 255.0, nodata), params)
    assert (table.saturated, table.nodata) == (pixel.saturated, pixel.nodata) and table.saturated > 0
    assert np.array_equal(table.map_index, pixel.map_index, equal_nan=True)
    assert set(table.stats) == {"VARI", "GLI", "ExG", "TGI"}
    for name in table.stats:
        a, b = table.stats[name].to_dict(), pixel.stats[name].to_dict()
        assert a.pop("mean") == pytest.approx(b.pop("mean"), abs=1e-7), name  # float32 row sums vs float64 cell sums
        assert a == b, name
        assert a["invalid_pixels"] > 0 or name == "TGI", name
