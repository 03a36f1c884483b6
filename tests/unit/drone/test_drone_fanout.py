"""Fan-out (issue 18, point 3): one process run split over N indexes, merged by the last one.

The shards run here as in an Indexed Job's pods: the same spec and data folder, their own
JOB_COMPLETION_INDEX, one run id; the merged outputs are compared with one process's on the same
synthetic orthomosaic (thresher/demo/fakes/orthomosaic.py) and photos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from thresher.api.drone import DroneJob
from thresher.demo.fakes import drone_fields as df
from thresher.demo.fakes import orthomosaic as om
from thresher.jobs.drone import ortho
from thresher.jobs.drone import shards as sh
from thresher.jobs.drone.cli import process_result
from thresher.jobs.drone.pipeline import Paths, run_process
from thresher.jobs.harness import ConfigError

SPEC = DroneJob.model_validate({"workers": 1, "healthMapMaxSize": 64, "orthomosaic": {"minZoneAreaM2": 1}})
ROOT = Path(__file__).resolve().parents[3]


# --- decisions --------------------------------------------------------------------------------

def test_photo_shards_are_a_stable_hash_of_the_key():
    keys = [f"flight/IMG_{i:04d}.JPG" for i in range(400)]
    owners = [sh.shard_of_key(k, 4) for k in keys]
    assert owners == [sh.shard_of_key(k, 4) for k in keys]  # deterministic
    assert sh.shard_of_key("flight/IMG_0000.JPG", 4) == 1  # pinned: SHA-256, not Python's salted hash()
    assert all(60 <= owners.count(i) <= 140 for i in range(4))  # spread, each index gets work
    assert {sh.shard_of_key(k, 1) for k in keys} == {0}


@pytest.mark.parametrize("height,rows,count", [(20_000, 512, 2), (20_000, 512, 3), (1000, 256, 4),
                                               (300, 256, 3), (513, 256, 7)])
def test_mosaic_spans_cover_every_row_once_in_whole_strips(height, rows, count):
    spans = [ortho.shard_span(height, rows, i, count) for i in range(count)]
    assert spans[0][0] == 0 and spans[-1][1] == height
    for (_, end), (first, _) in zip(spans, spans[1:]):
        assert end == first  # contiguous, disjoint
    for first, end in spans:
        assert first % rows == 0 and (end % rows == 0 or end == height)
    sizes = sorted(-(-(end - first) // rows) for first, end in spans)
    assert sizes[-1] - sizes[0] <= 1  # balanced to one strip


def test_shard_from_the_pod_environment_or_a_clear_error():
    assert sh.from_env(1, {}) is None
    shard = sh.from_env(3, {"JOB_COMPLETION_INDEX": "2", "THRESHER_RUN_ID": "ortho-29000000"})
    assert shard == sh.Shard(2, 3, "ortho-29000000") and shard.state_dir(Path("s")) == Path("s/shard-2-of-3")
    with pytest.raises(ConfigError, match=r"JOB_COMPLETION_INDEX between 0 and 2.*'3'"):
        sh.from_env(3, {"JOB_COMPLETION_INDEX": "3", "THRESHER_RUN_ID": "r"})
    with pytest.raises(ConfigError, match="THRESHER_RUN_ID"):
        sh.from_env(3, {"JOB_COMPLETION_INDEX": "0"})


def test_parallelism_is_for_the_process_task_only():
    with pytest.raises(ValueError, match="task process only"):
        DroneJob.model_validate({"task": "report", "parallelism": 2})
    assert DroneJob.model_validate({"parallelism": 64}).parallelism == 64


# --- N shards + merge against one process ---------------------------------------------------------

def make_inputs(folder: Path, mosaic: Path | None = None) -> None:
    (folder / "input").mkdir(parents=True)
    if mosaic is None:
        om.write(folder / "input" / "field.tif", size=1024, tile=256)
    else:
        shutil.copy2(mosaic, folder / "input" / "field.tif")
    labels, _ = df.field_labels(64, 96, 0.6, 0.3, seed=1)
    for i in range(6):
        df.write_rgb(folder / "input" / f"photo_{i}.png", df.rgb_field(labels, seed=i))


def run_shards(folder: Path, count: int, order: list[int] | None = None, run_id: str = "ortho-1") -> dict:
    out = {}
    for i in order if order is not None else range(count):
        out[i] = run_process(SPEC, Paths.resolve(SPEC, folder), shard=sh.Shard(i, count, run_id))
    return out


@pytest.fixture(scope="module")
def single_and_fanned(tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("fanout")
    one, fan = base / "one", base / "fan"
    make_inputs(one)
    make_inputs(fan, one / "input" / "field.tif")
    run_process(SPEC, Paths.resolve(SPEC, one))
    return one, fan, run_shards(fan, 3)


def summary_of(folder: Path) -> dict:
    return json.loads(next((folder / "output" / "runs").glob("*/summary.json")).read_text())


def test_merged_statistics_equal_one_process(single_and_fanned):
    one, fan, _ = single_and_fanned
    a = json.loads((one / "output/items/field.tif.json").read_text())["frames"][0]
    b = json.loads((fan / "output/items/field.tif.json").read_text())["frames"][0]
    assert (a["pixels"], a["nodata"], a["saturated"]) == (b["pixels"], b["nodata"], b["saturated"])
    for name, sa in a["indices"].items():
        sb = b["indices"][name]
        for key in ("valid_pixels", "invalid_pixels", "cover", "stressed", "p10", "median", "p90", "stressed_cut"):
            if key in sa:
                assert sa[key] == sb[key], (name, key)
        assert sa["mean"] == pytest.approx(sb["mean"], abs=1e-9)  # float sums in another order only


def test_merged_class_cog_and_zones_equal_one_process(single_and_fanned):
    """Zones crossing the shard borders (rows 256 and 512 of this 1,024 px mosaic) merge: the merge
    classifies and traces the whole mosaic once, so areas and centroids equal one process's."""
    one, fan, _ = single_and_fanned
    path = "output/orthomosaics/field.tif/"
    with rasterio.open(one / path / "classes.tif") as a, rasterio.open(fan / path / "classes.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and a.overviews(1) == b.overviews(1)
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(fan / path / "classes.tif")], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG" and info["stac"]["proj:epsg"] == 32633
    za = json.loads((one / path / "zones.geojson").read_text())["features"]
    zb = json.loads((fan / path / "zones.geojson").read_text())["features"]
    assert len(za) == len(zb) >= 6
    spans = [ortho.shard_span(1024, 256, i, 3) for i in range(3)]
    assert any(z["properties"]["centroid_row"] - 50 < spans[0][1] < z["properties"]["centroid_row"] + 50
               for z in zb)  # some zone straddles a shard border
    for fa, fb in zip(za, zb):
        pa, pb = fa["properties"], fb["properties"]
        assert pb["area_m2"] == pytest.approx(pa["area_m2"], rel=0.02)
        assert abs(pb["centroid_col"] - pa["centroid_col"]) <= 2 and abs(pb["centroid_row"] - pa["centroid_row"]) <= 2


def test_every_input_once_and_the_run_counts_all_shards(single_and_fanned):
    one, fan, stats = single_and_fanned
    keys = sorted(i["key"] for i in summary_of(one)["results"])
    merged = summary_of(fan)
    assert sorted(i["key"] for i in merged["results"]) == keys and merged["items"] == len(keys) == 7
    assert (fan / "output/runs/ortho-1/summary.json").is_file()
    # Each index counts its own photos; the last one also the mosaic it merged.
    results = [process_result(s.items, None, 0.0, []) for s in stats.values()]
    assert sum(r.items for r in results) == len(keys) and sum(r.valid for r in results) == len(keys)
    assert [i["key"] for i in stats[2].items if i["kind"] == "orthomosaic"] == ["field.tif"]
    assert all(i["kind"] != "orthomosaic" for s in (stats[0], stats[1]) for i in s.items)
    for i, s in stats.items():
        photos = {r["key"] for r in s.items if r["kind"] == "image"}
        assert photos == {k for k in keys if k != "field.tif" and sh.shard_of_key(k, 3) == i}
        assert (fan / "state" / f"shard-{i}-of-3" / "drone.sqlite").is_file()
    assert not list((fan / "output").rglob("*.tmp"))
    # The shards' parts are dropped once merged; the marker stays, so the merge is never repeated.
    parts = [p.name for p in (fan / "output/orthomosaics/field.tif/.parts").rglob("*") if p.is_file()]
    assert parts == ["merged.json"]


def test_a_rerun_of_every_index_does_nothing_again(single_and_fanned):
    """Exactly once per shard: each index's own state says done; the merge is marked and not repeated."""
    _, fan, _ = single_and_fanned
    again = run_shards(fan, 3, run_id="ortho-2")
    assert all(s.items == [] for s in again.values())
    assert all(s.summary_path is None for s in again.values())
    assert not (fan / "output/runs/ortho-2/summary.json").exists()


def test_a_failed_index_leaves_no_merge_until_it_succeeds(tmp_path, single_and_fanned):
    """Index 1 dies (no run file): indexes 0 and 2 finish, nothing is merged or half-written; the retried
    index 1 finds every part and merges."""
    one, _, _ = single_and_fanned
    make_inputs(tmp_path, one / "input" / "field.tif")
    first = run_shards(tmp_path, 3, order=[0, 2])
    assert all(s.summary_path is None for s in first.values())
    assert not (tmp_path / "output/orthomosaics/field.tif/classes.tif").exists()
    retried = run_shards(tmp_path, 3, order=[1])
    assert retried[1].summary_path == tmp_path / "output/runs/ortho-1/summary.json"
    assert [i["key"] for i in retried[1].items if i["kind"] == "orthomosaic"] == ["field.tif"]
    assert summary_of(tmp_path)["items"] == 7


def test_a_mosaic_no_shard_can_read_fails_once_with_its_reason(tmp_path):
    (tmp_path / "input").mkdir()
    with rasterio.open(tmp_path / "input" / "odd.tif", "w", driver="GTiff", width=64, height=64, count=4,
                       dtype="uint16", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(5e5, 5e6, 0.05, 0.05)) as dst:
        dst.write(np.ones((4, 64, 64), dtype=np.uint16))
    stats = run_shards(tmp_path, 2)
    failed = [i for s in stats.values() for i in s.items if not i["ok"]]
    assert len(failed) == 1 and "unknown band layout (4 band(s)" in failed[0]["reason"]
    assert process_result(stats[1].items, None, 0.0, []).exit_code == 5


def test_shard_processes_in_parallel_merge_once(tmp_path, single_and_fanned):
    """Two real CLI processes (as two pods: JOB_COMPLETION_INDEX, THRESHER_RUN_ID) started together: one
    of them merges, under the run's merge lock; the outputs equal one process's."""
    one, _, _ = single_and_fanned
    make_inputs(tmp_path, one / "input" / "field.tif")
    spec = json.dumps({**SPEC.model_dump(by_alias=True), "parallelism": 2})
    procs = []
    for i in range(2):
        env = {**os.environ, "JOB_COMPLETION_INDEX": str(i), "THRESHER_RUN_ID": "ortho-7",
               "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "thresher.cli", "job", "drone", "run", "--spec", spec, "--data-dir", str(tmp_path),
             "--result-path", str(tmp_path / f"result-{i}.json")], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    results = [json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2)]
    assert sum(r["items"] for r in results) == 7
    assert [bool(r.get("output")) for r in results].count(True) == 1  # one merger wrote the summary
    za = json.loads((one / "output/orthomosaics/field.tif/zones.geojson").read_text())
    zb = json.loads((tmp_path / "output/orthomosaics/field.tif/zones.geojson").read_text())
    assert [f["properties"]["area_m2"] for f in za["features"]] == [f["properties"]["area_m2"] for f in zb["features"]]


# --- EXIF GPS points (issue 18, point 1) ---------------------------------------------------------

def test_photos_with_exif_gps_become_points_in_the_run_geojson(tmp_path):
    """A JPEG written with a GPS IFD (Pillow) is a Point at its lon/lat/alt; a photo without GPS is not."""
    (tmp_path / "input").mkdir()
    labels, _ = df.field_labels(48, 64, 0.6, 0.3, seed=2)
    df.write_rgb(tmp_path / "input" / "north.jpg", df.rgb_field(labels), gps=(52.0912345, 5.1234567, 12.5))
    df.write_rgb(tmp_path / "input" / "south.jpg", df.rgb_field(labels), gps=(-33.8567844, -70.6482, -3.0))
    df.write_rgb(tmp_path / "input" / "nogps.jpg", df.rgb_field(labels))
    stats = run_process(SPEC, Paths.resolve(SPEC, tmp_path))
    doc = json.loads((stats.summary_path.parent / "photos.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    points = {f["properties"]["key"]: f for f in doc["features"]}
    assert set(points) == {"north.jpg", "south.jpg"}
    lon, lat, alt = points["north.jpg"]["geometry"]["coordinates"]
    assert points["north.jpg"]["geometry"]["type"] == "Point"
    assert (lon, lat, alt) == (pytest.approx(5.1234567, abs=1e-6), pytest.approx(52.0912345, abs=1e-6), 12.5)
    lon, lat, alt = points["south.jpg"]["geometry"]["coordinates"]
    assert lon == pytest.approx(-70.6482, abs=1e-6) and lat == pytest.approx(-33.8567844, abs=1e-6) and alt == -3.0
    props = points["north.jpg"]["properties"]
    assert props["index"] == "GLI" and 0 <= props["cover"] <= 1 and props["map"] == "maps/north.jpg.png"
    # The independent reader (gdal-bin, installed by make tools, as the orthomosaic tests need it).
    out = subprocess.run(["ogrinfo", "-ro", "-al", "-so", str(stats.summary_path.parent / "photos.geojson")],
                         capture_output=True, text=True, check=True).stdout
    assert "Feature Count: 2" in out and "Point" in out


def test_a_shard_without_its_index_or_in_watch_mode_is_a_config_error(tmp_path, monkeypatch):
    from thresher.jobs.drone.cli import execute

    (tmp_path / "input").mkdir()
    spec = DroneJob.model_validate({"parallelism": 2})
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    result = execute(spec, tmp_path)
    assert result.exit_code == 2 and "JOB_COMPLETION_INDEX" in result.error
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("THRESHER_RUN_ID", "r")
    result = execute(spec, tmp_path, watch_seconds=1.0)
    assert result.exit_code == 2 and "--watch runs one process" in result.error
