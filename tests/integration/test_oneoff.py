"""One-off runs (`spec.runAt`, `thresher run NAME --at`) on the real control plane (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.helpers.wait import consistently, eventually
from tests.integration.test_intervals import _first_due, _jobs
from tests.integration.test_operator import apply, get, schedule, simulate, status_of
from thresher.api.runnames import format_logical_time, scheduled_job_name

pytestmark = pytest.mark.integration


def _thresher(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, timeout=120)


def test_run_at_fires_one_run_once_and_the_schedule_reports_it(cluster, namespace, operator):
    """Issue 17: there was no one-off run but "a suspended schedule and run-now". `thresher run NAME
    --at T` on a schedule with no cron sets spec.runAt; the operator creates the Job of that
    minute on time, once, and the schedule reports its outcome."""
    body = yaml.safe_load(schedule("once"))
    body["spec"].pop("schedule")
    body["spec"]["runAt"] = "2020-01-01T00:00:00Z"  # replaced below: the object needs one of the two
    body["spec"]["suspend"] = True
    apply(cluster, namespace, json.dumps(body))
    simulate(cluster, namespace, "once", message={"jobType": "container", "succeeded": True, "items": 1})
    assert get(cluster, namespace, "cronjob", "once")["spec"]["suspend"] is True

    late = _thresher(cluster, "run", "once", "-n", namespace, "--at", "2020-01-01T00:00:00Z")
    assert late.returncode == 1 and "in the past, beyond the default of 5 minutes" in late.stderr, late.stderr
    assert "Traceback" not in late.stderr
    due = _first_due(lead=30)
    ok = _thresher(cluster, "run", "once", "-n", namespace, "--at", format_logical_time(due))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"job.batch/{scheduled_job_name('once', due)}"
    cluster.kubectl("patch", "csched", "once", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    eventually(lambda: status_of(cluster, namespace, "once").get("nextScheduleTime") == format_logical_time(due),
               timeout=30, message="nextScheduleTime is the one-off run")
    assert _jobs(cluster, namespace, "once") == []

    job = eventually(lambda: next(iter(_jobs(cluster, namespace, "once")), None),
                     timeout=(due - datetime.now(UTC)).total_seconds() + 30, message="the one-off Job")
    assert job["metadata"]["name"] == scheduled_job_name("once", due)
    created = datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert due <= created <= due + timedelta(seconds=10), (created, due)
    status = eventually(lambda: (s := status_of(cluster, namespace, "once")).get("recentRuns") and s,
                        timeout=60, message="the run recorded")
    assert status["lastResult"] == "Succeeded" and status["recentRuns"][0]["scheduledTime"] == format_logical_time(due)
    assert status.get("nextScheduleTime") is None
    consistently(lambda: len(_jobs(cluster, namespace, "once")) == 1, duration=8, message="fired once")


def test_a_finished_one_off_schedule_is_deleted_after_its_ttl(cluster, namespace, operator):
    """Issue 17: a finished one-off schedule stayed for ever. With ttlSecondsAfterFinished the
    operator deletes it once its run is recorded (and the CronJob goes with it)."""
    body = yaml.safe_load(schedule("ephemeral"))
    body["spec"].pop("schedule")
    # This minute (in the past, within the 5-minute grace): due at once, no deadline set.
    body["spec"]["runAt"] = format_logical_time(datetime.now(UTC).replace(second=0, microsecond=0))
    body["spec"]["ttlSecondsAfterFinished"] = 5
    apply(cluster, namespace, json.dumps(body))
    simulate(cluster, namespace, "ephemeral", message={"jobType": "container", "succeeded": True, "items": 1})
    status = eventually(lambda: (s := status_of(cluster, namespace, "ephemeral")).get("recentRuns") and s,
                        timeout=60, message="the one-off run recorded")
    finished = datetime.fromisoformat(status["recentRuns"][0]["completionTime"].replace("Z", "+00:00"))
    eventually(lambda: get(cluster, namespace, "collectionschedule", "ephemeral") is None, timeout=60,
               message="the schedule deleted after its TTL")
    gone = datetime.now(UTC)  # seen gone within a poll of its deletion: not before the TTL ran out
    assert gone >= finished + timedelta(seconds=5), (gone, finished)
    # The operator posts Expired after the delete it reports: wait for it, do not race it.
    eventually(lambda: any(e.get("reason") == "Expired" and "ttlSecondsAfterFinished=5" in e.get("note", "")
                           for e in json.loads(cluster.kubectl("get", "events.events.k8s.io", "-n", namespace,
                                                               "-o", "json").stdout)["items"]),
               timeout=30, message="the Expired Event")
    eventually(lambda: get(cluster, namespace, "cronjob", "ephemeral") is None, timeout=60,
               message="the CronJob garbage-collected with it")
