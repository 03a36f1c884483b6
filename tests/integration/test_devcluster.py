"""Smoke tests of the local control plane: the real CronJob, Job, scheduler and GC controllers
working with kwok's simulated nodes and the project's pod stages."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import yaml

from tests.conftest import kubectl_json
from tests.helpers.wait import consistently, eventually
from thresher.devcluster.cluster import CPU_NODES, GPU_NODE, GPU_RESOURCE

pytestmark = pytest.mark.integration


def cronjob(name: str, *, annotations: dict | None = None, backoff_limit: int = 0,
            schedule: str = "0 0 1 1 *") -> str:
    """A CronJob that never fires by itself (yearly) unless told otherwise."""
    return yaml.safe_dump({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"spec": {
                "backoffLimit": backoff_limit,
                "template": {
                    "metadata": {"annotations": annotations or {}},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "main", "image": "busybox"}]},
                },
            }},
        },
    })


def pods_of_job(cluster, namespace: str, job: str) -> list[dict]:
    return kubectl_json(cluster, "get", "pods", "-n", namespace, "-l", f"job-name={job}")["items"]


def job_condition(cluster, namespace: str, job: str) -> str | None:
    status = kubectl_json(cluster, "get", "job", job, "-n", namespace).get("status", {})
    for cond in status.get("conditions", []):
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return cond["type"]
    return None


def test_cronjob_run_is_scheduled_and_completes(cluster, namespace):
    """A Job created from a CronJob gets a pod placed by the real scheduler on a CPU node,
    kwok completes it, the Job controller marks the Job Complete, and a termination message
    set on the pod reaches the terminated container state (the operator reads run results there)."""
    message = json.dumps({"version": 1, "jobType": "container", "succeeded": True, "items": 7})
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=cronjob("hello", annotations={"sim.thresher.dev/message": message}))
    cluster.kubectl("create", "job", "hello-manual", "--from=cronjob/hello", "-n", namespace)

    assert eventually(lambda: job_condition(cluster, namespace, "hello-manual") == "Complete",
                      timeout=60, message="Job Complete")
    (pod,) = pods_of_job(cluster, namespace, "hello-manual")
    assert pod["spec"]["nodeName"] in CPU_NODES
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert json.loads(terminated["message"]) == json.loads(message)


def test_every_minute_cronjob_fires_by_itself(cluster, namespace):
    """The real CronJob controller creates a Job on schedule, stamped with the scheduled time."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cronjob("tick", schedule="* * * * *"))
    jobs = eventually(lambda: kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"],
                      timeout=75, message="a Job from the every-minute CronJob")
    annotations = jobs[0]["metadata"].get("annotations", {})
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in annotations


def gpu_pod(name: str, *, request_gpu: bool, tolerate: bool) -> str:
    container = {"name": "main", "image": "busybox"}
    if request_gpu:
        container["resources"] = {"limits": {GPU_RESOURCE: "1"}}
    spec = {"containers": [container], "restartPolicy": "Never"}
    if tolerate:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def test_gpu_pods_land_on_the_gpu_node_and_only_there(cluster, namespace):
    """The GPU node advertises nvidia.com/gpu and is tainted: a pod that asks for a GPU and
    tolerates the taint runs there; ordinary pods never do; a GPU request without the
    toleration cannot be placed anywhere."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gpu_pod("gpu", request_gpu=True, tolerate=True))
    for i in range(4):
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=gpu_pod(f"plain-{i}", request_gpu=False, tolerate=False))
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=gpu_pod("gpu-untolerated", request_gpu=True, tolerate=False))

    def node_of(pod: str) -> str | None:
        return kubectl_json(cluster, "get", "pod", pod, "-n", namespace)["spec"].get("nodeName")

    assert eventually(lambda: node_of("gpu"), timeout=30, message="GPU pod scheduled") == GPU_NODE
    for i in range(4):
        assert eventually(lambda: node_of(f"plain-{i}"), timeout=30, message="plain pod") in CPU_NODES
    consistently(lambda: node_of("gpu-untolerated") is None, duration=3,
                 message="a GPU pod without the toleration stays unscheduled")


def test_failing_pod_fails_the_job_after_its_backoff_limit(cluster, namespace):
    """Annotations make kwok fail the container with an exit code, reason and message; the Job
    retries backoffLimit times and is then Failed."""
    annotations = {"sim.thresher.dev/exit-code": "3", "sim.thresher.dev/reason": "UpstreamDown",
                   "sim.thresher.dev/message": "tmdb unreachable"}
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=cronjob("flaky", annotations=annotations, backoff_limit=1))
    cluster.kubectl("create", "job", "flaky-manual", "--from=cronjob/flaky", "-n", namespace)

    assert eventually(lambda: job_condition(cluster, namespace, "flaky-manual") == "Failed",
                      timeout=90, message="Job Failed")
    pods = pods_of_job(cluster, namespace, "flaky-manual")
    assert len(pods) == 2  # the first try and one retry
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
            3, "UpstreamDown", "tmdb unreachable")


def test_deleting_a_cronjob_garbage_collects_its_jobs(cluster, namespace):
    """Jobs carry an ownerReference to their CronJob; the real garbage collector removes them."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cronjob("gc"))
    cluster.kubectl("create", "job", "gc-manual", "--from=cronjob/gc", "-n", namespace)
    eventually(lambda: job_condition(cluster, namespace, "gc-manual"), timeout=60, message="Job done")
    cluster.kubectl("delete", "cronjob", "gc", "-n", namespace)
    eventually(lambda: not kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"],
               timeout=60, message="Jobs garbage-collected")


def test_up_is_idempotent_and_restarts_a_killed_component(cluster):
    """`up` on a running cluster changes nothing; after kill -9 of one component it restarts
    exactly that one and the cluster is usable again."""
    before = {n: s.pid for n, s in cluster.components().items()}
    cluster.up(log=lambda m: None)
    assert {n: s.pid for n, s in cluster.components().items()} == before

    os.kill(before["kube-scheduler"], signal.SIGKILL)
    eventually(lambda: not cluster.components()["kube-scheduler"].running, timeout=10,
               message="scheduler gone")
    cluster.up(log=lambda m: None)
    after = {n: s.pid for n, s in cluster.components().items()}
    assert after["kube-scheduler"] != before["kube-scheduler"]
    assert {n: p for n, p in after.items() if n != "kube-scheduler"} == {
        n: p for n, p in before.items() if n != "kube-scheduler"}
    assert all(s.running for s in cluster.components().values())


def test_a_second_cluster_starts_fast_and_down_leaves_nothing(tmp_path):
    """A cluster in its own state directory (binaries cached) is Ready in under 30 s, uses its
    own free ports, and `down` leaves no process, port or state behind."""
    from thresher.devcluster.cluster import DevCluster, port_is_free

    dev = DevCluster(tmp_path / "second", node=False)
    dev.binaries(log=lambda m: None)  # building is not part of the start-up budget
    start = time.monotonic()
    try:
        dev.up(log=lambda m: None)
        elapsed = time.monotonic() - start
        states = dev.components()
        rss_mib = sum(s.rss_bytes for s in states.values()) / 2**20
        print(f"second cluster ready in {elapsed:.1f}s, control plane RSS {rss_mib:.0f} MiB")
        assert elapsed < 30
        pids = [s.pid for s in states.values()]
        ports = dev.ports()
    finally:
        dev.down(log=lambda m: None)
    assert not (tmp_path / "second").exists()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(") ")[1][:1]
    assert all(port_is_free(p) for p in ports.values())
