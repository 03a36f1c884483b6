"""The sweep collection (daily ID export) and the detail-request cap, against the fake server over HTTP."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from datetime import date, datetime, timezone

import pytest

from thresher.api.names import ExitCode
from thresher.jobs.tmdb.collect import run_collection
from thresher.jobs.tmdb.export import (
    DetailPicker, ExportCorrupt, cap_ids, check_line, export_dates, export_name, gunzip_lines, sweep_filter,
)
from thresher.demo.fakes.tmdb_server import FakeConfig, FaultRule, running_fake_server
from thresher.jobs.tmdb.storage import Catalog, list_snapshots, read_jsonl

from .support import API_KEY, job

# 06:00 UTC: before TMDB publishes the day's export.
EARLY = datetime(2025, 6, 1, 6, 0, tzinfo=timezone.utc)
TODAY = export_name(date(2025, 6, 1))
YESTERDAY = export_name(date(2025, 5, 31))


def _sweep(client, server, data_dir, **fields):
    return run_collection(job(collection="sweep", exportBaseUrl=server.export_base_url, **fields), client,
                          data_dir, now=EARLY)


def _manifest(outcome) -> dict:
    return json.loads((outcome.snapshot / "manifest.json").read_text())


def _good_entries(server) -> list[dict]:
    return [e for e in server.fake.export_entries() if isinstance(e, dict)]


def _detail_requests(server) -> int:
    return server.stats()["byRoute"].get("movie/{id}", 0)


# --- pure parts ------------------------------------------------------------------------

def test_export_dates_go_back_from_today_utc():
    assert [export_name(d) for d in export_dates(EARLY)] == [
        "movie_ids_06_01_2025.json.gz", "movie_ids_05_31_2025.json.gz", "movie_ids_05_30_2025.json.gz"]


@pytest.mark.parametrize(("raw", "problem"), [
    (b"<html>", "line: not JSON"), (b"[1]", "line: not an object"),
    (b'{"id": "7", "popularity": 1}', "id: not a positive integer"), (b'{"id": 0, "popularity": 1}', "id:"),
    (b'{"id": 7, "popularity": -1}', "popularity"), (b'{"id": 7}', "popularity"),
    (b'{"id": 7, "popularity": 1, "adult": "no"}', "adult: not a boolean"),
])
def test_bad_export_lines_are_named(raw, problem):
    record, problems = check_line(raw)
    assert record is None and any(p.startswith(problem) for p in problems)


def test_good_export_line_and_filters():
    record, problems = check_line(b'{"adult":false,"id":3924,"original_title":"Blondie","popularity":1.8,"video":false}')
    assert problems == [] and record["id"] == 3924 and record["popularity"] == 1.8
    assert sweep_filter(record, False, False, 0.0) is None
    assert sweep_filter(record, False, False, 2.0) == "popularity"
    assert sweep_filter({**record, "adult": True}, False, False, 0.0) == "adult"
    assert sweep_filter({**record, "adult": True}, True, False, 0.0) is None
    assert sweep_filter({**record, "video": True}, False, False, 0.0) == "video"


def test_detail_picker_keeps_the_most_popular_in_bounded_memory():
    picker = DetailPicker(3)
    for movie_id, pop in [(1, 5.0), (2, 50.0), (3, 1.0), (4, 20.0), (5, 50.0), (6, 0.5)]:
        picker.offer(movie_id, pop)
    assert picker.chosen() == [2, 5, 4] and picker.skipped == 3 and len(picker._heap) == 3
    none = DetailPicker(0)
    none.offer(1, 1.0)
    assert none.chosen() == [] and none.skipped == 1
    assert cap_ids([5, 6, 7], 2) == ([5, 6], 1) and cap_ids([5], 9) == ([5], 0)


def test_gunzip_lines_across_any_chunking_and_with_an_over_long_line():
    lines = [b'{"id":%d}' % i for i in range(2000)] + [b"x" * 300] + [b"last"]
    data = gzip.compress(b"\n".join(lines))  # no newline at the end: the last line still counts
    for size in (1, 7, 4096, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        got = list(gunzip_lines(chunks, max_line=100))
        assert got[:2000] == lines[:2000] and got[2000] == b"x" * 100 and got[2001:] == [b"last"]


def test_highly_compressible_export_is_not_cut_short():
    """Output capped per step must still all come out: nothing stranded inside zlib at the end."""
    data = gzip.compress(b'{"adult":false,"id":1,"popularity":1.0}\n' * 200_000)
    assert sum(1 for _ in gunzip_lines([data])) == 200_000


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not-gzip"])
def test_damaged_gzip_is_an_export_corrupt_error(damage):
    data = gzip.compress(b"".join(b'{"id":%d,"popularity":1.5}\n' % i for i in range(20_000)))
    middle = len(data) // 2
    broken = {"truncated": data[:middle],
              "flipped": data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:],
              "not-gzip": b"<html>502</html>"}[damage]
    with pytest.raises(ExportCorrupt):
        list(gunzip_lines([broken[i:i + 1000] for i in range(0, len(broken), 1000)]))


# --- whole runs -------------------------------------------------------------------------

def test_sweep_end_to_end_details_only_for_new_ids_and_capped(make_client, server, tmp_path):
    # A catalog that already knows the 40 most popular movies (with details, from list pages).
    known = run_collection(job(collection="custom", sources=[{"endpoint": "popular", "pages": 2}]),
                           make_client(), tmp_path, now=EARLY)
    known_ids = {m["id"] for m in read_jsonl(known.snapshot / "movies.jsonl")}
    entries = _good_entries(server)
    threshold = sorted(e["popularity"] for e in entries)[int(len(entries) * 0.9)]
    expected = [e for e in entries if not e["adult"] and not e["video"] and e["popularity"] >= threshold]
    new = sorted((e for e in expected if e["id"] not in known_ids), key=lambda e: (-e["popularity"], e["id"]))
    assert len(known_ids) == 40 and known_ids <= {e["id"] for e in expected} and len(new) > 100

    server.fake.reset_stats()
    first = _sweep(make_client(), server, tmp_path, minPopularity=threshold, maxDetailRequests=50)
    assert first.exit_code == ExitCode.OK and first.result.succeeded
    assert first.result.valid == first.result.items == len(expected)
    manifest = _manifest(first)
    export = manifest["export"]
    assert export["file"] == TODAY and export["known"] == 40 and export["new"] == len(new)
    assert export["skipped"]["adult"] == 30 and export["skipped"]["popularity"] > 0
    assert [r["id"] for r in read_jsonl(first.snapshot / "ids.jsonl")] == [e["id"] for e in expected]
    detailed = [m["id"] for m in read_jsonl(first.snapshot / "movies.jsonl")]
    assert sorted(detailed) == sorted(e["id"] for e in new[:50])  # the 50 most popular new ones
    assert _detail_requests(server) == 50 and manifest["details"]["skipped"] == len(new) - 50
    assert any(f"{len(new) - 50} of {len(new)} detail requests skipped" in w for w in first.result.warnings)
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.count_export_ids() == len(expected) and catalog.count() == 90

    server.fake.reset_stats()
    second = _sweep(make_client(), server, tmp_path, minPopularity=threshold)
    assert _manifest(second)["export"]["known"] == 90
    rest = [m["id"] for m in read_jsonl(second.snapshot / "movies.jsonl")]
    assert sorted(rest) == sorted(e["id"] for e in new[50:]) and _detail_requests(server) == len(new) - 50

    server.fake.reset_stats()
    third = _sweep(make_client(), server, tmp_path, minPopularity=threshold)
    assert third.exit_code == ExitCode.OK and _detail_requests(server) == 0
    assert _manifest(third)["details"]["requested"] == 0
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.count_export_ids() == len(expected) and catalog.count() == 40 + len(new)
        assert len(catalog.applied_runs()) == 4


def test_todays_export_missing_falls_back_to_yesterdays(make_client, server, tmp_path):
    server.fake.set_faults(schedule=[FaultRule("404", TODAY.removesuffix(".json.gz"), times=None)])
    outcome = _sweep(make_client(), server, tmp_path, maxDetailRequests=0)
    export = _manifest(outcome)["export"]
    assert outcome.exit_code == ExitCode.OK and export["file"] == YESTERDAY and export["tried"] == [TODAY, YESTERDAY]
    assert f"{TODAY} is not published yet; used {YESTERDAY}" in outcome.result.warnings
    assert server.stats()["byRoute"].get("movie/{id}") is None  # maxDetailRequests 0: ids only


def test_no_export_in_the_last_days_is_an_upstream_failure(make_client, server, tmp_path):
    server.fake.set_faults(schedule=[FaultRule("404", "p/exports/", times=None)])
    outcome = _sweep(make_client(), server, tmp_path)
    assert outcome.exit_code == ExitCode.UPSTREAM and outcome.snapshot is None
    assert outcome.result.error.startswith("ExportUnavailable:") and "movie_ids_05_30_2025" in outcome.result.error
    assert server.stats()["byRoute"]["exports"] == 3  # a few days back, no more


@pytest.mark.parametrize("fault", ["gzip-corrupt", "gzip-truncated", "truncated"])
def test_corrupt_export_is_a_typed_upstream_error_and_nothing_is_committed(make_client, server, tmp_path, fault):
    server.fake.set_faults(schedule=[FaultRule(fault, "p/exports/", times=None)])
    outcome = _sweep(make_client(), server, tmp_path)
    assert outcome.exit_code == ExitCode.UPSTREAM == 3 and not outcome.result.succeeded
    assert outcome.result.error.startswith("ExportCorrupt:")
    assert outcome.snapshot is None and list_snapshots(tmp_path) == []
    assert list((tmp_path / "snapshots").iterdir()) == []  # the spool is gone too
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.count_export_ids() == 0 and catalog.applied_runs() == set()
        assert [(r["status"], r["exitCode"], r["movies"]) for r in catalog.runs()] == [("upstream", 3, 0)]
    assert server.stats()["byRoute"].get("movie/{id}") is None  # no details for a file we could not trust


def test_invalid_export_lines_are_rejects_not_failures(make_client, tmp_path):
    config = FakeConfig(movies=400, api_key=API_KEY, export_bad_line_rate=0.05)
    with running_fake_server(config) as bad:
        broken = sum(1 for e in bad.fake.export_entries() if isinstance(e, bytes))
        outcome = _sweep(make_client(base_url=bad.base_url), bad, tmp_path, maxDetailRequests=5)
    assert broken > 5 and outcome.exit_code == ExitCode.OK
    assert outcome.result.items - outcome.result.valid == broken
    rejects = [r for r in read_jsonl(outcome.snapshot / "rejects.jsonl") if "_line" in r]
    assert len(rejects) == broken and all(r["_problems"] and r["_raw"] for r in rejects)
    assert any(w.startswith(f"{broken} of ") and "export lines invalid" in w for w in outcome.result.warnings)


def _traced_sweep(make_client, tmp_path, lines: int) -> tuple[int, int]:
    """(bytes the export's text takes, peak traced bytes of a sweep over it)."""
    config = FakeConfig(movies=100, api_key=API_KEY, export_extra_ids=lines)
    with running_fake_server(config) as server:
        held = len(gzip.decompress(server.fake.export_bytes()))  # built before tracing starts
        client = make_client(base_url=server.base_url)
        tracemalloc.start()
        try:
            outcome = _sweep(client, server, tmp_path / str(lines), maxDetailRequests=20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert outcome.exit_code == ExitCode.OK and outcome.result.valid > lines
    assert _manifest(outcome)["details"]["requested"] == 20
    return held, peak


def test_a_large_export_streams_in_bounded_memory(make_client, tmp_path):
    """The traced peak does not grow with the export: 4x the lines (~3 MB more text) add less
    than a tenth of that text to the peak; holding the text, or its lines, would add all of it.
    A first sweep, untraced, loads what a sweep imports, so the peaks compare the sweeps alone
    (in a fresh process the imports alone trace ~8 MB). Small inputs: the fixed part of the
    peak (~2.3 MB) is the same at 200k lines (benchmarks are the place for big exports)."""
    with running_fake_server(FakeConfig(movies=100, api_key=API_KEY, export_extra_ids=100)) as warm:
        _sweep(make_client(base_url=warm.base_url), warm, tmp_path / "warm", maxDetailRequests=20)
    small_held, small_peak = _traced_sweep(make_client, tmp_path, 10_000)
    big_held, big_peak = _traced_sweep(make_client, tmp_path, 40_000)
    assert big_held - small_held > 2_500_000
    assert big_peak - small_peak < (big_held - small_held) / 10, \
        f"peak {small_peak} -> {big_peak} bytes for a {small_held} -> {big_held}-byte export"


def test_zlib_errors_do_not_escape_untyped():
    with pytest.raises(ExportCorrupt):
        list(gunzip_lines([zlib.compress(b"raw deflate, not gzip")]))


def test_changes_detail_requests_are_capped_and_the_run_still_succeeds(make_client, server, tmp_path):
    now = datetime(2025, 6, 10, 6, 0, tzinfo=timezone.utc)
    outcome = run_collection(job(collection="changes", changesWindowDays=2, maxDetailRequests=10), make_client(),
                             tmp_path, now=now)
    details = _manifest(outcome)["details"]
    assert outcome.exit_code == ExitCode.OK and outcome.result.succeeded
    assert details["requested"] == 10 == _detail_requests(server) and details["skipped"] > 40
    total = details["requested"] + details["skipped"]
    assert f"maxDetailRequests (10) reached: {details['skipped']} of {total} detail requests skipped" \
        in outcome.result.warnings


def test_a_sweep_with_failed_detail_requests_is_committed_incomplete(make_client, server, tmp_path):
    """Issue 15: a snapshot with holes says so: complete false, the missing detail ids listed, the
    catalog's run recorded as partial (exit 5)."""
    # Only the detail requests carry append_to_response.
    server.fake.set_faults(schedule=[FaultRule("503", "?append_to_response=credits", times=None)])
    outcome = _sweep(make_client(max_retries=0), server, tmp_path, maxDetailRequests=5,
                     appendToResponse=["credits"])
    assert outcome.snapshot is not None, outcome.result.error
    manifest = _manifest(outcome)
    assert outcome.exit_code == ExitCode.PARTIAL and manifest["complete"] is False
    assert len(manifest["missing"]["details"]) == 5 and manifest["details"]["fetched"] == 0
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert [(r["status"], r["exitCode"]) for r in catalog.runs()] == [("partial", 5)]
