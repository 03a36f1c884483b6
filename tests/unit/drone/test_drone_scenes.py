"""Thresholds and zoning that hold on realistic scenes (issue 14, item 2 and 3).

Scenes are synthetic with known classes: soil, healthy crop (NDVI 0.85) and stressed crop at
several levels of moderate stress (NDVI 0.4 to 0.6), rendered as a MicaSense-style 16-bit
capture and as an 8-bit camera photo of the same reflectances. Before issue 14 the NDVI
headline said 0 % stressed on such captures, NDRE and GNDVI counted bare soil as vegetation
and TGI counted nothing on reflectance.
"""

from __future__ import annotations

import numpy as np
import pytest

from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.decode import Decoded

SOIL, HEALTHY, STRESSED = sm.SOIL, sm.HEALTHY, sm.STRESSED
NOISE = 0.002  # reflectance, about a multispectral camera's noise on crop
TOLERANCE = 0.05  # 5 points: the stated agreement of RGB with multispectral, and of NDVI with the truth
PARAMS = cp.ComputeParams.from_spec(DroneJob(healthMapMaxSize=64))


def stressed_spectrum(ndvi: float) -> dict[str, float]:
    """Moderately stressed crop at a given NDVI: chlorosis raises red and green, NIR drops."""
    red = 0.04 + 0.2 * (0.85 - ndvi)
    green = 0.10 + 0.05 * (0.6 - ndvi)
    return {"B": 0.05, "G": green, "R": red, "N": red * (1 + ndvi) / (1 - ndvi), "RE": 0.21}


def scene(stressed_ndvi: float, cover: float, stressed_share: float, seed: int):
    labels, truth = sm.field_labels(192, 256, cover, stressed_share, seed=seed)
    spectra = {SOIL: sm.MS_REFLECTANCE[SOIL], HEALTHY: sm.MS_REFLECTANCE[HEALTHY],
               STRESSED: stressed_spectrum(stressed_ndvi)}
    return sm.reflectance_planes(labels, spectra, noise=NOISE, seed=seed), truth


def ms(planes) -> cp.Computed:
    return cp.compute_numpy(Decoded(sm.to_dn16(planes), 65535.0), PARAMS)


def photo(planes) -> cp.Computed:
    rgb = sm.camera_rgb(planes)
    return cp.compute_numpy(Decoded({"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}, 255.0), PARAMS)


CASES = [(0.4, 0.5, 0.45, 1), (0.5, 0.6, 0.53, 2), (0.56, 0.55, 0.41, 3), (0.6, 0.4, 0.2, 4), (0.5, 0.7, 0.1, 5)]


@pytest.mark.parametrize("stressed_ndvi,cover,share,seed", CASES)
def test_ndvi_default_mode_reports_known_stressed_share(stressed_ndvi, cover, share, seed):
    """16-bit DN without calibration -> relative zoning by default; the stressed share is found."""
    planes, truth = scene(stressed_ndvi, cover, share, seed)
    out = ms(planes)
    ndvi = out.stats["NDVI"]
    assert out.primary == "NDVI" and ndvi.zoning == "relative"
    assert ndvi.cover == pytest.approx(truth.vegetation_fraction, abs=TOLERANCE)
    assert ndvi.stressed == pytest.approx(truth.stressed_fraction, abs=TOLERANCE)


@pytest.mark.parametrize("stressed_ndvi,cover,share,seed", CASES)
def test_rgb_photo_tells_the_same_story_as_multispectral(stressed_ndvi, cover, share, seed):
    planes, _ = scene(stressed_ndvi, cover, share, seed)
    m, p = ms(planes).stats["NDVI"], photo(planes)
    assert p.primary == "GLI"
    gli = p.stats["GLI"]
    assert gli.cover == pytest.approx(m.cover, abs=TOLERANCE)
    assert gli.stressed == pytest.approx(m.stressed, abs=TOLERANCE)


def test_absolute_mode_on_calibrated_reflectance_finds_moderate_stress():
    """Float reflectance -> absolute cuts by default; NDVI 0.56 beside 0.85 is stressed (cut 0.6)."""
    planes, truth = scene(0.56, 0.55, 0.41, 3)
    out = cp.compute_numpy(Decoded(planes, None), PARAMS)
    ndvi = out.stats["NDVI"]
    assert ndvi.zoning == "absolute" and ndvi.stressed_cut == pytest.approx(0.6)
    assert ndvi.stressed == pytest.approx(truth.stressed_fraction, abs=TOLERANCE)
    assert out.stats["TGI"].cover == pytest.approx(truth.vegetation_fraction, abs=TOLERANCE)  # was 0


# Typical soil spectra (reflectance at 475/560/668/717/842 nm): dry loam, dark moist soil, bright sand;
# after the shapes of soil curves in the USGS spectral library (splib07). Red (iron-rich) clays are not
# here on purpose: their green is so low that GNDVI reaches ~0.5, like stressed crop (docs/drone.md).
SOILS = {
    "dry loam": {"B": 0.06, "G": 0.09, "R": 0.13, "RE": 0.16, "N": 0.19},
    "dark moist": {"B": 0.03, "G": 0.04, "R": 0.06, "RE": 0.065, "N": 0.075},
    "bright sand": {"B": 0.20, "G": 0.26, "R": 0.32, "RE": 0.35, "N": 0.40},
}


@pytest.mark.parametrize("soil", SOILS)
@pytest.mark.parametrize("as_dn", [True, False])
def test_soil_is_never_vegetation(soil, as_dn):
    """Pins NDRE (cut 0.05) and GNDVI (cut 0.2) counting bare soil as 100 % vegetation."""
    labels = np.zeros((64, 64), np.uint8)
    planes = sm.reflectance_planes(labels, {SOIL: SOILS[soil]}, noise=NOISE, seed=1)
    out = cp.compute_numpy(Decoded(sm.to_dn16(planes), 65535.0) if as_dn else Decoded(planes, None), PARAMS)
    for name in ("NDVI", "NDRE", "GNDVI", "SAVI", "GLI", "ExG", "TGI", "VARI"):
        assert out.stats[name].cover == 0.0, name


def test_yellowing_crop_is_vegetation_for_vari():
    """Pins VARI's old vegetation cut (0.05), which classed yellowing crop with G ~ R as soil."""
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16] = (150, 152, 60)  # yellowing crop
    rgb[16:] = (140, 110, 80)  # brown soil
    out = cp.compute_numpy(Decoded({"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}, 255.0), PARAMS)
    assert out.stats["VARI"].cover == 0.5 and out.stats["GLI"].cover == 0.5
