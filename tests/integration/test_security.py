"""Security properties, each judged by the real API server (RBAC, PodSecurity, structural
pruning, field validation, ValidatingAdmissionPolicy) or by the operator's own code.

- Least privilege: the chart's RBAC equals what the operator's code calls plus what kopf needs
  (derived from the source, so adding a call without a rule, or keeping a rule no code uses,
  fails), and a deliberately short ClusterRole makes the operator log a 403 (so the "no 403"
  check of test_chart_install.py can fail).
- A schedule author (``alice``: CollectionSchedules in one namespace, nothing else) gets, through
  the operator, only restricted pods in her namespace, without an API token, and cannot smuggle
  in privileges, host access or another namespace's ServiceAccount.
- A Secret a schedule references is referenced, never copied: its value appears nowhere.

The threat model and what is enforced where: docs/security.md.
"""

from __future__ import annotations

import ast
import json
import uuid
from datetime import UTC, datetime

import pytest
import yaml

from tests.conftest import REPO, kubectl_json
from tests.helpers.chart import (
    OperatorRun, Release, install_chart, rbac_rule_set, run_tool_in_cluster,
    service_account_kubeconfig, uninstall_chart,
)
from tests.helpers.wait import eventually
from tests.integration.test_operator import run_now, simulate, wait_runs
from thresher.operator import builders, kube

pytestmark = pytest.mark.integration

OPERATOR = REPO / "thresher" / "operator"
ALICE = "alice"

# --- least privilege: derived from the code ------------------------------------------------

# API class of the kubernetes client -> API group (CustomObjectsApi: the CRD's group).
API_GROUPS = {"BatchV1Api": "batch", "CoreV1Api": "", "EventsV1Api": "events.k8s.io",
              "SchedulingV1Api": "scheduling.k8s.io", "CustomObjectsApi": kube.GROUP,
              "CoordinationV1Api": "coordination.k8s.io"}
CLIENT_VERBS = {"read": "get", "get": "get", "list": "list", "create": "create", "patch": "patch",
                "replace": "update", "delete": "delete", "watch": "watch"}
KOPF_DECORATORS = {"on.create", "on.update", "on.resume", "on.field", "on.event", "timer", "daemon",
                   "on.delete"}
# What kopf itself does, whatever the handlers are (kopf docs, "Deployment" -> RBAC):
KOPF_ITSELF = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},  # resource discovery
    ("", "namespaces"): {"list", "watch"},  # cluster-wide mode follows namespaces
    ("", "events"): {"create"},  # kopf posts its warnings (settings.posting) as core Events
}


def _client_attributes(tree: ast.Module) -> dict[str, str]:
    """``self.batch = client.BatchV1Api(...)`` in Kube.__init__ -> {"batch": "BatchV1Api"}."""
    found = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr in API_GROUPS):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    found[target.attr] = node.value.func.attr
    return found


def _permission(api_class: str, method: str, call: ast.Call) -> set[tuple[str, str, str]]:
    """A client method name -> the (group, resource, verb) it needs, by the client's naming
    convention ``verb_[namespaced_|cluster_]resource[_status]``."""
    verb, _, rest = method.partition("_")
    assert verb in CLIENT_VERBS, f"unknown client verb in {method}"
    rest = rest.removeprefix("namespaced_").removeprefix("cluster_")
    sub = ""
    if rest.endswith("_status"):
        rest, sub = rest.removesuffix("_status"), "/status"
    singular = rest.replace("_", "")
    resource = kube.PLURAL if rest == "custom_object" else singular + ("es" if singular.endswith("s") else "s")
    group = API_GROUPS[api_class]
    needs = {(group, resource + sub, CLIENT_VERBS[verb])}
    content_type = next((k.value for k in call.keywords if k.arg == "_content_type"), None)
    if isinstance(content_type, ast.Constant) and "apply-patch" in str(content_type.value):
        needs.add((group, resource + sub, "create"))  # server-side apply creates what is missing
    return needs


def kube_method_permissions(module: str = "kube.py", cls: str = "Kube") -> dict[str, set[tuple[str, str, str]]]:
    """Each method of thresher.operator.kube.Kube (or another client wrapper) -> the permissions
    of the client calls in it."""
    tree = ast.parse((OPERATOR / module).read_text())
    attrs = _client_attributes(tree)
    (kube_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    out: dict[str, set[tuple[str, str, str]]] = {}
    for fn in kube_class.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        out[fn.name] = set()
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr in attrs):
                out[fn.name] |= _permission(attrs[node.func.value.attr], node.func.attr, node)
    return out


def kube_methods_the_operator_calls() -> set[str]:
    """``<something>.kube.<method>(`` in the operator's modules (not the user commands, thresher/client)."""
    used = set()
    for path in OPERATOR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "kube"):
                used.add(node.func.attr)
    return used


def kopf_watched_resources() -> dict[tuple[str, str], set[str]]:
    """Resources named in the handlers' kopf decorators: watched (list, watch); the schedule
    resource, which has stateful handlers, is also patched (progress annotations)."""
    tree = ast.parse((OPERATOR / "handlers.py").read_text())
    consts = {"GROUP": kube.GROUP, "VERSION": kube.VERSION, "PLURAL": kube.PLURAL}
    out: dict[tuple[str, str], set[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = ast.unparse(node.func).removeprefix("kopf.")
        if name not in KOPF_DECORATORS:
            continue
        group, _version, plural = (consts[a.id] if isinstance(a, ast.Name) else a.value for a in node.args[:3])
        verbs = out.setdefault((group, plural), set())
        verbs |= {"list", "watch"}
        if name != "on.event":  # state kept in annotations: kopf patches the object
            verbs.add("patch")
    return out


def owner_reference_permissions() -> dict[tuple[str, str], set[str]]:
    """blockOwnerDeletion on an ownerReference needs update on the owner's finalizers where the
    OwnerReferencesPermissionEnforcement admission plugin is on; derived from the builders."""
    schedule = {"metadata": {"name": "s", "namespace": "n", "uid": "u"}}
    cronjob = {"metadata": {"name": "s", "namespace": "n", "uid": "u"},
               "spec": {"jobTemplate": {"spec": {"template": {}}}}}
    refs = [builders.owner_reference(schedule), *builders.manual_job(cronjob, "t")["metadata"]["ownerReferences"]]
    plural = {"CollectionSchedule": (kube.GROUP, kube.PLURAL), "CronJob": ("batch", "cronjobs")}
    return {(plural[r["kind"]][0], plural[r["kind"]][1] + "/finalizers"): {"update"}
            for r in refs if r.get("blockOwnerDeletion")}


def needed_permissions() -> dict[tuple[str, str], set[str]]:
    methods = kube_method_permissions()
    used = kube_methods_the_operator_calls()
    unknown = used - set(methods)
    assert not unknown, f"the operator calls Kube methods this test cannot see: {unknown}"
    needed: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in set().union(*(methods[m] for m in used)):
        needed.setdefault((group, resource), set()).add(verb)
    for part in (kopf_watched_resources(), KOPF_ITSELF, owner_reference_permissions()):
        for key, verbs in part.items():
            needed.setdefault(key, set()).update(verbs)
    return needed


def test_derivation_sees_the_calls():
    """The derivation is not vacuous: it finds the calls the operator is known to make."""
    methods = kube_method_permissions()
    assert ("batch", "cronjobs", "patch") in methods["apply_cronjob"]
    assert ("batch", "cronjobs", "create") in methods["apply_cronjob"]
    assert methods["patch_status"] == {(kube.GROUP, "collectionschedules/status", "patch")}
    assert methods["post_event"] == {("events.k8s.io", "events", "create")}
    assert {"apply_cronjob", "create_job", "job_pods", "patch_status"} <= kube_methods_the_operator_calls()
    assert kopf_watched_resources()[("batch", "jobs")] == {"list", "watch"}


def test_chart_rbac_is_exactly_what_the_code_needs():
    """files/rbac-rules.yaml == the permissions derived from the operator's code and kopf: a new
    API call without a rule fails here, and so does a rule no code uses (least privilege)."""
    granted, needed = rbac_rule_set(None), needed_permissions()
    missing = {k: sorted(v - granted.get(k, set())) for k, v in needed.items() if v - granted.get(k, set())}
    unused = {k: sorted(v - needed.get(k, set())) for k, v in granted.items() if v - needed.get(k, set())}
    assert not missing, f"the operator needs permissions files/rbac-rules.yaml lacks: {missing}"
    assert not unused, f"files/rbac-rules.yaml grants what no code uses: {unused}"
    for (group, resource), verbs in granted.items():
        assert "*" not in verbs and resource != "secrets" and not resource.startswith("pods/"), (group, resource)


def test_lease_rbac_is_exactly_what_the_lease_adapter_calls():
    """files/rbac-rules.yaml's leaderElection rules (a Role in the release namespace) == the
    calls of thresher/operator/lease.py's LeaseLock: get, create and update on leases."""
    methods = kube_method_permissions("lease.py", "LeaseLock")
    assert methods["get"] == {("coordination.k8s.io", "leases", "get")}  # the derivation sees the calls
    needed: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in set().union(*methods.values()):
        needed.setdefault((group, resource), set()).add(verb)
    rules = yaml.safe_load((REPO / "charts" / "thresher" / "files" / "rbac-rules.yaml").read_text())
    assert rbac_rule_set(rules["leaderElection"]) == needed == {("coordination.k8s.io", "leases"):
                                                                {"get", "create", "update"}}
    assert ("coordination.k8s.io", "leases") not in rbac_rule_set(None), "leases only in the release namespace"


# --- the operator as the chart installs it ---------------------------------------------------


class Installed:
    def __init__(self, cluster, ns: str, release: Release, op: OperatorRun) -> None:
        self.cluster, self.ns, self.release, self.op = cluster, ns, release, op


@pytest.fixture(scope="module")
def chart_operator(cluster, crd, operator, tmp_path_factory):
    """The chart installed in its own restricted namespace, and the operator running as its
    ServiceAccount (the session's admin operator is paused meanwhile: one operator at a time)."""
    operator.stop()
    ns = f"thresher-sec-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    release = install_chart(cluster, f"sec{uuid.uuid4().hex[:5]}", ns)
    workdir = tmp_path_factory.mktemp("security")
    kubeconfig = service_account_kubeconfig(cluster, ns, release.service_account, workdir / "sa.kubeconfig")
    op = OperatorRun(kubeconfig, workdir / "operator.log").start()
    try:
        yield Installed(cluster, ns, release, op)
    finally:
        op.stop()
        uninstall_chart(cluster, release)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        operator.start()


def test_a_missing_permission_shows_up_as_403_in_the_operator_log(cluster, chart_operator, namespace, tmp_path):
    """Negative control for test_chart_install.py's "no 403" check: the same rules minus
    `create cronjobs` (which server-side apply needs for a new CronJob) make the operator log
    a 403 and leave the schedule without a CronJob."""
    chart_operator.op.stop()  # only the crippled operator may act now
    name = f"thresher-short-{uuid.uuid4().hex[:5]}"
    rules = yaml.safe_load((REPO / "charts" / "thresher" / "files" / "rbac-rules.yaml").read_text())
    short = []
    for rule in rules["namespaced"] + rules["cluster"] + rules["clusterWide"]:
        if rule["resources"] == ["cronjobs"]:
            rule = {**rule, "verbs": [v for v in rule["verbs"] if v != "create"]}
        short.append(rule)
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "short", "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": short},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": "short", "namespace": namespace}]},
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    op = None
    try:
        kubeconfig = service_account_kubeconfig(cluster, namespace, "short", tmp_path / "short.kubeconfig")
        op = OperatorRun(kubeconfig, tmp_path / "short.log", args=("--namespace", namespace)).start()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=schedule_yaml("denied"))
        eventually(lambda: op.forbidden_lines(), timeout=30, message="a 403 in the operator log")
        assert any("cronjobs" in line for line in op.forbidden_lines()), op.forbidden_lines()
        assert cluster.kubectl("get", "cronjob", "denied", "-n", namespace, check=False).returncode != 0
    finally:
        if op:
            op.stop()
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)
        chart_operator.op.start()


# --- a schedule author and what the operator lets her do -------------------------------------


def schedule_yaml(name: str, *, container: dict | None = None, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule", "metadata": {"name": name},
        "spec": {"schedule": "0 0 1 1 *", "retries": 0,
                 "job": {"container": container or {"image": "busybox", "command": ["true"]}}, **spec}})


@pytest.fixture
def alice(cluster, namespace):
    """User alice may manage CollectionSchedules in `namespace` (restricted) and nothing else."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "schedule-author", "namespace": namespace},
            "rules": [{"apiGroups": ["thresher.dev"], "resources": ["collectionschedules"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "schedule-author", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "schedule-author"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE}]}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    return namespace


def as_alice(cluster, *args: str, input: str | None = None):
    return cluster.kubectl(*args, f"--as={ALICE}", input=input, check=False)


def test_alice_may_create_schedules_but_not_workloads(cluster, alice):
    for verb, resource, ns, expected in (
            ("create", "pods", alice, "no"), ("create", "jobs.batch", alice, "no"),
            ("create", "cronjobs.batch", alice, "no"), ("get", "secrets", alice, "no"),
            ("create", "collectionschedules.thresher.dev", alice, "yes"),
            ("create", "collectionschedules.thresher.dev", "default", "no")):
        answer = run_tool_in_cluster(cluster, "auth", "can-i", verb, resource, "-n", ns, f"--as={ALICE}")
        assert answer.stdout.strip() == expected, f"alice {verb} {resource} in {ns}: {answer.stdout}"
    proc = as_alice(cluster, "apply", "-n", "default", "-f", "-", input=schedule_yaml("elsewhere"))
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stderr


def pod_specs(cluster, ns: str, name: str) -> list[tuple[str, dict]]:
    """(where, pod spec) of the schedule's CronJob template, its Jobs and their Pods."""
    cj = kubectl_json(cluster, "get", "cronjob", name, "-n", ns)
    out = [("cronjob", cj["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    selector = f"thresher.dev/schedule={name}"
    out += [(f"job/{j['metadata']['name']}", j["spec"]["template"]["spec"])
            for j in kubectl_json(cluster, "get", "jobs", "-n", ns, "-l", selector)["items"]]
    out += [(f"pod/{p['metadata']['name']}", p["spec"])
            for p in kubectl_json(cluster, "get", "pods", "-n", ns, "-l", selector)["items"]]
    return out


def assert_restricted(where: str, spec: dict) -> None:
    assert spec["automountServiceAccountToken"] is False, where
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
    assert spec["securityContext"]["runAsNonRoot"] is True, where
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
    assert not any("hostPath" in v for v in spec.get("volumes", [])), where
    # No API token volume: the ServiceAccount admission plugin adds kube-api-access-* otherwise.
    assert not any(v["name"].startswith("kube-api-access") for v in spec.get("volumes", [])), where
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), where
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True, where


def test_privileges_cannot_be_smuggled_in(cluster, chart_operator, alice):
    """Fields that would relax the pod do not exist in the schema: kubectl's strict field
    validation rejects them; with validation off the API server prunes them (structural
    schema), and the pods, admitted under 'restricted', run without privileges or token."""
    sneaky = {"image": "busybox", "command": ["true"], "privileged": True, "hostNetwork": True,
              "securityContext": {"privileged": True, "runAsUser": 0},
              "volumeMounts": [{"name": "host", "mountPath": "/host"}]}
    extra = {"hostNetwork": True, "hostPID": True, "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}
    manifest = schedule_yaml("sneaky", container=sneaky, **extra)
    rejected = as_alice(cluster, "apply", "-n", alice, "-f", "-", input=manifest)
    assert rejected.returncode != 0 and "unknown field" in rejected.stderr, rejected.stderr
    for field in ("spec.job.container.privileged", "spec.hostNetwork", "spec.volumes"):
        assert field in rejected.stderr, rejected.stderr

    accepted = as_alice(cluster, "apply", "--validate=false", "-n", alice, "-f", "-", input=manifest)
    assert accepted.returncode == 0, accepted.stderr
    stored = kubectl_json(cluster, "get", "collectionschedule", "sneaky", "-n", alice)
    assert stored["spec"]["job"]["container"] == {"image": "busybox", "command": ["true"]}, "not pruned"
    assert not {"hostNetwork", "hostPID", "volumes"} & set(stored["spec"]), stored["spec"]

    simulate(cluster, alice, "sneaky")
    run_now(cluster, alice, "sneaky")
    wait_runs(cluster, alice, "sneaky", 1)
    specs = pod_specs(cluster, alice, "sneaky")
    assert {w.split("/")[0] for w, _ in specs} == {"cronjob", "job", "pod"}, [w for w, _ in specs]
    for where, spec in specs:
        assert_restricted(where, spec)
    # Everything the operator made for alice lives in alice's namespace.
    for kind in ("cronjobs", "jobs", "pods"):
        items = kubectl_json(cluster, "get", kind, "-A", "-l", "thresher.dev/schedule=sneaky")["items"]
        assert {i["metadata"]["namespace"] for i in items} == {alice}, kind


def test_service_account_is_a_name_in_the_schedules_namespace(cluster, chart_operator, alice):
    """serviceAccountName is a plain DNS name: "other-ns:sa" or a full SA username is refused;
    a valid name means that SA in the schedule's own namespace (pods have no other kind)."""
    for bad in ("kube-system:default", "system:serviceaccount:kube-system:default", "a/b"):
        proc = as_alice(cluster, "apply", "-n", alice, "-f", "-", input=schedule_yaml("sa", serviceAccountName=bad))
        assert proc.returncode != 0 and "serviceAccountName" in proc.stderr, (bad, proc.stderr)
    assert as_alice(cluster, "apply", "-n", alice, "-f", "-",
                    input=schedule_yaml("sa", serviceAccountName="runner")).returncode == 0
    cluster.kubectl("create", "serviceaccount", "runner", "-n", alice)
    simulate(cluster, alice, "sa")
    run_now(cluster, alice, "sa")
    wait_runs(cluster, alice, "sa", 1)
    for where, spec in pod_specs(cluster, alice, "sa"):
        assert spec["serviceAccountName"] == "runner", where
        assert_restricted(where, spec)  # still no token mounted, even for a chosen SA
    (pod,) = kubectl_json(cluster, "get", "pods", "-n", alice, "-l", "thresher.dev/schedule=sa")["items"]
    assert pod["metadata"]["namespace"] == alice


def policy_from_docs(marker: str, namespace: str) -> list[dict]:
    """The ValidatingAdmissionPolicy and binding of docs/security.md's ```yaml block that starts
    with ``# marker``, as written, under names unique to this test and bound to ``namespace``."""
    doc = (REPO / "docs" / "security.md").read_text()
    block = doc.split(f"```yaml\n# {marker}\n", 1)[1].split("```", 1)[0]
    suffix = uuid.uuid4().hex[:5]
    objects = [d for d in yaml.safe_load_all(block) if d]
    for obj in objects:
        obj["metadata"]["name"] += f"-{suffix}"
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["policyName"] += f"-{suffix}"
            obj["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": namespace}}}
    return objects


def test_allow_list_policy_from_the_docs_restricts_service_accounts(cluster, alice):
    """docs/security.md's ValidatingAdmissionPolicy, applied as written, limits
    serviceAccountName to an allow-list (the gap the operator leaves open by design)."""
    objects = policy_from_docs("thresher-sa-allow-list", alice)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        def refused() -> str | None:
            proc = as_alice(cluster, "apply", "-n", alice, "-f", "-",
                            input=schedule_yaml("vap", serviceAccountName="deployer"))
            if proc.returncode == 0:  # the policy is not active yet: undo and retry
                cluster.kubectl("delete", "collectionschedule", "vap", "-n", alice, check=False)
                return None
            return proc.stderr
        message = eventually(refused, timeout=30, message="the policy refusing serviceAccountName=deployer")
        assert "thresher-sa-allow-list" in message or "serviceAccountName" in message, message
        ok = as_alice(cluster, "apply", "-n", alice, "-f", "-", input=schedule_yaml("vap2"))
        assert ok.returncode == 0, ok.stderr
        ok = as_alice(cluster, "apply", "-n", alice, "-f", "-",
                      input=schedule_yaml("vap3", serviceAccountName="thresher-jobs"))
        assert ok.returncode == 0, ok.stderr
    finally:
        for obj in objects:
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], check=False)


def test_operator_delete_policy_from_the_docs_allows_only_finished_one_offs(cluster, alice):
    """docs/security.md's policy for the operator's one `delete` (ttlSecondsAfterFinished, issue
    17), applied as written with alice in place of the operator's ServiceAccount: a recurring
    schedule and an unfinished one-off are refused, a finished one-off with a TTL is deleted."""
    objects = policy_from_docs("thresher-operator-deletes-finished-one-offs", alice)
    (condition,) = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")["spec"]["matchConditions"]
    condition["expression"] = condition["expression"].replace("system:serviceaccount:thresher-system:thresher", ALICE)
    # Suspended, with a day's TTL: an operator of this session never fires or expires them itself.
    one_off = {"runAt": "2026-05-01T06:00:00Z", "ttlSecondsAfterFinished": 86400, "suspend": True}
    recurring = yaml.safe_load(schedule_yaml("recurring"))
    pending = yaml.safe_load(schedule_yaml("pending"))
    pending["spec"].pop("schedule")
    pending["spec"].update(one_off)
    finished = {**pending, "metadata": {"name": "finished"}}
    cluster.kubectl("apply", "-n", alice, "-f", "-", input=yaml.safe_dump_all([recurring, pending, finished]))
    run = {"jobName": f"finished-{int(datetime(2026, 5, 1, 6, tzinfo=UTC).timestamp()) // 60}", "outcome": "Succeeded",
           "scheduledTime": one_off["runAt"]}
    cluster.kubectl("patch", "collectionschedule", "finished", "-n", alice, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"recentRuns": [run]}}))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        def refused() -> str | None:
            proc = as_alice(cluster, "delete", "collectionschedule", "recurring", "-n", alice)
            if proc.returncode == 0:  # the policy is not active yet: put it back and retry
                cluster.kubectl("apply", "-n", alice, "-f", "-", input=yaml.safe_dump(recurring))
                return None
            return proc.stderr
        message = eventually(refused, timeout=30, message="the policy refusing a recurring schedule's deletion")
        assert "may delete only a one-off schedule" in message, message
        unfinished = as_alice(cluster, "delete", "collectionschedule", "pending", "-n", alice)
        assert unfinished.returncode != 0 and "may delete only a one-off schedule" in unfinished.stderr
        done = as_alice(cluster, "delete", "collectionschedule", "finished", "-n", alice)
        assert done.returncode == 0, done.stderr
        # Anyone else (here: the admin) is not matched by the policy.
        cluster.kubectl("delete", "collectionschedule", "recurring", "-n", alice)
    finally:
        for obj in objects:
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], check=False)


def test_secret_values_are_referenced_never_copied(cluster, chart_operator, alice):
    """A Secret with a unique value: the CronJob has only a secretKeyRef, and the value is in
    no CronJob, Job, Pod, schedule (status included), Event or operator log line."""
    value = f"s3cret-{uuid.uuid4().hex}"
    cluster.kubectl("create", "secret", "generic", "api-creds", "-n", alice, f"--from-literal=token={value}")
    container = {"image": "busybox", "command": ["true"],
                 "env": [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-creds", "key": "token"}}}]}
    assert as_alice(cluster, "apply", "-n", alice, "-f", "-",
                    input=schedule_yaml("secretive", container=container)).returncode == 0
    simulate(cluster, alice, "secretive", exit_code=1, message={"succeeded": False, "error": "boom"})
    run_now(cluster, alice, "secretive")
    wait_runs(cluster, alice, "secretive", 1)
    eventually(lambda: any(e.get("reason") == "RunFailed" for e in kubectl_json(
        cluster, "get", "events.events.k8s.io", "-n", alice)["items"]), timeout=30, message="RunFailed Event")

    cj = kubectl_json(cluster, "get", "cronjob", "secretive", "-n", alice)
    env = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-creds", "key": "token"}}} in env
    places = {
        "cronjobs": cluster.kubectl("get", "cronjobs", "-n", alice, "-o", "json").stdout,
        "jobs": cluster.kubectl("get", "jobs", "-n", alice, "-o", "json").stdout,
        "pods": cluster.kubectl("get", "pods", "-n", alice, "-o", "json").stdout,
        "schedules": cluster.kubectl("get", "collectionschedules", "-n", alice, "-o", "json").stdout,
        "events": cluster.kubectl("get", "events", "-n", alice, "-o", "json").stdout,
        "events.k8s.io": cluster.kubectl("get", "events.events.k8s.io", "-n", alice, "-o", "json").stdout,
        "operator log": chart_operator.op.log(),
    }
    assert "api-creds" in places["cronjobs"] and "secretive" in places["operator log"]  # the search is real
    leaks = [where for where, text in places.items() if value in text]
    assert not leaks, f"the secret value appears in: {leaks}"
    assert json.loads(places["schedules"])["items"][0]["status"]["recentRuns"]
