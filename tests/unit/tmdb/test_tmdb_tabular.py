"""The typed Parquet snapshot and ``thresher job tmdb export``: same rows as the JSONL, stable schema."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from thresher.jobs.tmdb import tabular
from thresher.jobs.tmdb.cli import app
from thresher.jobs.tmdb.collect import run_collection
from thresher.jobs.tmdb.storage import choose_snapshot, read_jsonl

from .support import job

NOON = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def _enriched_run(make_client, tmp_path, now=NOON, pages=2):
    spec = job(collection="custom", enrich=True, appendToResponse=["credits"],
               sources=[{"endpoint": "popular", "pages": pages}, {"endpoint": "trending_day", "pages": 1}])
    return run_collection(spec, make_client(), tmp_path, now=now)


def test_the_parquet_snapshot_equals_the_jsonl_row_for_row(make_client, server, tmp_path):
    """Read back with pyarrow, every row of movies.parquet is the matching line of movies.jsonl in
    typed form: same order, ids, numbers, dates as dates ("" -> null), genre lists, and every other
    field in `extra`."""
    outcome = _enriched_run(make_client, tmp_path)
    snap = outcome.snapshot
    table = pq.read_table(snap / "movies.parquet")
    rows = table.to_pylist()
    records = list(read_jsonl(snap / "movies.jsonl"))
    assert len(rows) == len(records) == outcome.result.valid > 20
    for row, record in zip(rows, records):
        assert row["id"] == record["id"] and row["title"] == record["title"]
        assert row["release_date"] == (date.fromisoformat(record["release_date"]) if record["release_date"] else None)
        assert row["popularity"] == float(record["popularity"]) and row["vote_count"] == record["vote_count"]
        assert row["vote_average"] == float(record["vote_average"])
        assert row["genre_ids"] == record["genre_ids"] and row["adult"] is record["adult"]
        assert row["runtime"] == record.get("runtime") and row["budget"] == record.get("budget")
        assert row["imdb_id"] == record.get("imdb_id") and row["enriched"] is bool(record.get("_enriched"))
        assert row["sources"] == record["_sources"]
        assert abs(row["fetched_at"].timestamp() - record["_fetched_at"]) < 0.001
        extra = json.loads(row["extra"])
        assert extra["credits"] == record["credits"]  # appended data survives, as JSON
        covered = {source for _, _, source, _ in tabular.COLUMNS if source} | set(extra) | {"genres"}
        assert set(record) <= covered, set(record) - covered  # no field is lost
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["schemas"]["movies.parquet"] == {"name": "tmdb-movies", "version": 1, "rows": len(rows)}
    assert manifest["files"]["movies.parquet"]["sha256"]  # hashed like every other file
    assert tabular.schema_version_of(snap / "movies.parquet") == tabular.SCHEMA_VERSION


def test_the_schema_is_pinned():
    """Changing a column's name, type or order changes what readers get: bump SCHEMA_VERSION then,
    and this list with it."""
    assert tabular.SCHEMA_VERSION == 1
    assert [(f.name, str(f.type), f.nullable) for f in tabular.arrow_schema()] == [
        ("id", "int64", False), ("title", "string", False), ("original_title", "string", True),
        ("original_language", "string", True), ("overview", "string", True), ("release_date", "date32[day]", True),
        ("popularity", "double", True), ("vote_average", "double", True), ("vote_count", "int64", True),
        ("adult", "bool", True), ("video", "bool", True), ("genre_ids", "list<item: int32>", True),
        ("poster_path", "string", True), ("backdrop_path", "string", True), ("runtime", "int32", True),
        ("budget", "int64", True), ("revenue", "int64", True), ("status", "string", True),
        ("imdb_id", "string", True), ("tagline", "string", True), ("enriched", "bool", False),
        ("sources", "list<item: string>", True), ("fetched_at", "timestamp[ms, tz=UTC]", True),
        ("extra", "string", True),
    ]


def test_a_record_that_does_not_fit_is_a_clear_error():
    with pytest.raises(tabular.TabularError, match="release_date '2021-13-40' is not a YYYY-MM-DD date"):
        tabular.movie_row({"id": 1, "title": "x", "release_date": "2021-13-40"})
    with pytest.raises(tabular.TabularError, match="vote_count 'many' is not a number"):
        tabular.movie_row({"id": 1, "title": "x", "vote_count": "many"})


def test_choose_snapshot_picks_the_newest_of_the_day_and_collection():
    candidates = [("daily-1", "2025-06-01T08:00:00Z", "daily"), ("daily-2", "2025-06-01T20:00:00Z", "daily"),
                  ("weekly-1", "2025-06-01T21:00:00Z", "weekly"), ("daily-0", "2025-05-31T23:00:00Z", "daily")]
    assert choose_snapshot(candidates, "2025-06-01") == "weekly-1"
    assert choose_snapshot(candidates, "2025-06-01", "daily") == "daily-2"
    assert choose_snapshot(candidates, "2025-06-02") is None


@pytest.fixture
def export(tmp_path, monkeypatch):
    monkeypatch.delenv("THRESHER_DATA_DIR", raising=False)

    def run(*args: str):
        result = CliRunner().invoke(app, ["export", *args])
        return result.exit_code, result.stdout, result.stderr

    return run


def test_export_the_catalog_as_parquet_csv_and_jsonl(make_client, server, tmp_path, export):
    _enriched_run(make_client, tmp_path, pages=1)
    _enriched_run(make_client, tmp_path, now=datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc), pages=2)
    code, _, err = export("--format", "parquet", "--data-dir", str(tmp_path), "-o", str(tmp_path / "all.parquet"))
    assert code == 0 and "schema tmdb-movies v1" in err and "latest version of each movie" in err
    table = pq.read_table(tmp_path / "all.parquet")
    ids = table.column("id").to_pylist()
    assert ids == sorted(set(ids)) and len(ids) > 20  # one row a movie, by id
    code, out, _ = export("--format", "csv", "--data-dir", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [int(r["id"]) for r in rows] == ids
    assert rows[0]["genre_ids"] == ";".join(str(g) for g in table.column("genre_ids")[0].as_py())
    code, out, _ = export("--format", "jsonl", "--data-dir", str(tmp_path))
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ids


def test_export_a_days_snapshot(make_client, server, tmp_path, export):
    first = _enriched_run(make_client, tmp_path, pages=1)
    _enriched_run(make_client, tmp_path, now=datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc), pages=2)
    code, out, err = export("--format", "jsonl", "--data-dir", str(tmp_path), "--date", "2025-06-01")
    assert code == 0 and f"snapshot {first.snapshot.name}" in err
    assert out == (first.snapshot / "movies.jsonl").read_text()


@pytest.mark.parametrize(("args", "message"), [
    ([], "give --format: one of parquet, csv, jsonl"),
    (["--format", "xlsx"], "--format 'xlsx': use one of parquet, csv, jsonl"),
    (["--format", "parquet"], "give --output FILE"),
    (["--format", "csv", "--date", "June 1st"], "--date 'June 1st' is not a date (YYYY-MM-DD)"),
    (["--format", "csv", "--date", "2025-07-01"], "no committed snapshot started on 2025-07-01"),
    (["--format", "csv", "--collection", "daily"], "give --date too"),
    (["--format", "csv", "-o", "/nonexistent/dir/x.csv"], "no such directory /nonexistent/dir"),
])
def test_export_bad_input_is_one_clear_line(make_client, server, tmp_path, export, args, message):
    _enriched_run(make_client, tmp_path, pages=1)
    code, out, err = export("--data-dir", str(tmp_path), *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err


def test_export_without_data_is_one_clear_line(tmp_path, export):
    code, _, err = export("--format", "csv", "--data-dir", str(tmp_path / "missing"))
    assert code == 2 and "no data dir at" in err
    (tmp_path / "empty").mkdir()
    code, _, err = export("--format", "csv", "--data-dir", str(tmp_path / "empty"))
    assert code == 2 and "no catalog at" in err and "run a collection first" in err


def test_without_pyarrow_a_collection_stops_before_its_first_request(make_client, server, tmp_path, monkeypatch):
    import sys

    from thresher.jobs.harness import ConfigError

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    with pytest.raises(ConfigError, match=r"pyarrow is needed .*pip install 'thresher\[jobs\]'"):
        run_collection(job(collection="daily"), make_client(), tmp_path, now=NOON)
    assert server.stats()["requests"] == 0
