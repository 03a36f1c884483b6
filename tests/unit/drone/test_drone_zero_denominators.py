"""Ratios at the source precision: exact zero denominators and near-zero ones (issue 14, item 1).

VARI was computed on float32 values scaled by 1/255 and its zero test ran on the scaled
values, so for 8-bit colours with G + R == B the denominator came out as a tiny non-zero
number and VARI reached +-1e7; a field with 10 % dark bluish shadow gave a mean of 3,936.
"""

from __future__ import annotations

import numpy as np
import pytest

from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.decode import Decoded


def every_colour() -> np.ndarray:
    """All 2**24 8-bit colours as a 4096 x 4096 RGB image."""
    c = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8)
    return rgb.reshape(4096, 4096, 3)


def rgb_frame(rgb: np.ndarray, nodata: np.ndarray | None = None) -> Decoded:
    return Decoded({"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}, 255.0, nodata)


@pytest.fixture(scope="module")
def colours() -> np.ndarray:
    return every_colour()


@pytest.mark.parametrize("min_denominator", [0.0, 0.06])
def test_every_8bit_zero_or_tiny_denominator_colour_is_invalid_for_vari_and_gli(colours, min_denominator):
    """Every 8-bit colour whose VARI or GLI denominator is 0 (VARI: the 32,896 colours with G + R == B;
    GLI: black), or below the floor, is invalid: counted as such and in no statistic; all the others are
    valid and bounded, so no colour can produce the old +-1e7."""
    params = cp.ComputeParams(indices=("VARI", "GLI"), min_denominator=min_denominator, map_max=64)
    out = cp.compute_numpy(rgb_frame(colours), params)
    r, g, b = (colours[..., i].astype(np.int64) for i in range(3))
    saturated = (r == 255) | (g == 255) | (b == 255)
    floor = min_denominator * 255
    for name, den in (("VARI", g + r - b), ("GLI", 2 * g + r + b)):
        bad = ((den == 0) | (np.abs(den) < floor)) & ~saturated
        if min_denominator == 0:
            assert np.count_nonzero(bad) == (32_896 - np.count_nonzero((den == 0) & saturated) if name == "VARI" else 1)
        s = out.stats[name]
        assert s.invalid_pixels == np.count_nonzero(bad), name
        assert s.valid_pixels == (1 << 24) - np.count_nonzero(saturated) - s.invalid_pixels, name
        assert np.isfinite(s.mean) and abs(s.mean) < 2, name
    # The largest possible |VARI| among valid colours is bounded by |G - R| / floor (or 255 when only 0 is cut).
    assert out.stats["VARI"].p90 <= 2.0 and out.stats["VARI"].p10 >= -2.0


def shadow_field(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A 256 x 320 field (soil, healthy, stressed blocks) with 10 % of its 16-px blocks in dark bluish
    shadow around RGB (20, 25, 40) with +-3 DN noise; returns the image and the shadow mask."""
    labels, _ = sm.field_labels(256, 320, 0.45, 0.3, seed=seed)
    rgb = sm.rgb_field(labels, seed=seed)
    blocks = np.random.default_rng(seed).permutation((256 // 16) * (320 // 16))[: (256 // 16) * (320 // 16) // 10]
    shadow = np.zeros((256 // 16) * (320 // 16), bool)
    shadow[blocks] = True
    shadow = np.repeat(np.repeat(shadow.reshape(16, 20), 16, 0), 16, 1)
    noise = np.random.default_rng(seed + 9).integers(-3, 4, rgb.shape)
    rgb[shadow] = np.clip(np.array([20, 25, 40]) + noise[shadow], 0, 255)
    return rgb, shadow


def test_shadow_field_vari_mean_is_the_mean_without_the_shadow():
    """Pins the VARI mean of 3,936 on a field with 10 % shadow: now within 0.02 of the mean computed
    with the shadow pixels left out, and the shadow is reported as the invalid share."""
    rgb, shadow = shadow_field()
    params = cp.ComputeParams.from_spec(DroneJob(healthMapMaxSize=64))
    with_shadow = cp.compute_numpy(rgb_frame(rgb), params).stats["VARI"]
    without = cp.compute_numpy(rgb_frame(rgb, nodata=shadow), params).stats["VARI"]
    assert abs(with_shadow.mean - without.mean) <= 0.02
    share = with_shadow.invalid_pixels / (with_shadow.valid_pixels + with_shadow.invalid_pixels)
    assert share == pytest.approx(0.10, abs=0.01)
    # The other RGB indices stay sane too (their denominators are large on shadow).
    for name in ("GLI", "ExG", "TGI"):
        assert abs(cp.compute_numpy(rgb_frame(rgb), params).stats[name].mean) < 1


def test_reflectance_zero_denominator_is_exact_too():
    """Float input: a zero denominator is exact in its own units (no rescaling), and NaN bands are invalid."""
    b = np.array([[0.0, 0.3, np.nan]], np.float32)
    planes = {"R": b.copy(), "G": b.copy(), "B": np.array([[0.0, 0.6, 0.1]], np.float32)}
    out = cp.compute_numpy(Decoded(planes, None), cp.ComputeParams(indices=("VARI",), min_denominator=0.0))
    assert out.stats["VARI"].invalid_pixels == 3 and out.stats["VARI"].valid_pixels == 0
