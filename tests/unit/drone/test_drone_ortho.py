"""Orthomosaics (issue 18): windowed reading, per-pixel classes as a COG, zones as GeoJSON.

Small synthetic mosaics (thresher/demo/fakes/orthomosaic.py, 512-1024 px, 5 cm pixels in
EPSG:32633) with known patches; the outputs are checked with Debian's gdalinfo and ogrinfo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import rasterio

from thresher.api.drone import DroneJob
from thresher.demo.fakes import orthomosaic as om
from thresher.jobs.drone import compute as cp
from thresher.jobs.drone import healthmap as hm
from thresher.jobs.drone import ortho
from thresher.jobs.drone.decode import BadInput, Decoded
from thresher.jobs.drone.pipeline import Paths, run_process

SPEC = DroneJob.model_validate({"workers": 1, "healthMapMaxSize": 64, "orthomosaic": {"minZoneAreaM2": 1}})
PARAMS = cp.ComputeParams.from_spec(SPEC)


def run(path: Path, out: Path, spec: DroneJob = SPEC) -> dict:
    return ortho.process(path, path.name, spec, cp.ComputeParams.from_spec(spec), out)


def tool_json(*argv: str) -> dict:
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


# --- decisions --------------------------------------------------------------------------------

def test_band_layout_from_descriptions_colorinterp_and_band_map():
    assert ortho.band_layout(4, ["gray"] * 4, ["Blue", "Green", "Red", "NIR"], [], "m").bands == \
        {"B": 1, "G": 2, "R": 3, "N": 4}
    rgba = ortho.band_layout(4, ["red", "green", "blue", "alpha"], [None] * 4, [], "m")
    assert rgba.bands == {"R": 1, "G": 2, "B": 3} and rgba.alpha == 4
    mapped = ortho.band_layout(5, ["gray"] * 5, [None] * 5, ["N", "R", "ignore", "G", "alpha"], "m")
    assert mapped.bands == {"N": 1, "R": 2, "G": 4} and mapped.alpha == 5


def test_unknown_band_layout_is_refused_naming_count_and_setting():
    """Bug pinned: a 4-band mosaic without band names must not be guessed as some camera's order."""
    with pytest.raises(BadInput, match=r"4 band\(s\).*set orthomosaic.bands.*\[R, G, B, N\]"):
        ortho.band_layout(4, ["gray", "undefined", "undefined", "undefined"], [None] * 4, [], "m.tif")
    with pytest.raises(BadInput, match="has 4 band.*lists 3"):
        ortho.band_layout(4, ["gray"] * 4, [None] * 4, ["R", "G", "B"], "m.tif")
    with pytest.raises(BadInput, match="names a band twice"):
        ortho.band_layout(3, ["gray"] * 3, [None] * 3, ["R", "R", "B"], "m.tif")


def test_cell_summary_modes_and_pixel_moments():
    classes = np.array([[1, 1, 3, 3], [1, 3, 3, 3], [0, 0, 2, 2], [0, 3, 3, 3]], dtype=np.uint8)
    modes, moments = ortho.cell_summary(classes, 2, 2)
    assert modes.tolist() == [[1, 3], [0, 2]]  # tie 2-2 goes to the lower code
    count, dx, dy = moments[hm.STRESSED]
    assert count.tolist() == [[0, 0], [0, 2]] and dx[1, 1] == 0.5 + 1.5 and dy[1, 1] == 0.5 + 0.5
    assert ortho.cell_summary(classes[:3], 2, 2)[0].tolist() == [[1, 3]]  # whole cells only


def test_ring_marks_the_cells_around_each_zone():
    ids = np.zeros((4, 5), dtype=np.int32)
    ids[1, 1] = 7
    got = ortho.ring(ids)
    assert got[0:3, 0:3].sum() == 7 * 9 - 7 and got[1, 1] == 0 and got[3].sum() == 0 and got[:, 3:].sum() == 0


def test_zone_factor_strip_rows_and_space():
    assert ortho.zone_factor(20000, 20000, 16_000_000) == 8
    assert ortho.zone_factor(512, 512, 16_000_000) == 1
    rows = ortho.strip_rows(20000, 20000, 4, 2, 512, 8)
    assert rows % 8 == 0 and rows * 20000 * 4 * 2 <= ortho.STRIP_BYTES and rows == 512
    assert ortho.strip_rows(50000, 50000, 5, 2, 512, 16) % 16 == 0
    with pytest.raises(BadInput, match=r"need up to 2019 MiB but /data has 100 MiB free"):
        ortho.check_space(ortho.output_bytes_needed(30000, 30000), 100 * 2**20, "m.tif", Path("/data"))
    assert ortho.utm_epsg(15.2, 45.1) == 32633 and ortho.utm_epsg(-70.5, -33.4) == 32719


# --- one mosaic -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> om.Mosaic:
    return om.write(tmp_path_factory.mktemp("ortho") / "field.tif", size=1024, tile=256)


@pytest.fixture(scope="module")
def processed(mosaic: om.Mosaic, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("out")
    return run(mosaic.path, out), out


def test_statistics_over_windows_equal_the_photo_pass_over_the_whole_array(mosaic, processed):
    """One source of truth: the mosaic read in strips gives the statistics of the whole array in one pass."""
    result, _ = processed
    with rasterio.open(mosaic.path) as ds:
        arr = ds.read()
    whole = cp.compute_numpy(Decoded({b: arr[i] for i, b in enumerate(["B", "G", "R", "N"])}, 65535.0, None, None,
                                     width=1024, height=1024), PARAMS)
    frame = result["frames"][0]
    assert frame["pixels"] == 1024 * 1024
    assert frame["indices"] == {n: s.to_dict() for n, s in whole.stats.items()}


def test_class_cog_layout_crs_overviews_and_colours(processed):
    result, out = processed
    info = tool_json("gdalinfo", "-json", str(out / result["orthomosaic"]["classes"]))
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["stac"]["proj:epsg"] == 32633
    band = info["bands"][0]
    assert band["block"] == [512, 512] and len(band["overviews"]) >= 1
    assert band["colorInterpretation"] == "Palette" and band["noDataValue"] == 0
    assert [e[:3] for e in band["colorTable"]["entries"][:4]] == [list(c) for c in hm.PALETTE[:4]]
    assert info["geoTransform"] == [500000.0, 0.05, 0.0, 5000000.0, 0.0, -0.05]


def test_class_pixels_count_what_the_statistics_count(processed):
    """The per-pixel classes and the statistics come from the same cuts: their counts agree exactly."""
    result, out = processed
    with rasterio.open(out / result["orthomosaic"]["classes"]) as ds:
        classes = ds.read(1)
    ndvi = result["frames"][0]["indices"]["NDVI"]
    counts = np.bincount(classes.ravel(), minlength=4)
    assert counts[hm.STRESSED] == ndvi["stressed_pixels"]
    assert counts[hm.STRESSED] + counts[hm.HEALTHY] == ndvi["vegetation_pixels"]
    assert counts[hm.NODATA] == 0


def test_zones_geojson_areas_centroids_and_ogrinfo(mosaic, processed):
    result, out = processed
    path = out / result["orthomosaic"]["zones"]
    zones = json.loads(path.read_text())
    assert "crs" not in zones  # RFC 7946: WGS84 lon/lat only
    feats = zones["features"]
    assert len(feats) == len(mosaic.patches) == result["orthomosaic"]["zone_count"]
    for patch in mosaic.patches:
        col, row = patch.centroid
        z = min(feats, key=lambda f: (f["properties"]["centroid_col"] - col) ** 2
                + (f["properties"]["centroid_row"] - row) ** 2)["properties"]
        assert z["class"] == patch.kind
        assert z["area_m2"] == pytest.approx(patch.pixels * mosaic.pixel_m ** 2, abs=0.006)  # grid = pixels here
        assert abs(z["centroid_col"] - col) < 0.01 and abs(z["centroid_row"] - row) < 0.01
        assert z["mean_index"] == pytest.approx(om.NDVI_STRESSED if patch.kind == "stressed" else om.NDVI_BARE,
                                                abs=0.002)
        assert 15.0 < z["centroid_lon"] < 15.01 and 45.1 < z["centroid_lat"] < 45.2
    info = subprocess.run(["ogrinfo", "-so", "-al", str(path)], check=True, capture_output=True, text=True).stdout
    assert "using driver `GeoJSON' successful" in info and "Geometry: Polygon" in info
    assert f"Feature Count: {len(feats)}" in info and 'ID["EPSG",4326]' in info
    assert "area_m2: Real" in info and "mean_index: Real" in info
    report = (out / result["orthomosaic"]["report"]).read_text()
    assert "Largest zones (6 of 6)" in report and "map.png" in report


def test_coarse_zone_grid_keeps_areas_and_centroids(mosaic, tmp_path):
    """Zones traced on a reduced grid (f = 4 here) measure the patches to within their outline's cells: an
    edge moves by at most half a cell (f / 2 px), so the area by at most perimeter x f / 2 (here up to 6 %
    on patches 60-250 px across; 2 % at field scale: benchmarks/ortho_bench.py); centroids within 2 px.
    Bug pinned: cells classified by their mean index put a ring of "stressed" cells around bare soil
    (half soil, half healthy averages to a stressed value); cells take their most frequent class."""
    spec = SPEC.model_copy(update={"orthomosaic": SPEC.orthomosaic.model_copy(
        update={"zone_grid_max_pixels": 70_000})})
    result = run(mosaic.path, tmp_path, spec)
    assert result["orthomosaic"]["zone_cell_pixels"] == 4
    feats = json.loads((tmp_path / result["orthomosaic"]["zones"]).read_text())["features"]
    assert sorted(f["properties"]["class"] for f in feats) == sorted(p.kind for p in mosaic.patches)
    for patch in mosaic.patches:
        col, row = patch.centroid
        z = min(feats, key=lambda f: (f["properties"]["centroid_col"] - col) ** 2
                + (f["properties"]["centroid_row"] - row) ** 2)["properties"]
        perimeter = 2 * (patch.a + patch.b) if patch.shape == "rect" else 2 * np.pi * patch.a
        assert abs(z["area_m2"] / mosaic.pixel_m ** 2 - patch.pixels) <= perimeter * 4 / 2
        assert abs(z["centroid_col"] - col) < 2 and abs(z["centroid_row"] - row) < 2


# --- bad input --------------------------------------------------------------------------------

def test_no_crs_is_processed_but_not_georeferenced(tmp_path):
    m = om.write(tmp_path / "plain.tif", size=512, crs=None)
    spec = SPEC.model_copy(update={"orthomosaic": SPEC.orthomosaic.model_copy(update={"min_pixels": 1000})})
    result = run(m.path, tmp_path / "out", spec)
    assert result["orthomosaic"]["zones"] is None and result["orthomosaic"]["georeferenced"] is False
    assert any("zones cannot be georeferenced" in w for w in result["warnings"])
    assert (tmp_path / "out" / result["orthomosaic"]["classes"]).is_file()


def test_unknown_layout_file_is_refused(tmp_path):
    m = om.write(tmp_path / "nameless.tif", size=256, tile=256, describe=False)
    with pytest.raises(BadInput, match=r"unknown band layout \(4 band\(s\)"):
        run(m.path, tmp_path / "out")
    spec = SPEC.model_copy(update={"orthomosaic": SPEC.orthomosaic.model_copy(update={"bands": ["B", "G", "R", "N"]})})
    assert run(m.path, tmp_path / "out", spec)["frames"][0]["primary"] == "NDVI"


def test_alpha_zero_is_no_data(tmp_path):
    m = om.write(tmp_path / "alpha.tif", size=512, alpha=True, nodata_border=16)
    result = run(m.path, tmp_path / "out")
    assert result["frames"][0]["nodata"] == 512 * 512 - 480 * 480
    assert result["frames"][0]["indices"]["NDVI"]["valid_pixels"] == 480 * 480


def test_corrupt_tile_is_reported_and_the_rest_processed(tmp_path):
    """A tile that does not decode costs its own pixels, not the mosaic."""
    import tifffile

    m = om.write(tmp_path / "broken.tif", size=1024, tile=256)
    with tifffile.TiffFile(m.path) as tif:
        offset, size = tif.pages[0].dataoffsets[5], tif.pages[0].databytecounts[5]
    with open(m.path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)
    result = run(m.path, tmp_path / "out")
    bad = result["orthomosaic"]["bad_windows"]
    assert [(b["col_off"], b["row_off"], b["width"], b["height"]) for b in bad] == [(256, 256, 256, 256)]
    assert result["frames"][0]["nodata"] == 256 * 256
    assert result["frames"][0]["indices"]["NDVI"]["valid_pixels"] == 1024 * 1024 - 256 * 256
    assert any("could not be decoded" in w for w in result["warnings"])


def test_not_enough_space_fails_before_writing(mosaic, tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(ortho.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(BadInput, match=r"outputs need up to \d+ MiB but .* has 1 MiB free; nothing was written"):
        run(mosaic.path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


# --- through the job ----------------------------------------------------------------------------

def test_process_task_takes_orthomosaics_and_still_photos(tmp_path):
    """A georeferenced TIFF in the input folder is an orthomosaic item; a small plain TIFF stays a photo."""
    (tmp_path / "input").mkdir()
    om.write(tmp_path / "input" / "field.tif", size=512)
    om.write(tmp_path / "input" / "photo.tif", size=256, tile=256, crs=None)
    spec = SPEC
    stats = run_process(spec, Paths.resolve(spec, tmp_path))
    items = {i["key"]: i for i in stats.items}
    assert items["field.tif"]["kind"] == "orthomosaic" and items["field.tif"]["ok"]
    assert items["photo.tif"]["kind"] == "image" and items["photo.tif"]["ok"]
    assert (tmp_path / "output" / "orthomosaics" / "field.tif" / "classes.tif").is_file()
    assert not list((tmp_path / "output").rglob("*.tmp"))
    assert shutil.which("gdalinfo")  # make tools installs gdal-bin
