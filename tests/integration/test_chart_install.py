"""The Helm chart installed for real, and the operator working with exactly the chart's RBAC.

helm install / upgrade / uninstall against the local control plane, into a namespace that
enforces Pod Security "restricted" (the API server's PodSecurity admission plugin judges the
operator pod; kwok then plays it Running). Then the real operator process runs authenticated
as the chart's ServiceAccount (tests/helpers/chart.py explains why a token and not ``as:``)
and takes an example schedule through CronJob, run-now, a recorded success, a recorded
failure with Events and auto-suspend, and a CronJob deleted by hand: any 403 in its log fails.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from tests.conftest import REPO, kubectl_json
from tests.helpers.chart import (
    OperatorRun, Release, install_chart, manifest, paused_session_operator, rbac_rule_set,
    run_tool_in_cluster, service_account_kubeconfig, uninstall_chart,
)
from tests.helpers.ha import holder_instance, lease_holder
from tests.helpers.wait import eventually
from tests.integration.test_operator import get, run_now, simulate, status_of, wait_runs

pytestmark = pytest.mark.integration

__all__ = ["paused_session_operator"]  # a fixture, used by name

EXAMPLE = REPO / "manifests" / "examples" / "tmdb-daily.yaml"
SELECTOR = "app.kubernetes.io/component=operator,app.kubernetes.io/instance={release}"


def release_name() -> str:
    return f"r{uuid.uuid4().hex[:6]}"


@pytest.fixture
def restricted_namespace(cluster, namespace) -> str:
    """The test namespace, enforcing Pod Security 'restricted' (latest)."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    return namespace


def operator_pods(cluster, release: Release) -> list[dict]:
    return kubectl_json(cluster, "get", "pods", "-n", release.namespace,
                        "-l", SELECTOR.format(release=release.name))["items"]


def running_pods(cluster, release: Release, count: int = 2) -> list[dict]:
    """The operator pods (leader and standby), admitted and Running (kwok), none terminating."""
    def ready():
        pods = [p for p in operator_pods(cluster, release) if not p["metadata"].get("deletionTimestamp")]
        return len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods) and pods
    return eventually(ready, timeout=60, message=f"{count} Running operator pods of {release.name}")


def test_install_upgrade_uninstall_in_a_restricted_namespace(cluster, crd, restricted_namespace):
    """The chart's objects are what the values say; the operator pod passes the real PodSecurity
    'restricted' check; an upgrade rolls the pod with the new values; uninstall removes all but
    the CRD."""
    ns = restricted_namespace
    # The check is real: in this namespace a pod without the restricted settings is refused.
    refused = run_tool_in_cluster(cluster, "run", "plain", "-n", ns, "--image=busybox", "--dry-run=server")
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr

    release = install_chart(cluster, release_name(), ns)
    try:
        docs = manifest(cluster, release)
        kinds = sorted(d["kind"] for d in docs)
        # Three ClusterRoles: the operator's, and the edit and view roles aggregated for users;
        # the Role and RoleBinding of the leader election Lease; the replicas' disruption budget.
        assert kinds == ["ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                         "Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service",
                         "ServiceAccount"], kinds

        deploy = kubectl_json(cluster, "get", "deployment", release.fullname, "-n", ns)
        pod_spec = deploy["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        assert deploy["spec"]["replicas"] == 2 and deploy["spec"]["strategy"]["type"] == "RollingUpdate"
        assert "--leader-elect" in container["command"]
        assert pod_spec["serviceAccountName"] == release.service_account
        assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"memory": "512Mi"}}
        assert "--all-namespaces" in container["command"]
        kubectl_json(cluster, "get", "serviceaccount", release.service_account, "-n", ns)

        role = kubectl_json(cluster, "get", "clusterrole", release.fullname)
        assert rbac_rule_set(role["rules"]) == rbac_rule_set(None), "ClusterRole != files/rbac-rules.yaml"
        binding = kubectl_json(cluster, "get", "clusterrolebinding", release.fullname)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": release.service_account,
                                        "namespace": ns}]
        assert binding["roleRef"]["name"] == release.fullname

        service = kubectl_json(cluster, "get", "service", f"{release.fullname}-metrics", "-n", ns)
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http-metrics", 9090)]
        assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]

        first = running_pods(cluster, release)
        assert all(p["spec"]["securityContext"]["runAsNonRoot"] is True for p in first)
        deploy = eventually(lambda: (d := kubectl_json(cluster, "get", "deployment", release.fullname, "-n", ns))
                            ["status"].get("availableReplicas") == 2 and d, timeout=60,
                            message="Deployment available")

        install_chart(cluster, release.name, ns, "--set", "resources.requests.cpu=250m",
                      "--set", "resources.limits.memory=768Mi", "--set", "service.port=9191",
                      "--set", "extraArgs={--log-format,plain}", upgrade=True)
        deploy = kubectl_json(cluster, "get", "deployment", release.fullname, "-n", ns)
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"] == {"requests": {"cpu": "250m", "memory": "128Mi"},
                                          "limits": {"memory": "768Mi"}}
        assert container["command"][-2:] == ["--log-format", "plain"]
        service = kubectl_json(cluster, "get", "service", f"{release.fullname}-metrics", "-n", ns)
        assert service["spec"]["ports"][0]["port"] == 9191
        # Rolling update: the old pods go, new ones with the new values are admitted under restricted.
        old_names = {p["metadata"]["name"] for p in first}
        eventually(lambda: all(p["metadata"]["name"] not in old_names
                               and p["spec"]["containers"][0]["resources"]["limits"] == {"memory": "768Mi"}
                               for p in running_pods(cluster, release)), timeout=90,
                   message="upgraded operator pods Running")
    finally:
        uninstall_chart(cluster, release)

    def gone(kind: str, name: str, namespaced: bool = True) -> bool:
        args = ["get", kind, name, *(["-n", ns] if namespaced else [])]
        proc = cluster.kubectl(*args, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    for kind, name, namespaced in (("deployment", release.fullname, True),
                                   ("serviceaccount", release.service_account, True),
                                   ("service", f"{release.fullname}-metrics", True),
                                   ("configmap", f"{release.fullname}-dashboard", True),
                                   ("clusterrole", release.fullname, False),
                                   ("clusterrole", f"{release.fullname}-edit", False),
                                   ("clusterrole", f"{release.fullname}-view", False),
                                   ("clusterrolebinding", release.fullname, False),
                                   ("role", f"{release.fullname}-leader-election", True),
                                   ("rolebinding", f"{release.fullname}-leader-election", True),
                                   ("poddisruptionbudget", release.fullname, True)):
        eventually(lambda: gone(kind, name, namespaced), timeout=60, message=f"{kind}/{name} deleted")
    eventually(lambda: not operator_pods(cluster, release), timeout=60, message="operator pod deleted")
    # Helm never deletes what it installed from crds/: the schedules survive an uninstall.
    cluster.kubectl("get", "crd", "collectionschedules.thresher.dev")


def example_schedule() -> str:
    """manifests/examples/tmdb-daily.yaml, minus its PVC (none exists here: the pod would stay
    Pending) and its retries (a failed run would wait out the Job's 10 s back-off twice)."""
    body = yaml.safe_load(EXAMPLE.read_text())
    del body["spec"]["storage"]
    body["spec"]["retries"] = 0
    body["spec"]["stopAfterConsecutiveFailures"] = 1
    return yaml.safe_dump(body)


def test_operator_reconciles_with_exactly_the_charts_rbac(cluster, crd, restricted_namespace, tmp_path,
                                                         paused_session_operator):
    """The operator authenticated as the chart's ServiceAccount: schedule -> CronJob -> run-now ->
    success recorded -> failure recorded (Event, auto-suspend) -> CronJob deleted by hand and
    restored; every step is its own (its log says so) and no request was forbidden. The Jobs'
    pods are admitted in the same restricted namespace."""
    ns = restricted_namespace
    release = install_chart(cluster, release_name(), ns)
    try:
        kubeconfig = service_account_kubeconfig(cluster, ns, release.service_account, tmp_path / "sa.kubeconfig")
        # The identity really is limited: it may not read Secrets or delete CronJobs.
        for verb, resource in (("get", "secrets"), ("delete", "cronjobs"), ("create", "pods")):
            can = run_tool_in_cluster(cluster, "auth", "can-i", verb, resource, "-n", ns, f"--as={release.subject}")
            assert can.stdout.strip() == "no", f"{release.subject} may {verb} {resource}"
        # With leader election as the chart runs it: the Lease's Role is exercised too.
        op = OperatorRun(kubeconfig, tmp_path / "operator.log",
                         args=("--all-namespaces", "--leader-elect", "--leader-elect-resource-namespace", ns,
                               "--leader-elect-resource-name", release.fullname),
                         env={"THRESHER_JOB_IMAGE": f"registry.test/thresher-jobs:{release.name}",
                              "POD_NAME": "sa-operator"}).start()
        try:
            eventually(lambda: holder_instance(lease_holder(cluster, ns, release.fullname)) == "sa-operator",
                       timeout=30, message="the ServiceAccount operator holding the Lease")
            scenario(cluster, ns, op, release)
        finally:
            op.stop()
        # SIGTERM: it stepped down (released the Lease for a standby).
        assert lease_holder(cluster, ns, release.fullname) is None
        forbidden = op.forbidden_lines()
        assert not forbidden, "the chart's RBAC refused the operator:\n" + "\n".join(forbidden[:20])
    finally:
        uninstall_chart(cluster, release)


def scenario(cluster, ns: str, op: OperatorRun, release: Release) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=example_schedule())
    cronjob = eventually(lambda: get(cluster, ns, "cronjob", "tmdb-daily"), timeout=30, message="CronJob")
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    # Built by this operator (its job image), not by another one watching the shared cluster.
    assert container["image"] == f"registry.test/thresher-jobs:{release.name}", container["image"]
    # ... and its status written by it (the session's operator is paused; kopf's per-handler
    # "succeeded" lines are off since issue 19, so the status is the evidence).
    eventually(lambda: any(c.get("type") == "Ready" and c.get("status") == "True" for c in
                           (get(cluster, ns, "collectionschedule", "tmdb-daily").get("status") or {})
                           .get("conditions") or []),
               timeout=30, message="Ready written by the ServiceAccount operator")

    simulate(cluster, ns, "tmdb-daily", message={"jobType": "tmdb", "succeeded": True, "items": 150,
                                                 "valid": 148, "quality": 0.98})
    run_now(cluster, ns, "tmdb-daily")
    status = wait_runs(cluster, ns, "tmdb-daily", 1)
    assert status["recentRuns"][0]["outcome"] == "Succeeded" and status["recentRuns"][0]["result"]["items"] == 150
    assert op.log_has("manual run", '"job_created": true'), \
        "the run-now Job was not created by the ServiceAccount operator:\n" + op.log()[-3000:]
    pods = kubectl_json(cluster, "get", "pods", "-n", ns, "-l", "thresher.dev/schedule=tmdb-daily")["items"]
    assert pods, "the Job's pod was not admitted in the restricted namespace"

    simulate(cluster, ns, "tmdb-daily", exit_code=1, message={"jobType": "tmdb", "succeeded": False,
                                                              "error": "upstream 503"})
    run_now(cluster, ns, "tmdb-daily")
    status = wait_runs(cluster, ns, "tmdb-daily", 2)
    assert status["consecutiveFailures"] == 1
    eventually(lambda: get(cluster, ns, "collectionschedule", "tmdb-daily")["spec"].get("suspend") is True,
               timeout=30, message="auto-suspended after stopAfterConsecutiveFailures=1")
    reasons = eventually(lambda: {"RunFailed", "Suspended"} <= (r := {
        e.get("reason") for e in kubectl_json(cluster, "get", "events.events.k8s.io", "-n", ns)["items"]}) and r,
        timeout=30, message="RunFailed and Suspended Events")
    assert reasons

    cluster.kubectl("delete", "cronjob", "tmdb-daily", "-n", ns)
    eventually(lambda: (cj := get(cluster, ns, "cronjob", "tmdb-daily")) and cj["spec"]["suspend"] is True,
               timeout=60, message="CronJob restored (suspended) after deletion by hand")
    assert status_of(cluster, ns, "tmdb-daily")["cronJobRef"]["name"] == "tmdb-daily"
