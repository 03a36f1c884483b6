"""Backfill Jobs on the real control plane and operator (issue 17), below the CLI.

Pins the contract the ``thresher backfill`` command and the reconciler will build on: the
planned Jobs (the CronJob's template, ``runjobs.run_job``) pass admission and run under the
real Job controller, a second plan over the same window creates nothing (the names are the
idempotency key, and the API server refuses a repeated create), each pod gets its logical
time in ``THRESHER_LOGICAL_TIME``, and the operator records each run for its logical time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers.wait import eventually
from tests.integration.test_operator import apply, get, schedule, simulate, status_of
from thresher.api.backfill import plan_backfill
from thresher.api.runnames import LOGICAL_TIME_ENV
from thresher.operator.runjobs import run_job

pytestmark = pytest.mark.integration


def _job_names(cluster, namespace: str, name: str) -> set[str]:
    proc = cluster.kubectl("get", "jobs", "-n", namespace, "-l", f"thresher.dev/schedule={name}", "-o", "json")
    return {j["metadata"]["name"] for j in json.loads(proc.stdout)["items"]}


def test_backfill_of_an_hour_of_every_ten_minutes_runs_six_jobs_once(cluster, namespace, operator):
    # Suspended: the CronJob controller fires nothing of its own during the test.
    apply(cluster, namespace, schedule("bf", cron="*/10 * * * *", suspend=True))
    simulate(cluster, namespace, "bf", message={"jobType": "container", "succeeded": True, "items": 1})
    cronjob = eventually(lambda: get(cluster, namespace, "cronjob", "bf"), timeout=30, message="CronJob")
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)

    plan = plan_backfill("bf", cronjob["spec"]["schedule"], None, None, start, end, now,
                         existing_job_names=_job_names(cluster, namespace, "bf"))
    assert len(plan.new) == 6
    for run in plan.new:
        cluster.kubectl("create", "-f", "-", input=json.dumps(run_job(cronjob, run.job_name, {}, run.logical_time)))

    again = plan_backfill("bf", cronjob["spec"]["schedule"], None, None, start, end, now,
                          existing_job_names=_job_names(cluster, namespace, "bf"))
    assert again.runs == plan.runs and again.new == ()
    # A second create of the same run (a retried call, a restart) is refused by name.
    first = plan.runs[0]
    repeat = cluster.kubectl("create", "-f", "-", check=False,
                             input=json.dumps(run_job(cronjob, first.job_name, {}, first.logical_time)))
    assert repeat.returncode != 0 and "AlreadyExists" in repeat.stderr

    # The Job controller creates the pod a moment after the Job (under load, after this line ran once).
    pods = eventually(lambda: json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l",
                                                         f"job-name={first.job_name}", "-o", "json").stdout)["items"],
                      timeout=30, message="the backfilled Job's pod")
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env[LOGICAL_TIME_ENV] == first.logical_time_value

    expected = {r.job_name: r.logical_time_value for r in plan.runs}

    def recorded() -> dict[str, str] | None:
        runs = {r["jobName"]: r.get("scheduledTime") for r in status_of(cluster, namespace, "bf").get("recentRuns") or []
                if r["jobName"] in expected}
        return runs if runs == expected else None

    eventually(recorded, timeout=120, message="six backfilled runs recorded for their logical times")
    assert {r["outcome"] for r in status_of(cluster, namespace, "bf")["recentRuns"]} == {"Succeeded"}


def _thresher(cluster, *args: str):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "thresher.cli", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, timeout=120)


def test_thresher_backfill_runs_an_hour_of_every_ten_minutes_once_through_the_operator(cluster, namespace, operator):
    """Issue 17: `thresher backfill NAME --from --to` asks the operator (annotation), which creates
    one Job per fire time; a second call creates none; the runs are recorded as backfill with their
    logical times and leave lastSuccessfulTime alone; a window over the cap is refused in one line."""
    apply(cluster, namespace, schedule("bfcli", cron="*/10 * * * *", suspend=True))
    simulate(cluster, namespace, "bfcli", message={"jobType": "container", "succeeded": True, "items": 1})
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)
    window = ("--from", start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--to", end.strftime("%Y-%m-%dT%H:%M:%SZ"))

    first = _thresher(cluster, "backfill", "bfcli", "-n", namespace, *window)
    assert first.returncode == 0, first.stderr
    printed = first.stdout.split()
    assert len(printed) == 6 and "6 run(s) in the window, 6 new" in first.stderr
    # The CronJob controller keeps 3 finished Jobs (successfulJobsHistoryLimit): the rest are in status.
    assert {f"job.batch/{n}" for n in _job_names(cluster, namespace, "bfcli")} <= set(printed)
    # The window is recorded, so no later call repeats it once its Jobs are cleaned up.
    recorded = eventually(lambda: status_of(cluster, namespace, "bfcli").get("backfilled"), timeout=30,
                          message="the window in status.backfilled")
    assert recorded == [{"from": window[1], "to": window[3]}]

    again = _thresher(cluster, "backfill", "bfcli", "-n", namespace, *window)
    assert again.returncode == 0 and again.stdout.split() == printed, again.stderr
    assert "6 run(s) in the window, 0 new" in again.stderr
    assert {f"job.batch/{n}" for n in _job_names(cluster, namespace, "bfcli")} <= set(printed)

    status = eventually(lambda: (s := status_of(cluster, namespace, "bfcli")) and len(s.get("recentRuns") or []) == 6
                        and s, timeout=90, message="six backfilled runs recorded")
    assert all(run["backfill"] and run["outcome"] == "Succeeded" for run in status["recentRuns"])
    assert sorted(run["scheduledTime"] for run in status["recentRuns"]) == [
        (start + timedelta(minutes=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(6)]
    assert "lastSuccessfulTime" not in status

    huge = _thresher(cluster, "backfill", "bfcli", "-n", namespace, "--from", "2026-01-01T00:00:00Z",
                     "--to", "2026-02-01T00:00:00Z")
    assert huge.returncode == 1 and huge.stderr.count("\n") == 1 and "backfill at most 100 runs" in huge.stderr
