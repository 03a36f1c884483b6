"""kill -9 of the operator mid-way: nothing duplicated, nothing lost, status converges."""

from __future__ import annotations

import time

import pytest

from tests.conftest import kubectl_json
from tests.helpers.burst import assert_each_run_recorded_once, start_burst
from tests.helpers.wait import eventually
from tests.integration.test_operator import apply, schedule, status_of

pytestmark = pytest.mark.integration


def test_kill_during_creation_storm_then_restart_converges(cluster, namespace, operator):
    """Schedules created while the operator dies get exactly one CronJob each after restart."""
    names = [f"storm-{i}" for i in range(15)]
    manifest = "---\n".join(schedule(n) for n in names)
    apply(cluster, namespace, manifest)
    time.sleep(0.5)  # deliberately mid-way: some schedules handled, some not
    operator.kill()
    operator.start()
    eventually(lambda: all((status_of(cluster, namespace, n).get("cronJobRef") or {}).get("name") == n
                           for n in names), timeout=90, message="every schedule reconciled")
    cronjobs = kubectl_json(cluster, "get", "cronjobs", "-n", namespace)["items"]
    assert sorted(cj["metadata"]["name"] for cj in cronjobs) == sorted(names)


def test_kill_during_completion_burst_records_each_run_exactly_once(cluster, namespace, operator):
    """Runs finishing while the operator is dead are recorded after the restart, each once;
    runs recorded before the kill are not recorded again."""
    # Every run-now has its Job and a few runs are recorded: kill while the rest still run.
    names = start_burst(cluster, namespace)
    operator.kill()
    eventually(lambda: all(_job_done(j) for j in kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"])
               and len(kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"]) == len(names),
               timeout=60, message="all Jobs finished while the operator is down")
    operator.start()
    assert_each_run_recorded_once(cluster, namespace, names)
    assert len(kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"]) == len(names)


def _job_done(job: dict) -> bool:
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in job.get("status", {}).get("conditions") or [])


def test_sigterm_stops_the_operator_gracefully(operator):
    """SIGTERM (what Kubernetes sends on pod deletion) ends the operator cleanly: exit code 0,
    liveness endpoint gone; it starts again afterwards."""
    assert operator.stop() == 0, operator.log_tail()
    assert not _live(operator.liveness_port)
    operator.start()


def _live(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False
