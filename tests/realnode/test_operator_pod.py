"""The operator as the chart's Deployment on the real node: two replicas (one leader by the
Lease), in-cluster configuration through the ``kubernetes`` Service (kube-proxy, iptables
mode), metrics reachable through the operator's Service, and the takeover when the leader's pod
is deleted during a burst of run completions.

The runs are simulated on kwok nodes (they tolerate kwok's taint), so the burst is fast and
the only real containers are the two operators. The chart watches only its test's namespace
(``ha-*``), away from the session operator (``rn-*``)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from tests.helpers.burst import assert_each_run_recorded_once, start_burst
from tests.helpers.chart import CHART, helm
from tests.helpers.ha import holder_instance, lease_holder, measure_takeover, metric_sum, recorded_by
from tests.helpers.wait import eventually
from thresher.devcluster.kwok.nodes import SIMULATED_SELECTOR, SIMULATED_TOLERATION
from thresher.devcluster.node import NODE_NAME
from thresher.devcluster.operator_pods import pod_metrics, ready_pods

pytestmark = pytest.mark.realnode

RELEASE = "thresher"  # fullname "thresher": the Lease, the Deployment, the metrics Service
TAKEOVER_LIMIT_S = 30


def _json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def installed(node_cluster, node, crd, timings):
    """The operator image in the node's containerd, the chart installed with two replicas in a
    restricted namespace, watching one namespace; both pods Running on the real node."""
    from thresher.devcluster import images

    start = time.monotonic()
    (archive,) = images.build(["operator"], lambda m: print(f"[realnode] {m}"))
    node.import_image(archive, lambda m: print(f"[realnode] {m}"))
    timings["operator_image_s"] = time.monotonic() - start
    suffix = uuid.uuid4().hex[:5]
    system, watched = f"thr-{suffix}", f"ha-{suffix}"
    for ns in (system, watched):
        node_cluster.kubectl("create", "namespace", ns)
        node_cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                             "pod-security.kubernetes.io/enforce-version=latest")
    repository, tag = images.OPERATOR_IMAGE.rsplit(":", 1)
    start = time.monotonic()
    helm(node_cluster, "install", RELEASE, str(CHART), "--namespace", system, "--wait", "--timeout", "240s",
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set", f"watchNamespaces={{{watched}}}", "--set", "grafanaDashboard.enabled=false",
         "--set", "extraArgs={--log-format,plain}", timeout=300)
    timings["operator_pods_ready_s"] = time.monotonic() - start
    yield {"system": system, "watched": watched}
    # The replicas' last words, for a failure's report (pytest shows them with -s or on failure).
    print(node_cluster.kubectl("logs", "-n", system, "-l", "app.kubernetes.io/component=operator", "--prefix",
                               "--tail", "40", check=False).stdout)
    for ns in (watched, system):
        node_cluster.kubectl("delete", "collectionschedules", "--all", "-n", ns, "--wait=false", check=False)
    helm(node_cluster, "uninstall", RELEASE, "--namespace", system, "--wait", "--timeout", "60s")
    for ns in (watched, system):
        node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_two_replicas_one_leader_in_cluster_through_the_kubernetes_service(node_cluster, installed):
    """Both pods run on the real node, restricted, without host networking; they talk to the API
    server through the kubernetes Service's ClusterIP (in-cluster config; only kube-proxy makes
    that address work here); one holds the Lease; the metrics Service answers from the host."""
    system = installed["system"]
    pods = eventually(lambda: ready_pods(node_cluster, system), timeout=120, message="two operator pods Ready")
    for pod in pods:
        spec = pod["spec"]
        assert spec["nodeName"] == NODE_NAME
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        assert not any(c["securityContext"].get("privileged") for c in spec["containers"])
        assert "--kubeconfig" not in spec["containers"][0]["command"]
    svc = _json(node_cluster, "get", "service", "kubernetes", "-n", "default")
    assert svc["spec"]["clusterIP"] == "10.0.0.1"
    holder = eventually(lambda: holder_instance(lease_holder(node_cluster, system, RELEASE)), timeout=60,
                        message="a pod holding the Lease")
    names = {p["metadata"]["name"] for p in pods}
    assert holder in names, (holder, names)
    leader = {p["metadata"]["name"]: metric_sum(pod_metrics(p), "thresher_operator_leader") for p in pods}
    assert leader == {n: (1.0 if n == holder else 0.0) for n in names}
    metrics_svc = _json(node_cluster, "get", "service", f"{RELEASE}-metrics", "-n", system)
    ip = metrics_svc["spec"]["clusterIP"]
    with urllib.request.urlopen(f"http://{ip}:9090/metrics", timeout=5) as resp:  # kube-proxy's DNAT
        assert "thresher_operator_leader" in resp.read().decode()


def test_deleting_the_leader_pod_during_a_burst_hands_over_within_30s(node_cluster, installed, timings):
    system, ns = installed["system"], installed["watched"]
    eventually(lambda: ready_pods(node_cluster, system), timeout=120, message="two operator pods Ready")
    names = start_burst(node_cluster, ns, nodeSelector=SIMULATED_SELECTOR, tolerations=[SIMULATED_TOLERATION])

    old = holder_instance(lease_holder(node_cluster, system, RELEASE))
    took = measure_takeover(node_cluster, system, RELEASE, old,
                            lambda: node_cluster.kubectl("delete", "pod", old, "-n", system, "--wait=false"))
    timings["pod_takeover_s"] = took
    assert took < TAKEOVER_LIMIT_S, f"takeover took {took:.1f}s"
    new = holder_instance(lease_holder(node_cluster, system, RELEASE))

    assert_each_run_recorded_once(node_cluster, ns, names, timeout=90)
    by = eventually(lambda: (c := recorded_by(node_cluster, ns)) and sum(c.values()) == len(names) and c,
                    timeout=30, message="one run Event per run")
    assert set(by) <= {old, new} and by[old] >= 1, by
    # The Deployment replaced the deleted pod: it is the standby now, the new leader counts what it recorded.
    pods = eventually(lambda: ready_pods(node_cluster, system), timeout=120, message="two operator pods again")
    by_name = {p["metadata"]["name"]: p for p in pods}
    assert new in by_name and old not in by_name
    text = pod_metrics(by_name[new])
    assert metric_sum(text, "thresher_operator_leader") == 1
    assert metric_sum(text, "thresher_schedule_runs_total", namespace=ns) == by[new]
    (standby,) = [p for n, p in by_name.items() if n != new]
    assert metric_sum(pod_metrics(standby), "thresher_operator_leader") == 0
    restarts = {n: sum(c.get("restartCount", 0) for c in p["status"]["containerStatuses"]) for n, p in by_name.items()}
    assert restarts == {n: 0 for n in by_name}, f"liveness restarted a replica: {restarts}"
    print(f"[ha] pod deletion takeover {took:.1f}s; runs recorded by {dict(by)}")
