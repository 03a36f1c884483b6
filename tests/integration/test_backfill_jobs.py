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

    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", f"job-name={first.job_name}",
                                      "-o", "json").stdout)["items"]
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env[LOGICAL_TIME_ENV] == first.logical_time_value

    expected = {r.job_name: r.logical_time_value for r in plan.runs}

    def recorded() -> dict[str, str] | None:
        runs = {r["jobName"]: r.get("scheduledTime") for r in status_of(cluster, namespace, "bf").get("recentRuns") or []
                if r["jobName"] in expected}
        return runs if runs == expected else None

    eventually(recorded, timeout=120, message="six backfilled runs recorded for their logical times")
    assert {r["outcome"] for r in status_of(cluster, namespace, "bf")["recentRuns"]} == {"Succeeded"}
