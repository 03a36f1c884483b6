"""Fan-out on the real control plane (issue 18, points 3 and 4): a drone schedule with
``parallelism: 3`` and GPUs runs as an Indexed Job whose three indexes land on GPU nodes (kwok's
kwok-gpu-1 with 8 GPUs and a second GPU node this test adds with 4: at 4 GPUs an index, two fit on
the first and one on the second), and the operator records the run with every index's result.
A ReadWriteOnce claim that the indexes could not share is reported as PrerequisitesMissing.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import kubectl_json
from tests.helpers.wait import eventually
from tests.integration.test_operator import apply, condition, run_now, simulate, status_of, wait_runs
from thresher.api.names import COMPLETION_INDEX_ANNOTATION
from thresher.devcluster.cluster import GPU_NODE
from thresher.devcluster.kwok.nodes import node_manifest

pytestmark = pytest.mark.integration

SECOND_GPU_NODE = "kwok-gpu-fanout"


@pytest.fixture
def second_gpu_node(cluster):
    """A second simulated GPU node (kwok manages nodes with its annotation), removed afterwards."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node_manifest(SECOND_GPU_NODE, gpus=4)))
    eventually(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                           (kubectl_json(cluster, "get", "node", SECOND_GPU_NODE).get("status") or {})
                           .get("conditions") or []), timeout=60, message="second GPU node Ready")
    yield SECOND_GPU_NODE
    cluster.kubectl("delete", "node", SECOND_GPU_NODE, "--wait=false", check=False)


def shared_claim(cluster, namespace: str, name: str, mode: str) -> None:
    """A claim bound to a hostPath volume of its own (kwok runs no provisioner; pods are simulated, so
    nothing is mounted): bound, it does not keep the pods from being scheduled."""
    volume = f"{namespace}-{name}"[:63]
    docs = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [mode], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": f"/tmp/{volume}"},
                  "claimRef": {"namespace": namespace, "name": name}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
         "spec": {"accessModes": [mode], "storageClassName": "", "volumeName": volume,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    eventually(lambda: kubectl_json(cluster, "get", "pvc", name, "-n", namespace)["status"].get("phase") == "Bound",
               timeout=60, message=f"claim {name} bound")


def fanned(name: str, claim: str, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule", "metadata": {"name": name},
        "spec": {"schedule": "0 0 1 1 *", "storage": {"claimName": claim},
                 "job": {"drone": {"task": "process", "inputPath": "orthomosaics", "parallelism": 3}}, **spec}})


def test_three_indexes_land_on_gpu_nodes_and_the_run_counts_them_all(cluster, namespace, operator,
                                                                      second_gpu_node):
    shared_claim(cluster, namespace, "orthomosaics", "ReadWriteMany")
    apply(cluster, namespace, fanned("ortho", "orthomosaics", resources={"gpus": 4, "cpu": "1", "memory": "1Gi"}))
    result = {"version": 1, "jobType": "drone", "succeeded": True, "items": 2, "valid": 2, "failed": 0,
              "exitCode": 0}
    simulate(cluster, namespace, "ortho", message=result, duration="2s")
    run_now(cluster, namespace, "ortho")
    job = eventually(lambda: next(iter(kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"]), None),
                     timeout=60, message="the run's Job")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"],
            job["spec"]["backoffLimitPerIndex"]) == ("Indexed", 3, 3, 0)

    def placed():
        pods = [p for p in kubectl_json(cluster, "get", "pods", "-n", namespace)["items"] if p["spec"].get("nodeName")]
        return len(pods) == 3 and pods

    pods = eventually(placed, timeout=60, message="three indexes scheduled")
    placement = {int(p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]): p["spec"]["nodeName"] for p in pods}
    print("placement of the indexes:", placement)  # shown with pytest -s (docs/drone.md)
    assert sorted(placement) == [0, 1, 2]
    assert sorted(placement.values()) == sorted([GPU_NODE, GPU_NODE, second_gpu_node])
    for p in pods:
        env = {e["name"]: e for e in p["spec"]["containers"][0]["env"]}
        assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"].endswith(
            "['batch.kubernetes.io/job-completion-index']")  # set by Kubernetes for Indexed Jobs
        assert "THRESHER_RUN_ID" in env
    run = wait_runs(cluster, namespace, "ortho", 1, timeout=90)["recentRuns"][0]
    assert run["outcome"] == "Succeeded" and run["result"]["items"] == 6 and run["result"]["valid"] == 6


def test_a_read_write_once_claim_the_indexes_cannot_share_is_reported(cluster, namespace, operator):
    shared_claim(cluster, namespace, "single-node", "ReadWriteOnce")
    apply(cluster, namespace, fanned("rwo", "single-node"))
    missing = eventually(lambda: (c := condition(status_of(cluster, namespace, "rwo"), "PrerequisitesMissing"))
                         and c.get("status") == "True" and c, timeout=60, message="PrerequisitesMissing")
    assert 'PersistentVolumeClaim "single-node" is ReadWriteOnce: job.drone.parallelism 3 needs a ReadWriteMany' \
        in missing["message"]
    # Pinned to one node, the same claim is fine.
    apply(cluster, namespace, fanned("rwo", "single-node", nodeSelector={"kubernetes.io/hostname": GPU_NODE}))
    eventually(lambda: condition(status_of(cluster, namespace, "rwo"), "PrerequisitesMissing").get("status") == "False",
               timeout=60, message="PrerequisitesMissing cleared")
