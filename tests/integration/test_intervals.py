"""Intervals no cron expression repeats, fired by the operator on the real control plane (issue 17).

`@every 7m` (7 is the smallest interval that divides neither an hour nor a day: every shorter one
is an ordinary cron on the CronJob) with an anchor that puts the first due time about a minute
after the schedule is applied, so each test takes under two minutes.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers.wait import consistently, eventually
from tests.integration.test_operator import apply, get, schedule, simulate, status_of
from thresher.api.names import LOGICAL_TIME_ANNOTATION
from thresher.api.runnames import format_logical_time, scheduled_job_name

pytestmark = pytest.mark.integration

EVERY = "@every 7m"


def _first_due(lead: float) -> datetime:
    """The first whole minute at least ``lead`` seconds from now: the anchor and first due time."""
    t = datetime.now(UTC) + timedelta(seconds=lead + 59)
    return t.replace(second=0, microsecond=0)


def _jobs(cluster, namespace: str, name: str) -> list[dict]:
    proc = cluster.kubectl("get", "jobs", "-n", namespace, "-l", f"thresher.dev/schedule={name}", "-o", "json")
    return json.loads(proc.stdout)["items"]


def _until(t: datetime) -> None:
    time.sleep(max(0.0, (t - datetime.now(UTC)).total_seconds()))


def test_an_interval_no_cron_repeats_is_fired_on_time_by_the_operator(cluster, namespace, operator):
    """Issue 17: `@every 7m` was refused. The CronJob stays a suspended template; the operator
    creates the due time's Job on time, under the CronJob controller's own name, with its logical
    time, and status shows it as the last and the next due time."""
    due = _first_due(lead=40)
    apply(cluster, namespace, schedule("every7", cron=EVERY, intervalAnchor=format_logical_time(due)))
    simulate(cluster, namespace, "every7", message={"jobType": "container", "succeeded": True, "items": 7})
    cronjob = get(cluster, namespace, "cronjob", "every7")
    assert cronjob["spec"]["suspend"] is True
    status = eventually(lambda: (s := status_of(cluster, namespace, "every7")).get("nextScheduleTime") and s,
                        timeout=30, message="nextScheduleTime")
    assert status["nextScheduleTime"] == format_logical_time(due)
    assert status["effectiveSchedule"] == EVERY
    assert _jobs(cluster, namespace, "every7") == []

    job = eventually(lambda: next(iter(_jobs(cluster, namespace, "every7")), None),
                     timeout=(due - datetime.now(UTC)).total_seconds() + 30, message="the due time's Job")
    assert job["metadata"]["name"] == scheduled_job_name("every7", due)
    created = datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert due <= created <= due + timedelta(seconds=10), (created, due)  # on time: the 2 s recheck tick
    assert job["metadata"]["annotations"][LOGICAL_TIME_ANNOTATION] == format_logical_time(due)

    status = eventually(lambda: (s := status_of(cluster, namespace, "every7")).get("recentRuns") and s,
                        timeout=60, message="the run recorded")
    assert status["lastScheduleTime"] == format_logical_time(due)
    assert status["nextScheduleTime"] == format_logical_time(due + timedelta(minutes=7))
    (run,) = status["recentRuns"]
    assert run["scheduledTime"] == format_logical_time(due) and run["outcome"] == "Succeeded"
    assert run["manual"] is False
    consistently(lambda: len(_jobs(cluster, namespace, "every7")) == 1, duration=5,
                 message="one Job for one due time")


def test_an_operator_killed_before_a_due_time_fires_it_once_after_restart(cluster, namespace, operator):
    """Issue 17: due times come from status, so an operator killed (-9) just before a due time
    fires it when it is back (no startingDeadlineSeconds: however late), exactly once."""
    due = _first_due(lead=40)
    apply(cluster, namespace, schedule("restart7", cron=EVERY, intervalAnchor=format_logical_time(due)))
    eventually(lambda: status_of(cluster, namespace, "restart7").get("nextScheduleTime") == format_logical_time(due),
               timeout=30, message="nextScheduleTime")
    _until(due - timedelta(seconds=8))
    operator.kill()
    try:
        _until(due + timedelta(seconds=5))
        assert _jobs(cluster, namespace, "restart7") == []  # nobody else fires it: the CronJob is suspended
    finally:
        operator.start()
    job = eventually(lambda: next(iter(_jobs(cluster, namespace, "restart7")), None), timeout=60,
                     message="the due time's Job after the restart")
    assert job["metadata"]["name"] == scheduled_job_name("restart7", due)
    eventually(lambda: status_of(cluster, namespace, "restart7").get("lastScheduleTime") == format_logical_time(due),
               timeout=30, message="lastScheduleTime")
    consistently(lambda: len(_jobs(cluster, namespace, "restart7")) == 1, duration=8,
                 message="fired once, not again by the resync or the recheck")
