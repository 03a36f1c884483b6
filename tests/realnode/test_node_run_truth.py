"""Issue 13 on the real node (named to sort before test_real_node.py, whose last test takes the
cluster down): the table of the issue, one row each, with the real kubelet,
containerd and the real operator. Before issue 13 the first four rows showed Ready=True and
nothing active for 300 s, then TimedOut; now the cause is on the schedule within a minute and
the run is recorded as FailedToStart by startupTimeoutSeconds + 30 s, or truthfully once the
kubelet is back.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from tests.helpers.wait import eventually
from tests.realnode.test_real_node import NODE, _json, _schedule

pytestmark = pytest.mark.realnode

STARTUP_TIMEOUT = 20


def _status(cluster, ns: str, name: str) -> dict:
    return _json(cluster, "get", "collectionschedule", name, "-n", ns).get("status") or {}


def _condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def _run_now(cluster, ns: str, name: str) -> None:
    eventually(lambda: cluster.kubectl("get", "cronjob", name, "-n", ns, check=False).returncode == 0,
               timeout=60, message=f"CronJob {name}")
    cluster.kubectl("annotate", "--overwrite", "collectionschedule", name, "-n", ns,
                    f"thresher.dev/run-now={uuid.uuid4().hex}")


def _blocked(cluster, ns: str, name: str, reason: str) -> dict:
    def found():
        status = _status(cluster, ns, name)
        entries = [e for e in status.get("active") or [] if e.get("reason") == reason]
        return entries and _condition(status, "RunBlocked").get("status") == "True" and entries[0]
    return eventually(found, timeout=60, interval=1, message=f"{name} blocked with {reason}")


def _runs(cluster, ns: str, name: str, count: int, timeout: float) -> list[dict]:
    return eventually(lambda: len(runs := _status(cluster, ns, name).get("recentRuns") or []) >= count and runs,
                      timeout=timeout, interval=1, message=f"{count} recorded run(s) of {name}")


def _container(image: str, command: list[str] | None = None, **extra) -> dict:
    return {"container": {"image": image, **({"command": command} if command else {}), **extra}}


def test_each_row_of_the_table_shows_its_cause_and_ends_truthfully(node_cluster, operator, restricted_namespace,
                                                                    jobs_image, registry):
    ns = restricted_namespace
    pc = f"rn-missing-{uuid.uuid4().hex[:6]}"
    # A wrong reference in the real registry (the pull Secret is there): see docs/devcluster.md,
    # "The registry", for what containerd 1.6 reports after the registry's 404.
    missing = f"{registry.address}/thresher/does-not-exist:1"
    schedules = [
        _schedule("bad-image", ns, _container(missing, ["true"]),
                  startupTimeoutSeconds=STARTUP_TIMEOUT),
        _schedule("no-secret", ns, _container(jobs_image, ["python", "-c", "print(1)"], env=[
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "rn-token", "key": "token"}}}]),
                  startupTimeoutSeconds=STARTUP_TIMEOUT),
        _schedule("no-priority", ns, _container(jobs_image, ["true"]), priorityClassName=pc,
                  startupTimeoutSeconds=STARTUP_TIMEOUT),
        _schedule("oom", ns, _container(jobs_image, ["python", "-c", "b = bytearray(400 * 2**20); print(len(b))"]),
                  resources={"cpu": "100m", "memory": "32Mi", "memoryLimit": "48Mi"}),
    ]
    node_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(s) for s in schedules))
    for s in schedules:
        _run_now(node_cluster, ns, s["metadata"]["name"])

    causes = {
        "bad-image": ("ImagePullBackOff", f'image "{missing}" cannot be pulled'),
        "no-secret": ("CreateContainerConfigError", f'Secret "rn-token" does not exist in namespace {ns}'),
        "no-priority": ("FailedCreate", f"no PriorityClass with name {pc} was found"),
    }
    for name, (reason, text) in causes.items():
        entry = _blocked(node_cluster, ns, name, reason)
        assert text in entry["message"], entry
    for name, (reason, text) in causes.items():
        run = _runs(node_cluster, ns, name, 1, timeout=STARTUP_TIMEOUT + 30)[0]
        assert (run["outcome"], run["reason"]) == ("FailedToStart", reason), run
        assert text in run["message"], run
    oom = _runs(node_cluster, ns, "oom", 1, timeout=120)[0]
    assert oom["outcome"] == "Failed" and "exit code 137 (OOMKilled)" in oom["message"], oom

    # The fix: the Secret exists. The next run succeeds and the condition is False again.
    node_cluster.kubectl("create", "secret", "generic", "rn-token", "-n", ns, "--from-literal=token=t")
    _run_now(node_cluster, ns, "no-secret")
    runs = _runs(node_cluster, ns, "no-secret", 2, timeout=120)
    assert runs[0]["outcome"] == "Succeeded", runs[0]
    status = _status(node_cluster, ns, "no-secret")
    assert _condition(status, "RunBlocked")["status"] == "False" and not status.get("active")


def test_kubelet_killed_during_a_run_is_recorded_once_after_it_restarts(node_cluster, node, operator,
                                                                         restricted_namespace, jobs_image):
    """kill -9 of the kubelet 10 s into a 40 s container, restarted 10 s later: the container
    ran on under containerd; the run is recorded exactly once, Succeeded, with its exit code."""
    ns = restricted_namespace
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(_schedule(
        "sleeper", ns, _container(jobs_image, ["python", "-c", "import time; time.sleep(40)"]))))
    _run_now(node_cluster, ns, "sleeper")
    eventually(lambda: any(e.get("phase") == "Running" and e.get("node") == NODE
                           for e in _status(node_cluster, ns, "sleeper").get("active") or []),
               timeout=90, interval=1, message="the run Running on the real node")
    time.sleep(10)
    os.kill(node.pids()["kubelet"], signal.SIGKILL)
    eventually(lambda: not node.running("kubelet"), timeout=10, message="kubelet gone")
    time.sleep(10)
    node.up(node_cluster.kubectl, log=lambda m: print(f"[realnode] {m}"))
    runs = _runs(node_cluster, ns, "sleeper", 1, timeout=120)
    time.sleep(5)  # a second Job event after the record must not add a second one
    status = _status(node_cluster, ns, "sleeper")
    assert len(status["recentRuns"]) == 1 and status["stats"]["runs"] == 1, status["recentRuns"]
    assert runs[0]["outcome"] == "Succeeded", runs[0]
    assert not status.get("active")
