"""The operator's own firing of intervals no cron repeats (issue 17): pure, the clock a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from thresher.api.runnames import scheduled_job_name
from thresher.api.timing import ScheduleTimes
from thresher.api.retry import AttemptRecord, RetryPolicy, RunAttempts
from thresher.api.runnames import retry_job_name
from thresher.operator.firing import FORBID_RECHECK, RetryStart, fire_step, retry_steps, run_at_step

TIMES = ScheduleTimes.of("@every 7m", None, "2026-11-22T12:00:00Z")  # due 12:00, 12:07, 12:14, ...
CREATED = datetime(2026, 11, 22, 11, 58, tzinfo=UTC)
DUE = datetime(2026, 11, 22, 12, 7, tzinfo=UTC)


def step(now, last=None, unfinished=(), policy="Forbid", deadline=None, suspended=False, times=TIMES):
    return fire_step(times, "s", last, CREATED, now, suspended=suspended, starting_deadline_seconds=deadline,
                     concurrency_policy=policy, unfinished=set(unfinished))


def test_a_due_time_fires_once_and_the_next_one_is_looked_at_on_time():
    """Nothing before the due time; at it, exactly that due time; once written to status, nothing again."""
    before = step(DUE - timedelta(seconds=1), last=DUE - timedelta(minutes=7))
    assert before.fire is None and before.recheck == DUE
    at = step(DUE, last=DUE - timedelta(minutes=7))
    assert at.fire == DUE and at.recheck == DUE + timedelta(minutes=7)
    assert step(DUE + timedelta(seconds=30), last=DUE).fire is None


def test_a_restart_after_missed_due_times_fires_only_the_newest_and_counts_the_rest():
    """Issue 17: an operator down over two due times must neither skip the newest nor double any."""
    now = DUE + timedelta(minutes=7, seconds=20)  # 12:14:20, last fired 12:00
    restarted = step(now, last=DUE - timedelta(minutes=7))
    assert restarted.fire == DUE + timedelta(minutes=7) and restarted.missed == 1


def test_the_starting_deadline_skips_a_run_seen_too_late():
    late = step(DUE + timedelta(seconds=90), last=DUE - timedelta(minutes=7), deadline=60)
    assert late.fire is None and late.missed == 1 and late.recheck == DUE + timedelta(minutes=7)


def test_concurrency_policy_against_unfinished_runs():
    last = DUE - timedelta(minutes=7)
    other = scheduled_job_name("s", last)
    held = step(DUE, last=last, unfinished=[other])
    assert held.fire is None and held.recheck == DUE + FORBID_RECHECK
    assert step(DUE, last=last, unfinished=[other], policy="Allow").fire == DUE
    replaced = step(DUE, last=last, unfinished=[other], policy="Replace")
    assert replaced.fire == DUE and replaced.stop == (other,)


def test_the_due_times_own_job_unfinished_means_fired_not_forbidden():
    """A status write lost after the create: Forbid must not hold the run back behind itself."""
    again = step(DUE + timedelta(seconds=5), last=DUE - timedelta(minutes=7), unfinished=[scheduled_job_name("s", DUE)])
    assert again.fire == DUE and again.stop == ()


def test_suspended_and_cron_schedules_are_left_to_the_cronjob():
    assert step(DUE, suspended=True).fire is None and step(DUE, suspended=True).recheck is None
    mapped = ScheduleTimes.of("@every 15m", None)
    assert step(DUE, times=mapped).fire is None and step(DUE, times=mapped).recheck is None
    assert step(DUE, times=ScheduleTimes.of("*/7 * * * *", None)).fire is None


def test_before_the_first_run_due_times_count_from_creation():
    """Due times before the schedule existed are not owed (12:00 is before 11:58 + nothing)."""
    first = step(datetime(2026, 11, 22, 11, 59, tzinfo=UTC))
    assert first.fire is None and first.recheck == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert step(datetime(2026, 11, 22, 12, 0, 3, tzinfo=UTC)).fire == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


# --- runAt --------------------------------------------------------------------------------------

RUN_AT = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)


def at_step(now, known=(), deadline=None, suspended=False, policy="Allow", unfinished=()):
    return run_at_step(RUN_AT, "s", set(known), now, suspended=suspended, starting_deadline_seconds=deadline,
                       concurrency_policy=policy, unfinished=set(unfinished))


def test_a_one_off_run_waits_fires_once_and_is_never_fired_late_beyond_the_deadline():
    """Issue 17: spec.runAt runs exactly once, at its time."""
    waiting = at_step(RUN_AT - timedelta(minutes=1))
    assert waiting.fire is None and waiting.recheck == RUN_AT
    assert at_step(RUN_AT).fire == RUN_AT
    assert at_step(RUN_AT + timedelta(hours=3)).fire == RUN_AT  # no deadline: however late, as a CronJob
    assert at_step(RUN_AT + timedelta(seconds=5), known=[scheduled_job_name("s", RUN_AT)]).fire is None
    expired = at_step(RUN_AT + timedelta(seconds=90), deadline=60)
    assert expired.fire is None and expired.missed == 1 and expired.recheck is None
    assert at_step(RUN_AT, suspended=True).fire is None


def test_a_one_off_run_honours_concurrency_policy():
    """Issue 17: runAt started beside a running run whatever concurrencyPolicy said."""
    other = "s-29397600"
    held = at_step(RUN_AT + timedelta(seconds=5), policy="Forbid", unfinished=[other])
    assert held.fire is None and held.recheck == RUN_AT + timedelta(seconds=5) + FORBID_RECHECK
    # Held past its starting deadline: never fired late, reported missed (the CronJob controller's rule).
    late = at_step(RUN_AT + timedelta(seconds=70), deadline=60, policy="Forbid", unfinished=[other])
    assert late.fire is None and late.missed == 1
    replaced = at_step(RUN_AT, policy="Replace", unfinished=[other])
    assert replaced.fire == RUN_AT and replaced.stop == (other,)
    assert at_step(RUN_AT, policy="Allow", unfinished=[other]).fire == RUN_AT
    # Its own Job unfinished (a lost status write): not forbidden behind itself.
    assert at_step(RUN_AT, policy="Forbid", unfinished=[scheduled_job_name("s", RUN_AT)]).fire == RUN_AT


# --- retries ------------------------------------------------------------------------------------


def _waiting(end: datetime) -> RunAttempts:
    return RunAttempts(logical_time=RUN_AT, max_attempts=3, attempts=[
        AttemptRecord(attempt=1, job_name="s-1", start_time=end - timedelta(minutes=1), completion_time=end,
                      outcome="Failed", exit_code=1)])


def test_a_retry_starts_when_due_and_never_replaces_a_run():
    policy, end = RetryPolicy(attempts=3, delaySeconds=120), RUN_AT
    runs = [_waiting(end)]

    def steps(now, **kw):
        return retry_steps(policy, runs, "s", now, **{"suspended": False, "concurrency_policy": "Forbid",
                                                    "unfinished": set(), **kw})

    assert steps(end + timedelta(minutes=1)) == ((), end + timedelta(minutes=2))
    assert steps(end + timedelta(minutes=2)) == ((RetryStart("s-1", 2, retry_job_name("s", "s-1", 2)),), None)
    due = end + timedelta(minutes=3)
    for policy_name in ("Forbid", "Replace"):  # an older run's retry waits; it never ends a newer run
        assert steps(due, concurrency_policy=policy_name, unfinished={"s-9"}) == ((), due + FORBID_RECHECK)
    assert len(steps(due, concurrency_policy="Allow", unfinished={"s-9"})[0]) == 1
    assert steps(due, suspended=True) == ((), None)


# --- the reconciler's backfill on a hand-written annotation ---------------------------------------


class _Kube:
    """Records the calls; lists no Jobs and has the CronJob template."""

    def __init__(self, schedule=None):
        self.events, self.created, self.patches, self.schedule = [], [], [], schedule

    def get_schedule(self, namespace, name):
        return self.schedule

    def patch_status(self, namespace, name, fields, resource_version=None):
        self.patches.append(fields)
        self.schedule = {**self.schedule, "status": {**(self.schedule.get("status") or {}), **fields}}
        return self.schedule

    def list_jobs(self, namespace, selector):
        return []

    def get_cronjob(self, namespace, name):
        return {"metadata": {"name": name, "namespace": namespace, "uid": "cj"},
                "spec": {"jobTemplate": {"metadata": {"labels": {}}, "spec": {"template": {"spec": {
                    "containers": [{"name": "job", "image": "a"}]}}}}}}

    def create_job(self, body):
        self.created.append(body["metadata"]["name"])
        return True

    def post_event(self, schedule, type_, reason, note):
        self.events.append((reason, note))


def test_a_refused_backfill_annotation_is_an_event_and_creates_nothing():
    """Issue 17: a hand-written thresher.dev/backfill value must not crash the handler (kopf would
    retry it for ever); it says why in an Event."""
    from thresher.operator.metrics import OperatorMetrics
    from thresher.operator.reconciler import Reconciler

    body = {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"schedule": "*/10 * * * *", "job": {"container": {"image": "a"}}}}
    kube = _Kube()
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: datetime(2026, 5, 1, 2, 0, tzinfo=UTC))
    assert rec.backfill(body, "not json") == []
    assert kube.events[-1][0] == "BackfillRefused" and "must be JSON" in kube.events[-1][1]
    assert rec.backfill(body, '{"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T03:00:00Z"}') == []
    assert "in the future" in kube.events[-1][1] and kube.created == []
    names = rec.backfill(body, '{"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T01:00:00Z", "token": "t"}')
    assert len(names) == 6 and kube.created == names and kube.events[-1][0] == "Backfill"


def test_the_reconciler_records_the_backfilled_window_and_a_second_call_creates_nothing():
    """Issue 17: once its Jobs are created the window is written to status.backfilled (a merge patch
    of that field alone); after the Jobs were cleaned up and left recentRuns, the same window again
    creates no Job and writes nothing, and a following window is merged into the record."""
    from thresher.operator.metrics import OperatorMetrics
    from thresher.operator.reconciler import Reconciler

    body = {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"schedule": "*/10 * * * *", "job": {"container": {"image": "a"}}}}
    kube = _Kube(body)
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: datetime(2026, 5, 1, 2, 0, tzinfo=UTC))
    hour = '{"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T01:00:00Z", "token": "%s"}'
    assert len(rec.backfill(body, hour % "t1")) == 6 and len(kube.created) == 6
    assert kube.patches == [{"backfilled": [{"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T01:00:00Z"}]}]
    # the fake lists no Jobs and status has no recentRuns: only the record knows the window was run
    assert len(rec.backfill(kube.schedule, hour % "t2")) == 6
    assert len(kube.created) == 6 and len(kube.patches) == 1
    nxt = '{"from": "2026-05-01T01:00:00Z", "to": "2026-05-01T01:30:00Z", "token": "t3"}'
    assert len(rec.backfill(kube.schedule, nxt)) == 3 and len(kube.created) == 9
    assert kube.patches[-1] == {"backfilled": [{"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T01:30:00Z"}]}


def test_a_failed_job_create_records_no_window():
    """A window is recorded only after all its Jobs were created: an API error leaves it to a retry."""
    from thresher.operator.metrics import OperatorMetrics
    from thresher.operator.reconciler import Reconciler

    body = {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"schedule": "*/10 * * * *", "job": {"container": {"image": "a"}}}}
    kube = _Kube(body)

    def failing(job):
        if len(kube.created) == 2:
            raise RuntimeError("apiserver down")
        kube.created.append(job["metadata"]["name"])
        return True

    kube.create_job = failing
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: datetime(2026, 5, 1, 2, 0, tzinfo=UTC))
    with pytest.raises(RuntimeError):
        rec.backfill(body, '{"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T01:00:00Z", "token": "t"}')
    assert len(kube.created) == 2 and kube.patches == []
