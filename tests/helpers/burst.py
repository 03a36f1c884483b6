"""A burst of run completions around an operator that dies: shared by the restart test
(tests/integration/test_operator_restart.py), the leader-election test
(tests/integration/test_operator_ha.py) and the chart's pods on the real node
(tests/realnode/test_operator_pod.py).

``start_burst`` applies N schedules whose simulated runs (kwok) last 1-4 s, asks a run-now of
each, and returns once the operator has handled every run-now (a Job carries each request's
token) and the first run is recorded: the moment to kill the operator, with runs still
finishing. Waiting for the Jobs makes the kill point deterministic: killed earlier, the
operator may not have seen the last annotation yet, and no Job for it exists while it is down.
``assert_each_run_recorded_once`` is the check after the restart or takeover."""

from __future__ import annotations

import json

from tests.helpers.wait import eventually
from tests.integration.test_operator import run_now, schedule, simulate, status_of
from thresher.api.names import RECORDED_ANNOTATION, RUN_TOKEN_ANNOTATION


def jobs(cluster, namespace: str) -> list[dict]:
    return json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]


def job_tokens(cluster, namespace: str) -> set[str]:
    """The run-now tokens the operator made a Job for (each manual Job carries its token)."""
    return {(j["metadata"].get("annotations") or {}).get(RUN_TOKEN_ANNOTATION) for j in jobs(cluster, namespace)}


def start_burst(cluster, namespace: str, count: int = 8, timeout: float = 60, **schedule_fields) -> list[str]:
    """``count`` schedules ``burst-<i>``, run ``i`` lasting ``1 + i % 4`` s and reporting ``i``
    items, a run-now each; returns their names once every run-now has its Job and one run is
    recorded. ``schedule_fields`` go into each schedule's spec (e.g. kwok's nodeSelector)."""
    names = [f"burst-{i}" for i in range(count)]
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input="---\n".join(schedule(n, **schedule_fields) for n in names))
    for i, name in enumerate(names):
        simulate(cluster, namespace, name, duration=f"{1 + i % 4}s",
                 message={"jobType": "container", "succeeded": True, "items": i})
    tokens = {run_now(cluster, namespace, name) for name in names}
    eventually(lambda: tokens <= job_tokens(cluster, namespace), timeout=timeout,
               message="a Job for every run-now (the operator saw each annotation)")
    eventually(lambda: any(status_of(cluster, namespace, n).get("recentRuns") for n in names),
               timeout=timeout, message="first run recorded")
    return names


def assert_each_run_recorded_once(cluster, namespace: str, names: list[str], timeout: float = 60) -> None:
    """Every run of the burst recorded exactly once (one status entry with its own items, runs 1),
    and every Job marked recorded."""
    for i, name in enumerate(names):
        status = eventually(lambda: (s := status_of(cluster, namespace, name)).get("recentRuns") and s,
                            timeout=timeout, message=f"run of {name} recorded")
        assert len(status["recentRuns"]) == 1, json.dumps(status["recentRuns"])
        assert status["recentRuns"][0]["result"]["items"] == i
        assert status["stats"]["runs"] == 1
    eventually(lambda: all((j["metadata"].get("annotations") or {}).get(RECORDED_ANNOTATION) == "true"
                           for j in jobs(cluster, namespace)),
               timeout=30, message="every Job marked recorded")
