"""The changes collection takes its window from THRESHER_LOGICAL_TIME (issue 17: backfill)."""

from __future__ import annotations

from datetime import datetime, timezone

from typer.testing import CliRunner

from thresher.api.runresult import parse_message
from thresher.jobs.tmdb.cli import app
from thresher.jobs.tmdb.collect import run_collection
from thresher.jobs.tmdb.storage import read_jsonl

from .support import API_KEY, job

LOGICAL = datetime(2025, 3, 3, 0, 0, tzinfo=timezone.utc)
LATER = datetime(2025, 6, 10, 6, 0, tzinfo=timezone.utc)


def _ids(outcome) -> set[int]:
    return {m["id"] for m in read_jsonl(outcome.snapshot / "movies.jsonl")}


def test_a_backfilled_changes_run_collects_the_window_of_its_logical_time(make_client, server, tmp_path):
    """Pins: a backfilled week must collect that week's changes, not the days before the backfill ran."""
    spec = job(collection="changes", changesWindowDays=2)
    backfilled = run_collection(spec, make_client(), tmp_path / "a", now=LATER, logical_time=LOGICAL)
    on_time = run_collection(spec, make_client(), tmp_path / "b", now=LOGICAL)
    today = run_collection(spec, make_client(), tmp_path / "c", now=LATER)
    assert _ids(backfilled) == _ids(on_time)
    assert _ids(backfilled) != _ids(today)
    # Timestamps stay on the real clock: the snapshot is named for when it ran.
    assert "20250610" in backfilled.snapshot.name.replace("-", "")


def _invoke(tmp_path, env: dict[str, str], base_url: str):
    result_file = tmp_path / "result.json"
    out = CliRunner().invoke(app, ["collect", "--result-path", str(result_file), "--collection", "changes",
                                   "--changes-window-days", "1", "--api-base-url", base_url,
                                   "--data-dir", str(tmp_path / "d")], env={"TMDB_API_KEY": API_KEY, **env})
    return out.exit_code, parse_message(result_file.read_text()).result


def test_the_cli_reads_the_logical_time_and_refuses_a_bad_one(monkeypatch, server, tmp_path):
    monkeypatch.setattr("thresher.jobs.harness.configure_logging", lambda *a, **k: None)
    code, result = _invoke(tmp_path / "bad", {"THRESHER_LOGICAL_TIME": "last tuesday"}, server.base_url)
    assert code == 2 and result.error == ("THRESHER_LOGICAL_TIME 'last tuesday' is not an RFC 3339 time with an "
                                          "offset, such as 2026-05-01T06:00:00Z or 2026-05-01T08:00:00+02:00")
    code, result = _invoke(tmp_path / "ok", {"THRESHER_LOGICAL_TIME": "2025-03-03T00:00:00Z"}, server.base_url)
    assert code == 0 and result.succeeded and result.items > 0
