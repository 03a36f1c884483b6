"""Whole runs in-process against the fake server: outputs, accounting under faults, exit codes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

import socket
import time

from thresher.api.names import ExitCode
from thresher.jobs.harness import ConfigError, UpstreamError
from thresher.jobs.tmdb.client import Credentials
from thresher.jobs.tmdb.collect import SKIPPED_OUTSIDE_HOURS, decide_exit, run_collection
from thresher.demo.fakes.tmdb_server import FAULT_KINDS, PERMANENT_FAULT_KINDS, FaultRule
from thresher.jobs.tmdb.quality import Thresholds
from thresher.jobs.tmdb.storage import Catalog, is_committed, list_snapshots, read_jsonl

from .support import job

NOON = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def _manifest(outcome) -> dict:
    return json.loads((outcome.snapshot / "manifest.json").read_text())


def _custom(pages: int = 3, **fields):
    return job(collection="custom", sources=[{"endpoint": "popular", "pages": pages},
                                             {"endpoint": "trending_day", "pages": 1}], **fields)


def test_daily_run_writes_snapshot_catalog_and_result(make_client, server, tmp_path):
    outcome = run_collection(job(collection="daily"), make_client(), tmp_path, now=NOON)
    assert outcome.exit_code == ExitCode.OK
    result = outcome.result
    assert result.succeeded and result.job_type == "tmdb" and result.failed == 0 and result.quality == 1.0
    assert outcome.snapshot.name == "daily-20250601T120000Z" and is_committed(outcome.snapshot)
    movies = list(read_jsonl(outcome.snapshot / "movies.jsonl"))
    assert len(movies) == result.items == result.valid
    manifest = _manifest(outcome)
    assert manifest["pages"]["planned"] == manifest["pages"]["fetched"] == 9
    assert manifest["quality"]["duplicates"] > 0  # trending overlaps popular
    assert any(len(m["_sources"]) > 1 for m in movies)
    assert manifest["requests"]["requests"] == server.stats()["requests"] == 10  # preflight + 9 pages
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.count() == len(movies)
    assert not (outcome.snapshot / "report.json").exists()  # daily has no report


def test_rerunning_changes_nothing_in_the_catalog(make_client, server, tmp_path):
    first = run_collection(_custom(), make_client(), tmp_path, now=NOON)
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        rows = catalog.conn.execute("SELECT id, title, vote_average FROM movies ORDER BY id").fetchall()
    second = run_collection(_custom(), make_client(), tmp_path, now=NOON)
    assert second.snapshot != first.snapshot and second.exit_code == ExitCode.OK
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.conn.execute("SELECT id, title, vote_average FROM movies ORDER BY id").fetchall() == rows
        assert len(catalog.applied_runs()) == 2


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "timeout" and k not in PERMANENT_FAULT_KINDS])
def test_each_fault_alone_at_30_percent_still_completes(make_client, server, tmp_path, kind):
    server.config.retry_after = "0"
    server.fake.set_faults({kind: 0.3})
    outcome = run_collection(_custom(pages=8), make_client(max_retries=8), tmp_path, now=NOON)
    assert server.stats()["faults"].get(kind, 0) > 0
    assert outcome.exit_code == ExitCode.OK, outcome.result.warnings
    assert _manifest(outcome)["pages"]["fetched"] == 9 and outcome.result.failed == 0


def test_timeouts_are_retried_within_a_run(make_client, server, tmp_path):
    server.fake.set_faults(schedule=[FaultRule("timeout", "movie/popular?page=2", times=1)])
    outcome = run_collection(_custom(pages=2), make_client(timeout=0.3), tmp_path, now=NOON)
    assert outcome.exit_code == ExitCode.OK and outcome.result.failed == 0
    assert _manifest(outcome)["requests"]["failures"] == {"timeout": 1}


def test_mixed_faults_every_page_is_fetched_or_reported_failed(make_client, server, tmp_path):
    """Bug this pins: a page that exhausted its retries vanished from the output without a trace."""
    server.config.retry_after = "0"
    server.fake.set_faults({"429": 0.1, "429-retry-after": 0.1, "500": 0.1, "503": 0.1, "malformed": 0.1,
                            "truncated": 0.1, "reset": 0.1})
    spec = job(collection="custom", sources=[{"endpoint": "popular", "pages": 20},
                                             {"endpoint": "discover", "pages": 10, "params": {"with_genres": "28"}}])
    outcome = run_collection(spec, make_client(max_retries=1), tmp_path, now=NOON)
    pages = _manifest(outcome)["pages"]
    failed = {f["page"] for f in pages["failed"]}
    assert pages["planned"] == 30 and pages["fetched"] + len(failed) == 30
    assert failed, "with 70% faults and one retry some pages must fail"
    assert outcome.exit_code == ExitCode.PARTIAL and outcome.result.failed == len(failed)
    assert any(f"{len(failed)} of 30 pages failed" in w for w in outcome.result.warnings)
    fetched_sources = {s.split(":")[0] + ":" + s.split(":")[1] for m in read_jsonl(outcome.snapshot / "movies.jsonl")
                       for s in m["_sources"]}
    assert not fetched_sources & failed


def test_a_page_that_always_fails_is_named_in_the_result(make_client, server, tmp_path):
    server.fake.set_faults(schedule=[FaultRule("502", "movie/popular?page=2", times=None)])
    outcome = run_collection(_custom(pages=3), make_client(max_retries=2), tmp_path, now=NOON)
    assert outcome.exit_code == ExitCode.PARTIAL
    assert [f["page"] for f in _manifest(outcome)["pages"]["failed"]] == ["popular:2"]
    assert "popular:2" in outcome.result.warnings[0] and outcome.result.output == str(outcome.snapshot)


def test_a_partial_run_says_so_in_manifest_catalog_and_result(make_client, server, tmp_path):
    """Bug (issue 15): a partial snapshot (exit 5) had "complete": true in its manifest and the catalog's
    runs table had no status; only exitCode and pages.failed showed the holes."""
    server.fake.set_faults(schedule=[FaultRule("502", "movie/popular?page=2", times=None)])
    outcome = run_collection(_custom(pages=3), make_client(max_retries=1), tmp_path, now=NOON)
    manifest = _manifest(outcome)
    assert outcome.exit_code == ExitCode.PARTIAL and is_committed(outcome.snapshot)
    assert manifest["complete"] is False and manifest["missing"] == {"pages": ["popular:2"]}
    assert "gave up after 2 attempts (1 retries)" in outcome.result.warnings[0]
    assert "after retries" not in outcome.result.error and "holes" in outcome.result.error
    whole = run_collection(_custom(pages=1), make_client(), tmp_path, now=NOON)
    assert _manifest(whole)["complete"] is True and _manifest(whole)["missing"] == {}
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert [(r["runId"], r["status"], r["exitCode"]) for r in catalog.runs()] == [
            (outcome.snapshot.name, "partial", 5), (whole.snapshot.name, "ok", 0)]


def test_429s_that_were_not_retried_are_not_reported_as_retried(make_client, server, tmp_path):
    """Bug (issue 15): with --max-retries 0 the result said "TMDB throttled N requests (429); they were
    retried"; they were not."""
    server.fake.set_faults(schedule=[FaultRule("429", "movie/popular?page=2", times=None)])
    outcome = run_collection(_custom(pages=2), make_client(max_retries=0), tmp_path, now=NOON)
    assert "TMDB throttled 1 requests (429): 0 retried, 1 not retried (maxRetries is 0): those requests failed" \
        in outcome.result.warnings
    server.fake.set_faults(schedule=[FaultRule("429", "movie/popular?page=2", times=1)])
    outcome = run_collection(_custom(pages=2), make_client(max_retries=2), tmp_path, now=NOON)
    assert "TMDB throttled 1 requests (429): 1 retried" in outcome.result.warnings


def test_a_run_that_commits_nothing_is_recorded_in_the_catalog(make_client, server, tmp_path):
    with pytest.raises(UpstreamError):
        run_collection(job(collection="daily"), make_client(base_url=_closed_port_url()), tmp_path, now=NOON)
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert [(r["runId"], r["status"], r["exitCode"]) for r in catalog.runs()] == [
            ("daily-20250601T120000Z.failed", "upstream", 3)]


def test_nothing_fetched_is_an_upstream_failure_without_a_snapshot(make_client, server, tmp_path):
    server.fake.set_faults(schedule=[FaultRule("503", "movie/", times=None),
                                     FaultRule("503", "trending/", times=None)])
    outcome = run_collection(_custom(pages=2), make_client(max_retries=1), tmp_path, now=NOON)
    assert outcome.exit_code == ExitCode.UPSTREAM and outcome.snapshot is None
    assert "3 of 3 pages failed" in outcome.result.error and list_snapshots(tmp_path) == []


def _closed_port_url() -> str:
    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/3"


@pytest.mark.parametrize("where, says", [
    ("closed", "connection refused"),
    ("http://tmdb.invalid/3", "DNS lookup failed"),  # RFC 6761: .invalid never resolves
    ("tls", "TLS handshake failed"),
])
def test_an_unreachable_api_ends_the_run_at_the_preflight(make_client, server, tmp_path, where, says):
    """Bug (issue 15): with the API down the preflight's failure was only a warning and the whole
    weekly plan ran: exit 3 after 109 s and ~580 connection attempts. Now one attempt, one line."""
    base = {"closed": _closed_port_url(), "tls": server.base_url.replace("http://", "https://")}.get(where, where)
    client = make_client(base_url=base, max_retries=5)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        run_collection(job(collection="weekly"), client, tmp_path, now=NOON)
    message = str(err.value)
    assert time.monotonic() - started < 5 and client.stats.requests == 1
    assert says in message and f"{base}/genre/movie/list" in message and "\n" not in message
    assert list_snapshots(tmp_path) == []


def test_an_html_answer_to_the_preflight_ends_the_run_naming_the_content_type(make_client, server, tmp_path):
    """Bug (issue 15): an HTML 200 body on every path ran the whole plan and ended as "malformed after 6
    attempts: invalid JSON (100 bytes)"."""
    server.fake.set_faults(schedule=[FaultRule("html", "", times=None)])
    with pytest.raises(UpstreamError, match=r"genre/movie/list: HTTP 200 with an HTML page \(text/html"):
        run_collection(job(collection="weekly"), make_client(), tmp_path, now=NOON)
    assert server.stats()["requests"] == 1


def test_a_flaky_preflight_is_retried_and_the_run_goes_on(make_client, server, tmp_path):
    server.fake.set_faults(schedule=[FaultRule("503", "genre/movie/list", times=None)])
    outcome = run_collection(_custom(pages=1), make_client(max_retries=1), tmp_path, now=NOON)
    assert outcome.exit_code == ExitCode.OK
    assert any("genre list unavailable" in w and "gave up after 2 attempts" in w for w in outcome.result.warnings)


def test_wrong_key_is_a_config_error_with_no_retry_storm(make_client, server, tmp_path):
    with pytest.raises(ConfigError, match="rejected the credential"):
        run_collection(job(collection="weekly"), make_client(Credentials(api_key="nope-nope")), tmp_path, now=NOON)
    assert server.stats()["requests"] == 1


def test_hourly_outside_operating_hours_is_skipped_without_requests(make_client, server, tmp_path):
    night = datetime(2025, 6, 1, 23, 30, tzinfo=timezone.utc)
    outcome = run_collection(job(collection="hourly", timeZone="UTC"), make_client(), tmp_path, now=night)
    assert outcome.exit_code == ExitCode.OK and outcome.result.succeeded and outcome.result.items == 0
    assert outcome.result.warnings[0].startswith(SKIPPED_OUTSIDE_HOURS)
    assert server.stats()["requests"] == 0 and not (tmp_path / "snapshots").exists()
    inside = run_collection(job(collection="hourly", timeZone="Asia/Tokyo"), make_client(), tmp_path, now=night)
    assert inside.result.items and inside.snapshot.name.startswith("hourly-")  # 08:30 in Tokyo


def test_unknown_time_zone_is_a_config_error(make_client, tmp_path):
    with pytest.raises(ConfigError, match="timeZone"):
        run_collection(job(collection="hourly", timeZone="Mars/Olympus"), make_client(), tmp_path, now=NOON)


def test_enrichment_merges_details_and_appended_responses(make_client, server, tmp_path):
    spec = job(collection="custom", enrich=True, appendToResponse=["credits", "keywords"],
               sources=[{"endpoint": "discover", "pages": 2, "params": {"with_genres": "27"}}])
    outcome = run_collection(spec, make_client(), tmp_path, now=NOON)
    movies = list(read_jsonl(outcome.snapshot / "movies.jsonl"))
    assert len(movies) == 40 and all(m["_enriched"] and m["runtime"] and m["credits"]["cast"] for m in movies)
    assert all(27 in m["genre_ids"] for m in movies)  # list form kept from the detail's genres
    assert _manifest(outcome)["details"]["fetched"] == 40
    assert server.stats()["byRoute"]["movie/{id}"] == 40


def test_failed_enrichment_keeps_the_list_record_and_reports_the_failure(make_client, server, tmp_path):
    spec = job(collection="custom", enrich=True, sources=[{"endpoint": "popular", "pages": 1}])
    popular = server.fake.lists["movie/popular"]
    victim = popular[0]["id"]
    server.fake.set_faults(schedule=[FaultRule("500", f"movie/{victim}", times=None)])
    outcome = run_collection(spec, make_client(max_retries=1), tmp_path, now=NOON)
    movies = {m["id"]: m for m in read_jsonl(outcome.snapshot / "movies.jsonl")}
    assert len(movies) == 20 and "_enriched" not in movies[victim] and movies[popular[1]["id"]]["_enriched"]
    assert outcome.exit_code == ExitCode.PARTIAL and outcome.result.failed == 1
    assert _manifest(outcome)["details"]["failed"][0]["movie"] == str(victim)


def test_changes_collects_details_of_changed_movies(make_client, server, tmp_path):
    now = datetime(2025, 6, 10, 6, 0, tzinfo=timezone.utc)
    outcome = run_collection(job(collection="changes", changesWindowDays=2), make_client(), tmp_path, now=now)
    manifest = _manifest(outcome)
    assert manifest["pages"]["planned"] == manifest["pages"]["fetched"] >= 1
    # 3 days x (20 changed + 1 deleted + 1 adult), minus overlaps; deleted ones answer 404, adult skipped
    assert manifest["details"]["notFound"] and len(manifest["details"]["notFound"]) == 3
    assert outcome.result.items == manifest["details"]["fetched"] >= 50
    assert outcome.exit_code == ExitCode.OK and any("no longer exist" in w for w in outcome.result.warnings)


def test_changes_windows_longer_than_a_page_are_paginated(make_client, server, tmp_path):
    now = datetime(2025, 6, 20, tzinfo=timezone.utc)
    outcome = run_collection(job(collection="changes", changesWindowDays=14), make_client(), tmp_path, now=now)
    pages = _manifest(outcome)["pages"]
    assert pages["planned"] >= 4 and pages["failed"] == []  # 2 windows, each > 100 ids
    assert server.stats()["byStatus"].get("422") is None  # never asked for a window TMDB refuses


def test_bad_data_lowers_quality_and_thresholds_fail_the_run(tmp_path, make_client, server):
    from thresher.demo.fakes.tmdb_server import FakeConfig, running_fake_server

    from .support import API_KEY

    with running_fake_server(FakeConfig(movies=600, api_key=API_KEY, bad_data_rate=0.2)) as bad:
        client = make_client(base_url=bad.base_url)
        outcome = run_collection(job(collection="daily"), client, tmp_path, Thresholds(min_quality_rate=0.95),
                                 now=NOON)
    assert outcome.exit_code == ExitCode.QUALITY and not outcome.result.succeeded
    assert 0.6 < outcome.result.quality < 0.95
    rejects = list(read_jsonl(outcome.snapshot / "rejects.jsonl"))
    assert len(rejects) == outcome.result.items - outcome.result.valid and all(r["_problems"] for r in rejects)
    assert "below the minimum" in outcome.result.error


def test_weekly_run_writes_report(make_client, server, tmp_path):
    outcome = run_collection(job(collection="weekly"), make_client(), tmp_path, now=NOON)
    report = json.loads((outcome.snapshot / "report.json").read_text())
    assert len(report["topByPopularity"]) == 10 and report["movies"] == outcome.result.valid
    assert set(report["ratingBands"]) == {"9-10", "8-8.9", "7-7.9", "6-6.9", "5-5.9", "0-4.9", "unrated"}
    assert {"Action", "Comedy", "Drama", "Horror", "Romance"} <= set(report["genreDistribution"])
    assert (outcome.snapshot / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(("planned", "fetched", "failed", "quality_failed", "code"), [
    (10, 10, 0, False, ExitCode.OK), (10, 10, 0, True, ExitCode.QUALITY), (10, 9, 1, True, ExitCode.PARTIAL),
    (10, 0, 10, False, ExitCode.UPSTREAM), (0, 0, 0, False, ExitCode.OK),
])
def test_exit_code_precedence(planned, fetched, failed, quality_failed, code):
    assert decide_exit(planned, fetched, failed, quality_failed) == code
