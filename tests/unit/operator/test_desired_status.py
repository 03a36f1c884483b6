"""The pure desired-status step, the writer around it, and the status contract's text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from thresher.api import crd
from thresher.api.names import RECORDED_ANNOTATION, SCHEDULE_LABEL
from thresher.api.schedule import MAX_RECENT_RUNS, MAX_RESULT_WARNINGS, RunRecord, RunSummary, parse_schedule
from thresher.operator import desired_status as ds
from thresher.operator.caches import FireTimes
from thresher.operator.metrics import OperatorMetrics
from thresher.operator.reconciler import Reconciler

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=timezone.utc)
CRONJOB = {"metadata": {"name": "s", "namespace": "ns", "uid": "cj"},
           "status": {"lastScheduleTime": "2026-11-22T11:00:00Z", "active": [{"name": "s-1"}]}}


def body(status: dict | None = None, **spec) -> dict:
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 4, "resourceVersion": "7",
                         "creationTimestamp": "2026-11-22T11:30:00Z"},
            "spec": {"schedule": "0 * * * *", "timeZone": "Europe/Berlin",
                     "job": {"container": {"image": "busybox:1.36"}}, **spec},
            "status": status or {}}


def run(name: str, outcome: str, end: datetime, items: int | None = None) -> RunRecord:
    return RunRecord(job_name=name, outcome=outcome, completion_time=end, start_time=end - timedelta(seconds=30),
                     duration_seconds=30.0, result=RunSummary(items=items) if items is not None else None)


def desired(current: dict, now: datetime = NOW, **observed) -> ds.Desired:
    observed.setdefault("cronjob", CRONJOB)
    return ds.desired_status(current, parse_schedule(current), ds.Observed(**observed), now, FireTimes())


def test_first_refresh_writes_schedule_fields_and_a_second_writes_nothing():
    first = desired(body(), running_since=(1000.0, 900.0))
    assert first.patch["nextScheduleTime"] == "2026-11-22T13:00:00Z"
    assert first.patch["lastScheduleTime"] == "2026-11-22T11:00:00Z"
    assert first.patch["cronJobRef"] == {"name": "s"} and first.patch["observedGeneration"] == 4
    assert first.patch["consecutiveFailures"] == 0
    assert {c["type"]: c["status"] for c in first.patch["conditions"]} == {
        "Ready": "True", "Stale": "False", "Failing": "False", "RunBlocked": "False"}
    assert "recentRuns" not in first.patch and "stats" not in first.patch
    state = first.state
    assert (state.namespace, state.schedule, state.job_type, state.cron, state.time_zone) == (
        "ns", "s", "container", "0 * * * *", "Europe/Berlin")
    assert state.active_runs == 1 and state.oldest_active_start == 900.0
    assert state.next_run == datetime(2026, 11, 22, 13, tzinfo=timezone.utc).timestamp()
    assert state.stale_after_seconds == 3600 + 3600
    # Applied, the same observation a minute later changes nothing: no write.
    written = body(first.patch)
    assert desired(written, NOW + timedelta(minutes=1)).patch == {}


def test_a_finished_run_and_its_conditions_are_one_patch():
    """Issue 12: a run used to be written, then refreshed again in a second pass; now the runs,
    counters, stats and conditions are one patch from one parse of the schedule."""
    current = body(desired(body()).patch, alerting={"consecutiveFailureThreshold": 2})
    end = NOW - timedelta(minutes=5)
    out = desired(current, finished=[run("s-2", "Failed", end), run("s-1", "Failed", end - timedelta(hours=1))])
    assert [r.job_name for r in out.new_runs] == ["s-1", "s-2"]  # oldest first, as they happened
    assert [r["jobName"] for r in out.patch["recentRuns"]] == ["s-2", "s-1"]  # newest first
    assert out.patch["consecutiveFailures"] == 2 and out.patch["lastResult"] == "Failed"
    assert out.patch["stats"]["failed"] == 2
    failing = next(c for c in out.patch["conditions"] if c["type"] == "Failing")
    assert failing["status"] == "True" and failing["reason"] == "ConsecutiveFailures"
    assert out.state.consecutive_failures == 2 and out.state.last_failure == end.timestamp()
    again = desired(body({**current["status"], **out.patch}, alerting={"consecutiveFailureThreshold": 2}),
                    finished=[run("s-2", "Failed", end)])
    assert again.patch == {} and again.new_runs == ()


def test_runs_stored_oldest_first_by_an_older_operator_are_rewritten_newest_first():
    old = [run(f"s-{i}", "Succeeded", NOW - timedelta(hours=3 - i)).model_dump(mode="json", by_alias=True,
                                                                               exclude_none=True)
           for i in range(3)]
    current = body({**desired(body()).patch, "recentRuns": old})
    out = desired(current)
    assert [r["jobName"] for r in out.patch["recentRuns"]] == ["s-2", "s-1", "s-0"]


def test_suspending_clears_the_next_run_and_staleness():
    current = body(desired(body()).patch, suspend=True)
    out = desired(current)
    assert out.patch["nextScheduleTime"] is None
    stale = next(c for c in out.patch["conditions"] if c["type"] == "Stale")
    assert stale["status"] == "False" and stale["reason"] == "Suspended"
    assert out.state.suspended and out.state.next_run is None


def test_an_invalid_spec_is_ready_false_with_no_metrics_state():
    current = body(desired(body()).patch)
    current["spec"]["schedule"] = "0 0 30 2 *"  # never fires
    out = desired(current)
    ready = next(c for c in out.patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert out.patch["nextScheduleTime"] is None and out.state is None and out.schedule is None


def test_crd_text_and_code_agree_on_recent_runs():
    """Pins issue 12: the CRD said recentRuns is newest first and keeps 10 warnings per run;
    the operator kept the oldest first and 5. Whatever the CRD text says, the code does."""
    schema = yaml.safe_load((REPO / crd.CRD_PATHS[0]).read_text())["spec"]["versions"][0]["schema"]
    recent = schema["openAPIV3Schema"]["properties"]["status"]["properties"]["recentRuns"]
    text = " ".join([recent["description"], recent["items"]["description"]])
    assert ("newest first" in text) != ("oldest first" in text), f"the CRD must state one order: {text!r}"
    status = ds.read_status({})
    for i in range(MAX_RECENT_RUNS + 5):
        status, _ = ds.fold_runs(status, [run(f"j{i:02d}", "Succeeded", NOW + timedelta(minutes=i))])
    names = [r.job_name for r in status.recent_runs]
    assert len(names) == recent["maxItems"] == int(re.search(r"newest (\d+)", recent["description"])[1])
    assert names[0] == ("j24" if "newest first" in text else "j05")

    warnings = recent["items"]["properties"]["result"]["properties"]["warnings"]
    from thresher.api.runresult import RunResult

    summary = RunSummary.from_result(RunResult(job_type="tmdb", succeeded=True, warnings=["w"] * 30))
    assert len(summary.warnings) == warnings["maxItems"] == MAX_RESULT_WARNINGS
    assert f"first {MAX_RESULT_WARNINGS} warnings" in warnings["description"]


def test_docs_state_the_order_the_code_keeps():
    api_md = (REPO / "docs/api.md").read_text()
    row = next(line for line in api_md.splitlines() if line.startswith("| `recentRuns`"))
    assert f"newest {MAX_RECENT_RUNS} finished runs, newest first" in row
    assert f"up to {MAX_RESULT_WARNINGS} `warnings`" in row


class FakeKube:
    """The API calls of one recording; the first status write conflicts."""

    def __init__(self, current: dict):
        self.current, self.calls, self.conflicts = current, [], 1

    def job_pods(self, namespace, name):
        self.calls.append("job_pods")
        return []

    def get_cronjob(self, namespace, name):
        self.calls.append("get_cronjob")
        return CRONJOB

    def get_schedule(self, namespace, name):
        self.calls.append("get_schedule")
        return self.current

    def patch_status(self, namespace, name, fields, resource_version=None):
        from kubernetes.client.rest import ApiException

        self.calls.append("patch_status")
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409)
        self.current = {**self.current, "status": {**self.current["status"], **fields}}
        return self.current

    def post_event(self, schedule, type_, reason, note):
        self.calls.append(f"event {reason}")

    def annotate_job(self, namespace, name, annotations):
        self.calls.append(f"annotate {sorted(annotations)}")


def finished_job(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "labels": {SCHEDULE_LABEL: "s"},
                         "creationTimestamp": "2026-11-22T11:59:00Z"},
            "status": {"startTime": "2026-11-22T11:59:00Z", "completionTime": "2026-11-22T11:59:40Z",
                       "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}


def test_recording_a_run_reads_then_writes_once_per_attempt():
    """Issue 12: the write's compute callback could GET or apply a CronJob and wrote metrics,
    and the run was refreshed again afterwards. Now: reads first, one status write per
    attempt (a conflict re-reads only the schedule), then metrics and the Job's mark."""
    kube = FakeKube(body(desired(body()).patch))
    metrics = OperatorMetrics()
    rec = Reconciler(kube=kube, metrics=metrics, clock=lambda: NOW)
    record = rec.record_job(finished_job("s-2"))
    assert record is not None and record.outcome == "Failed"
    assert kube.calls == ["job_pods", "get_cronjob", "get_schedule", "patch_status", "get_schedule",
                          "patch_status", "event RunFailed", f"annotate {[RECORDED_ANNOTATION]}"]
    assert kube.current["status"]["recentRuns"][0]["jobName"] == "s-2"
    labels = {"namespace": "ns", "schedule": "s"}
    assert metrics.registry.get_sample_value("thresher_schedule_consecutive_failures", labels) == 1
    assert metrics.registry.get_sample_value("thresher_schedule_runs_total",
                                             {**labels, "job_type": "container", "outcome": "failed"}) == 1
    # The same Job delivered again (a restart before the mark): nothing new is counted.
    kube.calls.clear()
    assert rec.record_job(finished_job("s-2")) is None
    assert "patch_status" not in kube.calls


def test_an_interval_fired_by_the_operator_reports_its_next_due_time_and_the_fired_one():
    """Issue 17: next run and lastScheduleTime come from the interval (the template CronJob never fires)."""
    current = body(schedule="@every 90m", intervalAnchor="2026-11-22T00:00:00Z")
    template = {"metadata": {"name": "s", "namespace": "ns", "uid": "cj"}, "status": {}}
    first = desired(current, cronjob=template)
    assert first.status.next_schedule_time == datetime(2026, 11, 22, 13, 30, tzinfo=timezone.utc)
    assert first.status.last_schedule_time is None
    fired = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
    second = desired(current, cronjob=template, fired=fired)
    assert second.patch["lastScheduleTime"] == "2026-11-22T12:00:00Z"
    assert second.state.stale_after_seconds == 90 * 60 + 3600
    # An older fired time (a late event of an earlier fire) never moves it back.
    written = body(status={"lastScheduleTime": "2026-11-22T12:00:00Z"}, schedule="@every 90m",
                   intervalAnchor="2026-11-22T00:00:00Z")
    assert "lastScheduleTime" not in desired(written, cronjob=template, fired=fired - timedelta(minutes=90)).patch


def test_a_one_off_schedule_shows_its_run_as_next_and_is_never_stale():
    """Issue 17: runAt without a schedule: nextScheduleTime is the run until it is due, Stale stays False."""
    run_at = NOW + timedelta(minutes=10)
    current = body(runAt=run_at.strftime("%Y-%m-%dT%H:%M:00Z"))
    current["spec"].pop("schedule")
    template = {"metadata": {"name": "s", "namespace": "ns", "uid": "cj"}, "status": {}}
    waiting = desired(current, cronjob=template)
    assert waiting.status.next_schedule_time == run_at.replace(second=0)
    assert waiting.status.effective_schedule is None
    later = desired(current, now=NOW + timedelta(days=30), cronjob=template)
    assert later.status.next_schedule_time is None
    assert next(c for c in later.status.conditions if c.type == "Stale").status == "False"
    # Beside a schedule it is the next run only while it comes first.
    both = body(runAt=run_at.strftime("%Y-%m-%dT%H:%M:00Z"))  # hourly: next 13:00 after 12:10
    assert desired(both).status.next_schedule_time == run_at.replace(second=0)


def test_a_backfilled_run_is_listed_but_does_not_move_the_schedules_health():
    """Issue 17: a backfilled window (past runs) must not make a failing schedule look fresh."""
    current = body(status={"consecutiveFailures": 2, "lastFailureTime": "2026-11-22T11:00:00Z"})
    backfilled = run("s-b1", "Succeeded", NOW).model_copy(update={"backfill": True})
    out = desired(current, finished=(backfilled,))
    assert out.status.recent_runs[0].job_name == "s-b1" and out.status.recent_runs[0].backfill
    assert out.status.consecutive_failures == 2 and out.status.last_successful_time is None


def test_a_status_step_keeps_the_backfilled_windows_and_never_writes_them():
    """Issue 17: status.backfilled is written only by the backfill handler; a desired-status step
    (a finished run, a refresh, an invalid spec) keeps it as read and leaves it out of its patch,
    so it can never write back a stale copy over a newer record."""
    windows = [{"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"},
               {"from": "2026-11-21T06:00:00Z", "to": "2026-11-21T07:00:00Z"}]
    current = body({**desired(body()).patch, "backfilled": windows})
    end = NOW - timedelta(minutes=5)
    for out in (desired(current), desired(current, finished=[run("s-2", "Failed", end)])):
        assert [w.model_dump(mode="json", by_alias=True) for w in out.status.backfilled] == windows
        assert "backfilled" not in out.patch
    invalid = body(current["status"])
    invalid["spec"]["schedule"] = "0 0 30 2 *"
    out = desired(invalid)
    assert out.patch and "backfilled" not in out.patch and len(out.status.backfilled) == 2
