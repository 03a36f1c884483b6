"""The chart's operator pods on a dev cluster: which exist, which are Ready, which one leads.

Shared by the demo (``thresher demo`` on the real node waits for the chart's two replicas and
names the active one) and the real-node tests (tests/realnode/test_operator_pod.py, the HA
takeover). ``cluster`` is anything with ``kubectl(*args, check=...)`` returning a completed
process (``DevCluster``). The leader is the holder of the chart's Lease (named like the
release's fullname, in the release namespace); the holder identity is ``<pod>_<unique>``.
"""

from __future__ import annotations

import json
import urllib.request

OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
METRICS_PORT = 9090  # the chart's containerPort http-metrics


def operator_pods(cluster, namespace: str) -> list[dict]:
    """The operator pods of the chart in ``namespace`` that are not being deleted."""
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", OPERATOR_SELECTOR, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def all_ready(pods: list[dict], count: int) -> bool:
    """Exactly ``count`` pods, each Running with every container ready (pure)."""
    return len(pods) == count and all(
        p["status"].get("phase") == "Running" and p["status"].get("containerStatuses")
        and all(c.get("ready") for c in p["status"]["containerStatuses"]) for p in pods)


def ready_pods(cluster, namespace: str, count: int = 2) -> list[dict]:
    """The ``count`` operator pods when all are Running and Ready, else [] (for polling)."""
    pods = operator_pods(cluster, namespace)
    return pods if all_ready(pods, count) else []


def lease_holder(cluster, namespace: str, name: str) -> str | None:
    """The Lease's holderIdentity (``<pod or host>_<unique>``), None when released or absent."""
    proc = cluster.kubectl("get", "lease", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)["spec"].get("holderIdentity") or None


def holder_instance(holder: str | None) -> str | None:
    """``op-a_1b2c3d4e`` -> ``op-a`` (the instance the identity starts with)."""
    return holder.rpartition("_")[0] if holder else None


def pod_metrics(pod: dict, timeout: float = 5) -> str:
    """The pod's /metrics over the node's bridge (the host routes to the pod subnet)."""
    url = f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
