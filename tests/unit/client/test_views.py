"""The user commands' pure parts: dashboard rows, the outcome `thresher run --wait` reports."""

from __future__ import annotations

from thresher.client import views


def _schedule(runs: list[dict], active: list[dict] | None = None, **spec) -> dict:
    return {"metadata": {"namespace": "ns", "name": "daily"},
            "spec": {"schedule": "@daily", "job": {"tmdb": {}}, **spec},
            "status": {"recentRuns": runs, "active": active or [],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


OLD = {"jobName": "daily-1", "outcome": "Failed", "completionTime": "2026-01-01T00:00:00Z", "message": "old"}
NEW = {"jobName": "daily-2", "outcome": "Succeeded", "completionTime": "2026-01-02T00:00:00Z",
       "result": {"items": 7}, "durationSeconds": 12.5}


def test_last_run_is_the_newest_whatever_the_order_of_recent_runs():
    """The dashboard took recentRuns[-1] as the last run; the operator's order is changing
    (issue 12: newest first). Both orders must give the same row."""
    for runs in ([OLD, NEW], [NEW, OLD]):
        (row,) = views.dashboard_rows([_schedule(runs)])
        assert row["lastRunResult"] == {"items": 7}
        assert row["recentFailures"] == [{"job": "daily-1", "at": OLD["completionTime"], "message": "old"}]


def test_blocked_run_shows_in_the_state_and_outranks_ready():
    blocked = {"name": "daily-3", "phase": "Blocked", "reason": "ImagePullBackOff",
               "message": 'image "localhost/nope:1" cannot be pulled: not found'}
    (row,) = views.dashboard_rows([_schedule([NEW], [blocked])])
    assert views.state_of(row) == "blocked: ImagePullBackOff"
    (row,) = views.dashboard_rows([_schedule([NEW], [{"name": "daily-3", "phase": "Running"}])])
    assert views.state_of(row) == "running"
    (row,) = views.dashboard_rows([_schedule([NEW], [blocked], suspend=True)])
    assert views.state_of(row) == "suspended"


def test_recorded_run_is_matched_by_job_name_not_position():
    schedule = _schedule([NEW, OLD])
    assert views.recorded_run(schedule, "daily-1") is OLD
    assert views.recorded_run(schedule, "daily-9") is None
    assert views.recorded_run({"metadata": {}}, "daily-1") is None


def test_wait_outcome_exit_code_and_line():
    ok = views.wait_outcome(NEW)
    assert ok.exit_code == 0 and ok.line == "job.batch/daily-2 Succeeded after 12.5s (7 items)"
    failed = views.wait_outcome({"jobName": "daily-4", "outcome": "FailedToStart",
                                 "message": "secret \"tmdb\" not found"})
    assert failed.exit_code == 1 and failed.line == 'job.batch/daily-4 FailedToStart: secret "tmdb" not found'


def test_progress_line_only_once_the_operator_reports_the_run():
    assert views.progress_line(None) is None
    assert views.progress_line({"name": "j"}) is None
    assert views.progress_line({"name": "j", "phase": "Running", "node": "n1"}) == "job.batch/j Running on n1"
    assert (views.progress_line({"name": "j", "phase": "Blocked", "reason": "NodeLost", "message": "node n1 NotReady"})
            == "job.batch/j Blocked (NodeLost): node n1 NotReady")


def test_a_one_off_schedule_shows_its_run_time_as_its_schedule():
    """Issue 17: a schedule with only runAt has no cron: the dashboard showed None."""
    body = _schedule([], runAt="2026-05-01T06:00:00Z")
    body["spec"].pop("schedule")
    (row,) = views.dashboard_rows([body])
    assert row["schedule"] == "runAt 2026-05-01T06:00:00Z"


def test_a_run_waiting_for_a_retry_shows_attempt_n_of_m_and_when():
    """Issue 17: an attempt waiting in its retry delay must show in `thresher status`."""
    waiting = {"logicalTime": "2026-01-03T00:00:00Z", "maxAttempts": 3, "message": "exit code 3 (Error)",
               "nextAttemptTime": "2026-01-03T00:11:00Z",
               "attempts": [{"attempt": 1, "jobName": "daily-3", "outcome": "Failed"}]}
    body = _schedule([NEW])
    body["status"]["retrying"] = [waiting]
    (row,) = views.dashboard_rows([body])
    assert row["retrying"] == ["job.batch/daily-3 attempt 1 of 3 Failed; attempt 2 of 3 at 2026-01-03T00:11:00Z: "
                               "exit code 3 (Error)"]
    assert views.state_of(row) == "retry waiting"
    running = {**waiting, "nextAttemptTime": None,
               "attempts": [*waiting["attempts"], {"attempt": 2, "jobName": "daily-rabc"}]}
    assert views.retry_line(running) == "job.batch/daily-3 attempt 2 of 3 running as job.batch/daily-rabc"
    assert views.retrying_run(body, "daily-3") is waiting and views.retrying_run(body, "daily-2") is None
    final = {**NEW, "maxAttempts": 3, "attempts": [{"attempt": 1}, {"attempt": 2}]}
    assert views.wait_outcome(final).line == "job.batch/daily-2 Succeeded (attempt 2 of 3) after 12.5s (7 items)"
