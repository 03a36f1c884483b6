"""Retries with a delay across Jobs (`spec.retryPolicy`) on the real control plane (issue 17).

The runs are simulated by kwok (`simulate`: every pod of the schedule exits with the code it is
told), so a failing run fails again on its retry, on time and quickly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from tests.helpers.wait import consistently, eventually
from tests.integration.test_intervals import _jobs
from tests.integration.test_operator import apply, run_now, sample, schedule, simulate, status_of
from thresher.api.names import ATTEMPT_ANNOTATION, RETRY_OF_ANNOTATION
from thresher.api.runnames import retry_job_name

pytestmark = pytest.mark.integration

DELAY = 15


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_failing_run_is_retried_after_the_delay_and_recorded_as_one_run_with_attempts(cluster, namespace,
                                                                                         operator):
    """Issue 17: retries were only Kubernetes' own, inside one Job (10 s doubling). A failed run
    waits retryPolicy.delaySeconds (status and `thresher status` show it), is retried as a new
    Job under a deterministic name, and is recorded once with both attempts: one failed run for
    consecutiveFailures and thresher_schedule_runs_total."""
    apply(cluster, namespace, schedule("flaky", retryPolicy={"attempts": 2, "delaySeconds": DELAY}))
    simulate(cluster, namespace, "flaky", exit_code=3)  # an upstream failure: worth retrying
    run_now(cluster, namespace, "flaky")

    waiting = eventually(lambda: next(iter(status_of(cluster, namespace, "flaky").get("retrying") or []), None),
                         timeout=60, message="the run waiting for its retry")
    first = waiting["attempts"][0]
    assert first["outcome"] == "Failed" and first["exitCode"] == 3 and waiting["maxAttempts"] == 2
    due = _time(waiting["nextAttemptTime"])
    assert due == _time(first["completionTime"]) + timedelta(seconds=DELAY)
    shown = subprocess.run([sys.executable, "-m", "thresher.cli", "status", "-n", namespace], capture_output=True,
                           text=True, env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, timeout=60)
    assert f"attempt 2 of 2 at {waiting['nextAttemptTime']}" in shown.stdout, shown.stdout + shown.stderr
    assert status_of(cluster, namespace, "flaky").get("recentRuns") in (None, [])

    second = retry_job_name("flaky", first["jobName"], 2)
    job = eventually(lambda: next((j for j in _jobs(cluster, namespace, "flaky") if j["metadata"]["name"] == second),
                                  None), timeout=DELAY + 30, message="the retry's Job")
    created = _time(job["metadata"]["creationTimestamp"])
    assert due <= created <= due + timedelta(seconds=10), (created, due)  # on time: the 2 s recheck tick
    assert job["metadata"]["annotations"][RETRY_OF_ANNOTATION] == first["jobName"]
    assert job["metadata"]["annotations"][ATTEMPT_ANNOTATION] == "2"

    status = eventually(lambda: (s := status_of(cluster, namespace, "flaky")).get("recentRuns") and s,
                        timeout=60, message="the run recorded")
    (run,) = status["recentRuns"]
    assert run["jobName"] == first["jobName"] and run["outcome"] == "Failed" and run["maxAttempts"] == 2
    assert [(a["attempt"], a["jobName"], a["outcome"]) for a in run["attempts"]] == [
        (1, first["jobName"], "Failed"), (2, second, "Failed")]
    assert "attempt 2 of 2 failed: no attempts left" in run["message"]
    assert status["consecutiveFailures"] == 1 and not status.get("retrying")
    mine = {"namespace": namespace, "schedule": "flaky"}
    eventually(lambda: sample(operator.metrics(), "thresher_schedule_runs_total",
                              {**mine, "job_type": "container", "outcome": "failed"}) == 1.0,
               timeout=20, message="one failed run counted, not two attempts")
    consistently(lambda: len(_jobs(cluster, namespace, "flaky")) == 2, duration=5, message="no third attempt")


def test_exit_code_2_is_not_retried(cluster, namespace, operator):
    """A configuration error fails the same way every time: no attempt is spent on it."""
    apply(cluster, namespace, schedule("misconfigured", retryPolicy={"attempts": 3, "delaySeconds": 0}))
    simulate(cluster, namespace, "misconfigured", exit_code=2)
    run_now(cluster, namespace, "misconfigured")
    status = eventually(lambda: (s := status_of(cluster, namespace, "misconfigured")).get("recentRuns") and s,
                        timeout=60, message="the run recorded")
    (run,) = status["recentRuns"]
    assert run["exitCode"] == 2 and len(run["attempts"]) == 1 and "configuration error" in run["message"]
    consistently(lambda: len(_jobs(cluster, namespace, "misconfigured")) == 1, duration=5, message="no retry")
