"""The blocked-run classifier fed by the real control plane: the real Job controller, admission
and scheduler write the Events and conditions, ``active_run`` must name the cause.

Pins issue 13: these runs showed nothing on the schedule until timeoutSeconds. The operator is
not involved (test_run_truth.py covers the operator); plain Jobs in a fresh namespace are enough.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml

from tests.conftest import kubectl_json
from tests.helpers.wait import eventually
from thresher.operator.activeruns import Grace, active_run

pytestmark = pytest.mark.integration

RESTRICTED = {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _job(cluster, namespace: str, *, pod_spec: dict | None = None, container: dict | None = None,
         secure: bool = True, annotations: dict | None = None) -> None:
    box = {"name": "job", "image": "busybox:1.36", "command": ["true"], **(container or {})}
    if secure:
        box["securityContext"] = RESTRICTED
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "blocked"},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [box], **(pod_spec or {})}}}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))


def _entry(cluster, namespace: str):
    job = kubectl_json(cluster, "get", "job", "blocked", "-n", namespace)
    pods = kubectl_json(cluster, "get", "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name=blocked")
    events = kubectl_json(cluster, "get", "events", "-n", namespace)
    nodes = kubectl_json(cluster, "get", "nodes")
    pvcs = kubectl_json(cluster, "get", "pvc", "-n", namespace)
    return active_run(job, pods["items"], events["items"], nodes["items"], pvcs["items"],
                      Grace(unschedulable_seconds=0), datetime.now(timezone.utc))


def _blocked(cluster, namespace: str, reason: str):
    return eventually(lambda: (e := _entry(cluster, namespace)).reason == reason and e, timeout=30,
                      message=f"run blocked with {reason}")


def test_missing_priority_class_is_failed_create_with_the_admission_message(cluster, namespace):
    _job(cluster, namespace, pod_spec={"priorityClassName": "does-not-exist"})
    entry = _blocked(cluster, namespace, "FailedCreate")
    assert entry.message == ('the Job controller cannot create the pod: pods "blocked-" is forbidden: '
                             "no PriorityClass with name does-not-exist was found")


def test_pod_security_rejection_is_failed_create(cluster, namespace):
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    _job(cluster, namespace, secure=False)
    entry = _blocked(cluster, namespace, "FailedCreate")
    assert 'is forbidden: violates PodSecurity "restricted:latest": ' in entry.message


def test_no_node_with_enough_gpus_is_unschedulable_with_the_schedulers_reason(cluster, namespace):
    _job(cluster, namespace, container={"resources": {"limits": {"nvidia.com/gpu": "99"}}})
    entry = _blocked(cluster, namespace, "Unschedulable")
    assert entry.message.startswith("no node can run the pod: 0/") and "Insufficient nvidia.com/gpu" in entry.message
    assert "preemption" not in entry.message and entry.node is None


def test_a_missing_claim_is_unbound_pvc(cluster, namespace):
    _job(cluster, namespace, pod_spec={"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "nope"}}]},
         container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]})
    entry = _blocked(cluster, namespace, "UnboundPVC")
    assert entry.message == f'PersistentVolumeClaim "nope" does not exist in namespace {namespace}'


def test_a_run_on_a_kwok_node_is_running_not_blocked(cluster, namespace):
    """The control case: a pod that kwok runs is never reported blocked on its way."""
    _job(cluster, namespace, pod_spec={"tolerations": [{"operator": "Exists"}]},
         annotations={"sim.thresher.dev/duration": "30s"})  # kwok's stage: runs 30 s
    seen = []

    def running():
        entry = _entry(cluster, namespace)
        seen.append(entry.phase if entry else "Finished")
        return entry is not None and entry.phase == "Running" and entry.node

    eventually(running, timeout=30, message="Running on a kwok node")
    assert "Blocked" not in seen, seen
