"""The chart for the people who use it, on the real control plane: roles for users and `helm test`.

- Roles: the chart's ClusterRoles carry `aggregate-to-admin/edit/view` labels, and the real
  clusterrole-aggregation controller (kube-controller-manager) folds them into the built-in
  roles. bob, bound to the built-in `edit` in a namespace, creates a schedule and runs it;
  carol, bound to `view`, reads schedules and their status and can change nothing. Users are
  impersonated with kubectl's `--as` (the API server authorizes the impersonated user; the
  admin only needs the right to impersonate).
- `helm test`: real helm creates the test objects and the Pod is admitted, but on kwok's
  simulated nodes its container never runs. So the test then runs the Pod's own command
  (files/helm-test.py) as a local process authenticated with a token of the test's own
  ServiceAccount, under the hook's own Role (from `helm get hooks`): the same script,
  identity and permissions, and the session's operator recording the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

from tests.conftest import kubectl_json
from tests.helpers.chart import (
    Release, helm, helm_binary, install_chart, run_tool_in_cluster, service_account_kubeconfig, uninstall_chart,
)
from tests.helpers.wait import eventually
from tests.integration.test_operator import condition, status_of, wait_runs

pytestmark = pytest.mark.integration

BOB, CAROL = "bob", "carol"
SCHEDULES = "collectionschedules.thresher.dev"


@pytest.fixture
def release(cluster, crd, namespace):
    """The chart with default values in the test's namespace (which the session's operator
    watches), removed afterwards."""
    installed = install_chart(cluster, f"u{uuid.uuid4().hex[:6]}", namespace)
    yield installed
    uninstall_chart(cluster, installed)


def bind(cluster, namespace: str, user: str, cluster_role: str) -> None:
    cluster.kubectl("create", "rolebinding", f"{user}-{cluster_role}", f"--clusterrole={cluster_role}",
                    f"--user={user}", "-n", namespace)


def can(cluster, user: str, namespace: str, verb: str, resource: str, *extra: str) -> str:
    return run_tool_in_cluster(cluster, "auth", "can-i", verb, resource, *extra, "-n", namespace,
                               f"--as={user}").stdout.strip()


def as_user(cluster, user: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(*args, f"--as={user}", input=input, check=False)


def tiny_schedule(name: str) -> str:
    return yaml.safe_dump({"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
                           "metadata": {"name": name},
                           "spec": {"schedule": "0 0 1 1 *", "job": {"container": {"image": "busybox"}}}})


def test_builtin_edit_manages_schedules_and_view_only_reads_them(cluster, operator, namespace, release):
    """Issue 16: a namespace user with the built-in edit role could not create a schedule.
    Now edit (and admin) manage them, view reads them and their status, and nobody but the
    operator may write status."""
    bind(cluster, namespace, BOB, "edit")
    bind(cluster, namespace, CAROL, "view")
    # The aggregation controller copies the chart's rules into the built-in roles (view's rules
    # also reach edit and admin: the built-in view carries aggregate-to-edit itself).
    for role, verb in (("admin", "create"), ("edit", "create"), ("view", "get")):
        eventually(lambda: any("collectionschedules" in r.get("resources", []) and verb in r.get("verbs", [])
                               for r in kubectl_json(cluster, "get", "clusterrole", role).get("rules") or []),
                   timeout=30, message=f"CollectionSchedule {verb} aggregated into {role}")
    eventually(lambda: can(cluster, BOB, namespace, "create", SCHEDULES) == "yes", timeout=30,
               message="bob (edit) may create schedules")

    created = as_user(cluster, BOB, "apply", "-n", namespace, "-f", "-", input=tiny_schedule("bobs"))
    assert created.returncode == 0, created.stderr
    eventually(lambda: condition(status_of(cluster, namespace, "bobs"), "Ready").get("status") == "True",
               timeout=30, message="bob's schedule Ready")
    ran = as_user(cluster, BOB, "annotate", "--overwrite", "collectionschedule", "bobs", "-n", namespace,
                  f"thresher.dev/run-now={uuid.uuid4().hex}")
    assert ran.returncode == 0, ran.stderr
    assert wait_runs(cluster, namespace, "bobs", 1)["recentRuns"][0]["outcome"] == "Succeeded"

    # carol reads everything, status included...
    listed = as_user(cluster, CAROL, "get", "collectionschedules", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [s["metadata"]["name"] for s in json.loads(listed.stdout)["items"]] == ["bobs"]
    status = as_user(cluster, CAROL, "get", "collectionschedule", "bobs", "-n", namespace,
                     "--subresource=status", "-o", "json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"]["recentRuns"], status.stderr
    # ...and changes nothing.
    refused = as_user(cluster, CAROL, "apply", "-n", namespace, "-f", "-", input=tiny_schedule("carols"))
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
    for verb in ("update", "patch", "delete"):
        assert can(cluster, CAROL, namespace, verb, SCHEDULES) == "no", verb
    deleted = as_user(cluster, CAROL, "delete", "collectionschedule", "bobs", "-n", namespace)
    assert deleted.returncode != 0 and "forbidden" in deleted.stderr.lower(), deleted.stderr
    # Status belongs to the operator: not even edit may write it.
    for user in (BOB, CAROL):
        assert can(cluster, user, namespace, "patch", SCHEDULES, "--subresource=status") == "no", user
    # The grant is per namespace: bob's RoleBinding gives him nothing elsewhere.
    assert can(cluster, BOB, "default", "create", SCHEDULES) == "no"


def helm_test(cluster, release: Release, timeout: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), "test", release.name, "-n", release.namespace, "--timeout", timeout],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})


def run_test_script(pod: dict, kubeconfig, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    """The test Pod's command, as a local process with its env and the given identity."""
    (container,) = pod["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["python", "-c"], command
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(env_overrides, KUBECONFIG=str(kubeconfig), PATH="/usr/bin:/bin")
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_helm_test_runs_a_schedule_and_sees_the_recorded_run(cluster, operator, namespace, release, tmp_path):
    """The chart's `helm test`. Real helm creates its ServiceAccount, Role, RoleBinding and
    Pod in order, and the Pod passes PodSecurity "restricted"; kwok then plays the Pod Running
    forever (no container runs here), so helm times out. The Pod's own script, run with a
    token of that ServiceAccount, creates a schedule, gets it Ready, runs it now, sees the
    Succeeded run in status and cleans up; in a namespace its Role does not cover it fails in
    one line with the API's 403."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    name = f"{release.fullname}-test"
    ran = helm_test(cluster, release, "15s")
    assert ran.returncode != 0 and "timed out" in (ran.stdout + ran.stderr), ran.stdout + ran.stderr
    pod = kubectl_json(cluster, "get", "pod", name, "-n", namespace)  # created, admitted, kept for --logs
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["serviceAccountName"] == name and pod["status"]["phase"] == "Running"
    # helm deletes the hooks that passed before the failing one (hook-succeeded): no RBAC left over.
    for kind in ("serviceaccount", "role", "rolebinding"):
        eventually(lambda: cluster.kubectl("get", kind, name, "-n", namespace, check=False).returncode != 0,
                   timeout=30, message=f"{kind} {name} deleted after the failed test")

    # The script with the hook's own identity and Role, as `helm test` creates them.
    hooks = [d for d in yaml.safe_load_all(helm(cluster, "get", "hooks", release.name, "-n", namespace)) if d]
    assert sorted(d["kind"] for d in hooks) == ["Pod", "Role", "RoleBinding", "ServiceAccount"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([d for d in hooks if d["kind"] != "Pod"]))
    kubeconfig = service_account_kubeconfig(cluster, namespace, name, tmp_path / "test.kubeconfig")
    result = run_test_script(pod, kubeconfig)
    assert result.returncode == 0, result.stdout + result.stderr
    schedule = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}["THRESHER_TEST_SCHEDULE"]
    assert f"created CollectionSchedule {namespace}/{schedule}" in result.stdout
    assert "Succeeded" in result.stdout and result.stdout.rstrip().splitlines()[-1].startswith("ok:"), result.stdout
    eventually(lambda: cluster.kubectl("get", "collectionschedule", schedule, "-n", namespace,
                                       check=False).returncode != 0, timeout=30, message="test schedule deleted")

    elsewhere = run_test_script(pod, kubeconfig, THRESHER_TEST_NAMESPACE="default")
    assert elsewhere.returncode == 1, elsewhere.stdout + elsewhere.stderr
    (line,) = elsewhere.stderr.strip().splitlines()
    assert line.startswith("helm test failed: API error 403"), line
