"""Health statistics on synthetic fields whose vegetation and stressed fractions are known exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.pipeline import Paths, run_process


def _result(stats, key):
    return next(i for i in stats.items if i["key"] == key)


@pytest.mark.parametrize("name", ["field.jpg", "field.png", "field.tif"])
def test_rgb_field_cover_and_stressed_match_truth(data_dir: Path, spec, engine, name):
    labels, truth = sm.field_labels(256, 320, 0.42, 0.3, seed=5)
    sm.write_rgb(data_dir / "input" / name, sm.rgb_field(labels, seed=5), gps=(-33.5, -70.25, 512.5))
    stats = run_process(spec, Paths.resolve(spec, data_dir), engine)
    frame = _result(stats, name)["frames"][0]
    assert frame["primary"] == "GLI"
    tolerance = 0.005 if name.endswith(".jpg") else 1e-9  # JPEG may move a few edge pixels
    assert frame["cover"] == pytest.approx(truth.vegetation_fraction, abs=tolerance)
    assert frame["stressed"] == pytest.approx(truth.stressed_fraction, abs=tolerance)
    for index in ("VARI", "ExG", "TGI"):  # the default thresholds separate the classes for every RGB index
        assert frame["indices"][index]["cover"] == pytest.approx(truth.vegetation_fraction, abs=tolerance)
        assert frame["indices"][index]["stressed"] == pytest.approx(truth.stressed_fraction, abs=tolerance)
    if name.endswith(".jpg"):  # GPS is read from JPEG and TIFF EXIF (multispectral test below)
        assert frame["gps"] == pytest.approx({"lat": -33.5, "lon": -70.25, "alt": 512.5}, abs=1e-6)


@pytest.mark.parametrize("writer,key", [(sm.write_micasense, "ms/IMG_0007"), (sm.write_dji_ms, "ms/DJI_007")])
def test_multispectral_capture_ndvi_matches_truth(data_dir: Path, spec, engine, writer, key):
    labels, truth = sm.field_labels(160, 192, 0.55, 0.35, seed=9)
    writer(data_dir / "input" / "ms", 7, labels, gps=(52.1, 5.2, 80.0))
    stats = run_process(spec, Paths.resolve(spec, data_dir), engine)
    item = _result(stats, key)
    assert item["ok"], item
    frame = item["frames"][0]
    assert frame["primary"] == "NDVI" and set(frame["indices"]) == {
        "VARI", "GLI", "ExG", "TGI", "NDVI", "NDRE", "GNDVI", "SAVI"}
    assert frame["cover"] == pytest.approx(truth.vegetation_fraction, abs=1e-9)
    assert frame["stressed"] == pytest.approx(truth.stressed_fraction, abs=1e-9)
    assert frame["gps"] == pytest.approx({"lat": 52.1, "lon": 5.2, "alt": 80.0}, abs=1e-6)
    # Healthy NDVI is (0.5-0.04)/(0.54) = 0.852: p90 sits on the healthy class.
    assert frame["indices"]["NDVI"]["p90"] == pytest.approx(0.852, abs=0.02)


def test_band_swap_would_be_caught(data_dir: Path, spec, engine):
    """Pins the MicaSense/DJI difference: DJI's band 4 is red-edge and 5 NIR (MicaSense: 4 NIR, 5 red-edge).
    Writing DJI names with MicaSense's order would give NDVI from red-edge, which this detects."""
    labels, truth = sm.field_labels(64, 64, 1.0, 0.0, seed=1)
    sm.write_dji_ms(data_dir / "input", 1, labels)
    stats = run_process(spec, Paths.resolve(spec, data_dir), engine)
    ndvi = _result(stats, "DJI_001")["frames"][0]["indices"]["NDVI"]["mean"]
    assert ndvi == pytest.approx((0.50 - 0.04) / 0.54, abs=0.02)
