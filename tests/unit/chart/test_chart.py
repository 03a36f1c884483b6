"""The Helm chart, judged by helm itself: lint, template per scenario, and structural checks on the output."""

from __future__ import annotations

import functools
import json
import re

import pytest
import yaml

from tests.helpers.tools import REPO, require_helm, run_tool

CHART = REPO / "charts" / "thresher"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "thresher-system"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

# The operator's permissions: least privilege, derived from the code by
# tests/integration/test_security.py (project issue 6). files/rbac-rules.yaml
# must say exactly this; the rendered RBAC must equal that file.
SPECIFIED_RULES = {
    # delete: ttlSecondsAfterFinished of one-off schedules (issue 17), docs/security.md
    ("thresher.dev", "collectionschedules"): {"get", "list", "watch", "patch", "delete"},
    ("thresher.dev", "collectionschedules/status"): {"patch"},
    ("thresher.dev", "collectionschedules/finalizers"): {"update"},
    ("batch", "cronjobs"): {"get", "list", "watch", "create", "patch"},
    ("batch", "cronjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"list", "watch", "create", "patch"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create", "list"},
    ("", "persistentvolumeclaims"): {"get"},
    ("", "serviceaccounts"): {"get"},
    ("", "nodes"): {"get"},
    ("scheduling.k8s.io", "priorityclasses"): {"get"},
    ("events.k8s.io", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}
# Leader election (replicaCount > 1): the Lease, in the release namespace only.
SPECIFIED_LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
LEASE_ROLE = "thresher-leader-election"
LEADER_ELECT_ARGS = ["--leader-elect", "--leader-elect-resource-name", "thresher",
                     "--leader-elect-lease-duration", "15", "--leader-elect-renew-deadline", "10",
                     "--leader-elect-retry-period", "2"]


@functools.cache
def helm() -> str:
    return require_helm()


def template(*args: str, check: bool = True) -> list[dict] | str:
    result = run_tool([helm(), "template", "thresher", str(CHART), "--namespace", NAMESPACE,
                       *args])
    if not check:
        return result.stdout + result.stderr if result.returncode else ""
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


@functools.cache
def rendered(name: str) -> tuple[dict, ...]:
    """Everything `helm template` renders for a scenario, `helm test` hooks included."""
    return tuple(template("-f", str(CHART / "ci" / name)))


@functools.cache
def scenario(name: str) -> tuple[dict, ...]:
    """The release's own objects (what `helm install` creates), without the test hooks."""
    return tuple(d for d in rendered(name) if not is_hook(d))


def hooks(name: str) -> tuple[dict, ...]:
    return tuple(d for d in rendered(name) if is_hook(d))


def operator_role(docs) -> dict:
    """The operator's ClusterRole (named <fullname>), not the aggregated user roles."""
    (role,) = [d for d in kinds(docs, "ClusterRole") if d["metadata"]["name"] == "thresher"]
    return role


def kinds(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str) -> dict:
    found = kinds(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def rule_set(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs}, failing on wildcards or duplicates."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in out, f"duplicate rule for {group}/{resource}"
                out[(group, resource)] = set(rule["verbs"])
    return out


def documented_rules() -> dict[str, list[dict]]:
    return yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())


def test_scenarios_exist():
    assert SCENARIOS == ["default-values.yaml", "monitoring-values.yaml", "namespaced-values.yaml"]


@pytest.mark.parametrize("values", SCENARIOS)
def test_helm_lint(values):
    result = run_tool([helm(), "lint", "--strict", str(CHART),
                       "-f", str(CHART / "ci" / values)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIOS)
def test_restricted_pod_security(values):
    """Every container meets Pod Security 'restricted' (the image runs as 10001)."""
    deploy = one(scenario(values), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


@pytest.mark.parametrize("values", SCENARIOS)
def test_deployment_shape(values):
    docs = scenario(values)
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    # Two replicas, one leader: a rolling update starts the new pod as a standby first.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Selector labels are a stable subset of the pod labels, without version or chart.
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(selector)
    service = one(docs, "Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http-metrics", "port": 9090, "targetPort": "http-metrics",
                                         "protocol": "TCP"}]
    c = spec["template"]["spec"]["containers"][0]
    assert c["image"] == f"ghcr.io/thresher-dev/thresher/operator:{APP_VERSION}"
    assert c["command"][:7] == ["thresher", "operator", "run", "--metrics-port", "9090", "--liveness-port", "8080"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["THRESHER_JOB_IMAGE"] == f"ghcr.io/thresher-dev/thresher/jobs:{APP_VERSION}"
    assert env["THRESHER_JOB_GPU_IMAGE"] == f"ghcr.io/thresher-dev/thresher/jobs-gpu:{APP_VERSION}"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert spec["template"]["spec"]["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_watched_namespaces_become_flags():
    default = one(scenario("default-values.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert default["command"][7:] == ["--all-namespaces", *LEADER_ELECT_ARGS]
    namespaced = one(scenario("namespaced-values.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert namespaced["command"][7:] == ["--namespace", "data", "--namespace", "drone", *LEADER_ELECT_ARGS]


def test_documented_rules_are_the_specified_ones():
    doc = documented_rules()
    assert rule_set(doc["namespaced"] + doc["cluster"] + doc["clusterWide"]) == SPECIFIED_RULES
    assert rule_set(doc["leaderElection"]) == SPECIFIED_LEASE_RULES


def watch_roles(docs) -> list[dict]:
    """The Roles of watched namespaces (not the Lease's Role)."""
    return [r for r in kinds(docs, "Role") if r["metadata"]["name"] != LEASE_ROLE]


@pytest.mark.parametrize("values", SCENARIOS)
def test_lease_rbac_is_a_role_in_the_release_namespace_only(values):
    """Leases are granted in the release namespace (where the operator's Lease lives), never
    cluster-wide or in watched namespaces."""
    docs = scenario(values)
    (role,) = [r for r in kinds(docs, "Role") if r["metadata"]["name"] == LEASE_ROLE]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rule_set(role["rules"]) == SPECIFIED_LEASE_RULES
    (binding,) = [b for b in kinds(docs, "RoleBinding") if b["metadata"]["name"] == LEASE_ROLE]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEASE_ROLE}
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]
    for r in kinds(docs, "ClusterRole") + watch_roles(docs):
        assert ("coordination.k8s.io", "leases") not in rule_set(r["rules"]), r["metadata"]["name"]


def test_high_availability_objects():
    """Two replicas: a PodDisruptionBudget over the operator pods and preferred anti-affinity
    (one node still runs both); one replica: neither, and no PDB that would block drains."""
    docs = scenario("default-values.yaml")
    deploy, pdb = one(docs, "Deployment"), one(docs, "PodDisruptionBudget")
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    affinity = deploy["spec"]["template"]["spec"]["affinity"]
    assert affinity == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                            "labelSelector": {"matchLabels": selector}}}]}}
    hard = one(template("--set", "podAntiAffinity=hard"), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert hard["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}
    custom = template("--set-json", f"affinity={json.dumps(own)}")
    assert one(custom, "Deployment")["spec"]["template"]["spec"]["affinity"] == own

    single = template("--set", "replicaCount=1")
    assert kinds(single, "PodDisruptionBudget") == []
    assert "affinity" not in one(single, "Deployment")["spec"]["template"]["spec"]
    assert one(single, "Deployment")["spec"]["replicas"] == 1


def test_without_leader_election_one_recreated_replica():
    docs = template("--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in spec["template"]["spec"]["containers"][0]["command"]
    assert [r["metadata"]["name"] for r in kinds(docs, "Role") if not is_hook(r)] == []
    refused = template("--set", "replicaCount=2", "--set", "leaderElection.enabled=false", check=False)
    assert "replicaCount > 1 needs leaderElection.enabled" in refused


def test_cluster_wide_rbac_equals_the_documented_list():
    docs = scenario("default-values.yaml")
    doc = documented_rules()
    role = operator_role(docs)
    assert rule_set(role["rules"]) == rule_set(doc["namespaced"] + doc["cluster"] + doc["clusterWide"])
    assert watch_roles(docs) == [] and [b["metadata"]["name"] for b in kinds(docs, "RoleBinding")] == [LEASE_ROLE]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": one(docs, "ServiceAccount")["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def test_namespaced_rbac_has_a_role_per_namespace_and_only_crd_reads_cluster_wide():
    docs = scenario("namespaced-values.yaml")
    doc = documented_rules()
    assert rule_set(operator_role(docs)["rules"]) == rule_set(doc["cluster"])
    roles = {r["metadata"]["namespace"]: r for r in watch_roles(docs)}
    bindings = {b["metadata"]["namespace"]: b for b in kinds(docs, "RoleBinding")
                if b["metadata"]["name"] != LEASE_ROLE}
    assert set(roles) == set(bindings) == {"data", "drone"}
    for ns, role in roles.items():
        assert rule_set(role["rules"]) == rule_set(doc["namespaced"])
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                           "name": role["metadata"]["name"]}
        assert bindings[ns]["subjects"][0]["namespace"] == NAMESPACE


def test_monitoring_objects_only_when_asked():
    for values in ("default-values.yaml", "namespaced-values.yaml"):
        docs = scenario(values)
        assert kinds(docs, "ServiceMonitor") == [] and kinds(docs, "PrometheusRule") == []
    docs = scenario("monitoring-values.yaml")
    assert len(kinds(docs, "ServiceMonitor")) == 1 and len(kinds(docs, "PrometheusRule")) == 1


def test_servicemonitor_follows_the_cluster_api():
    """Asked for without the API: a clear failure, not a silent skip; with the API: rendered without force."""
    error = template("--set", "serviceMonitor.enabled=true", check=False)
    assert "monitoring.coreos.com/v1" in error and "force" in error, error
    docs = template("--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1")
    monitor = one(docs, "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    # Without honorLabels the schedule's `namespace` label becomes exported_namespace and alerts break.
    assert endpoint["honorLabels"] is True
    assert monitor["spec"]["jobLabel"] == "thresher.dev/scrape-job"
    assert one(docs, "Service")["metadata"]["labels"]["thresher.dev/scrape-job"] == "thresher-operator"
    assert monitor["spec"]["selector"]["matchLabels"] == one(docs, "Service")["spec"]["selector"]


def test_prometheusrule_carries_the_rule_file_with_rebased_runbooks():
    rule = one(scenario("monitoring-values.yaml"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    source = (REPO / "manifests" / "monitoring" / "thresher-rules.yaml").read_text()
    expected = yaml.safe_load(source.replace("https://github.com/thresher-dev/thresher/blob/main/docs/runbook.md",
                                             "https://runbooks.example.org/thresher.md"))["groups"]
    assert rule["spec"]["groups"] == expected


def test_dashboard_configmap_for_the_grafana_sidecar():
    cm = one(scenario("default-values.yaml"), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name, body), = cm["data"].items()
    assert name.endswith(".json")
    assert json.loads(body) == json.loads((REPO / "manifests" / "monitoring" / "grafana-dashboard.json").read_text())
    assert kinds(scenario("namespaced-values.yaml"), "ConfigMap") == []
    folder = one(scenario("monitoring-values.yaml"), "ConfigMap")["metadata"]["annotations"]
    assert folder == {"grafana_folder": "Thresher"}


@pytest.mark.parametrize("name", ["grafana-dashboard.json", "thresher-rules.yaml"])
def test_chart_copies_are_identical_to_manifests(name):
    """The chart cannot read outside its directory, so it keeps copies; they must not drift."""
    chart_copy = (CHART / "files" / name).read_bytes()
    assert chart_copy == (REPO / "manifests" / "monitoring" / name).read_bytes(), (
        f"cp manifests/monitoring/{name} charts/thresher/files/{name}")


def test_priority_class_is_optional_and_never_global_default():
    assert kinds(scenario("default-values.yaml"), "PriorityClass") == []
    pc = one(scenario("monitoring-values.yaml"), "PriorityClass")
    assert pc["globalDefault"] is False and pc["value"] < 1_000_000_000


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("image.repositry=x", "repositry"),  # nested typo
        ("serviceMonitor.enable=true", "enable"),
        ("watchNamespace={a}", "watchNamespace"),  # top-level typo
        ("securityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),  # restricted is enforced
    ],
)
def test_bad_values_fail_with_a_schema_error(flag, key):
    error = template("--set", flag, check=False)
    assert error, f"--set {flag} rendered without error"
    assert "values don't meet the specifications of the schema" in error and key in error, error


def test_crds_are_not_templated():
    """crds/ is installed once and never deleted by helm; nothing in templates/ may render a CRD."""
    for values in SCENARIOS:
        assert kinds(scenario(values), "CustomResourceDefinition") == []


def test_every_value_is_documented_and_in_the_readme():
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    stack: list[str] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not m:
            continue
        assert lines[i - 1].strip().startswith("##"), f"values.yaml:{i + 1} {line.strip()} has no ## comment"
        stack = stack[: len(m.group(1)) // 2] + [m.group(2)]
        value = values
        for key in stack:
            value = value[key]
        if not (isinstance(value, dict) and value):
            assert f"| `{'.'.join(stack)}` |" in readme, f"README values table lacks {'.'.join(stack)}"


def test_schema_is_strict_at_every_object_level():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object":
            if "properties" in node or "patternProperties" in node:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            else:
                # A map of strings, or a documented Kubernetes pass-through, or Helm's global.
                assert (node.get("additionalProperties") == {"type": "string"}
                        or "passthrough" in node.get("$comment", "") or path == "$.global"), path
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "$")


# --- roles for users (aggregated into the built-in admin, edit, view) --------------------------

SCHEDULES = ("thresher.dev", "collectionschedules")
STATUS = ("thresher.dev", "collectionschedules/status")
READ = {"get", "list", "watch"}


def user_roles(docs) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in kinds(docs, "ClusterRole") if d["metadata"]["name"] != "thresher"}


def test_user_roles_aggregate_into_admin_edit_and_view():
    """Issue 16: a namespace user with the built-in edit role could not create a schedule. The
    chart's roles carry the aggregation labels; editors manage schedules, viewers read them
    and their status; nobody but the operator writes status."""
    roles = user_roles(scenario("default-values.yaml"))
    assert set(roles) == {"thresher-edit", "thresher-view"}
    edit, view = roles["thresher-edit"], roles["thresher-view"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(aggregate) and v == "true"} == {
        aggregate + "admin", aggregate + "edit"}
    assert {k for k, v in view["metadata"]["labels"].items() if k.startswith(aggregate) and v == "true"} == {
        aggregate + "view"}
    assert rule_set(edit["rules"]) == {
        SCHEDULES: READ | {"create", "update", "patch", "delete", "deletecollection"}, STATUS: READ}
    assert rule_set(view["rules"]) == {SCHEDULES: READ, STATUS: READ}
    # Nothing binds them: the built-in roles pick them up, RoleBindings to those grant them.
    assert all(b["roleRef"]["name"] == "thresher" for b in kinds(scenario("default-values.yaml"), "ClusterRoleBinding"))


@pytest.mark.parametrize(("flags", "expected"), [
    (("--set", "userRoles.edit=false"), {"thresher-view"}),
    (("--set", "userRoles.view=false"), {"thresher-edit"}),
    (("--set", "userRoles.edit=false", "--set", "userRoles.view=false"), set()),
])
def test_user_roles_can_be_turned_off(flags, expected):
    assert set(user_roles(template(*flags))) == expected


# --- helm test -----------------------------------------------------------------------------

def test_helm_test_is_a_restricted_pod_with_least_privilege():
    """`helm test` creates a schedule, runs it and waits for the recorded run: a Pod in the
    operator image whose ServiceAccount may touch CollectionSchedules in one namespace only."""
    docs = hooks("default-values.yaml")
    assert sorted(d["kind"] for d in docs) == ["Pod", "Role", "RoleBinding", "ServiceAccount"]
    for doc in docs:
        assert doc["metadata"]["annotations"]["helm.sh/hook"] == "test"
    pod, role, binding, account = (one(docs, k) for k in ("Pod", "Role", "RoleBinding", "ServiceAccount"))
    # RBAC goes when the test passes; the Pod stays for `helm test --logs`.
    for doc in (role, binding, account):
        assert doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert int(doc["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0  # before the Pod
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert rule_set(role["rules"]) == {SCHEDULES: {"get", "create", "patch", "delete"}}
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]

    spec = pod["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"] and spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = spec["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["capabilities"] == {
        "drop": ["ALL"]} and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["image"] == f"ghcr.io/thresher-dev/thresher/operator:{APP_VERSION}"
    assert c["command"] == ["python", "-c", (CHART / "files" / "helm-test.py").read_text()]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["THRESHER_TEST_NAMESPACE"] == NAMESPACE
    assert env["THRESHER_TEST_IMAGE"] == f"ghcr.io/thresher-dev/thresher/jobs:{APP_VERSION}"
    assert len(env["THRESHER_TEST_SCHEDULE"]) <= 52  # a CronJob name's limit
    # The operator's selectors never match the test Pod.
    selector = one(scenario("default-values.yaml"), "Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


def test_helm_test_uses_the_first_watched_namespace():
    """In namespace-scoped mode the operator ignores the release namespace: the test's
    schedule, Role and RoleBinding go to a watched one; the Pod stays in the release's."""
    docs = hooks("namespaced-values.yaml")
    assert one(docs, "Role")["metadata"]["namespace"] == one(docs, "RoleBinding")["metadata"]["namespace"] == "data"
    pod = one(docs, "Pod")
    assert pod["metadata"]["namespace"] == NAMESPACE
    assert {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}["THRESHER_TEST_NAMESPACE"] == "data"


def test_helm_test_can_be_turned_off():
    assert [d for d in template("--set", "helmTest.enabled=false") if is_hook(d)] == []


def test_helm_test_schedule_is_a_valid_collection_schedule():
    """The tiny schedule of files/helm-test.py passes the API's own validation (the one model
    the CRD is generated from), so the test cannot fail on a typo in its own manifest."""
    import runpy

    from thresher.api.schedule import CollectionSchedule, parse_schedule

    script = runpy.run_path(str(CHART / "files" / "helm-test.py"), run_name="helm_test")
    body = script["schedule"]("thresher-helm-test", "registry.example/thresher-jobs:1")
    assert isinstance(parse_schedule(body), CollectionSchedule), parse_schedule(body)


# --- the examples' prerequisites agree with the chart -----------------------------------------

def test_examples_priority_class_is_the_charts():
    """Issue 16: the examples named batch-low while the chart creates thresher-batch. The
    examples' PriorityClass is the chart's, with the chart's default settings."""
    chart_pc = one(template("--set", "priorityClass.create=true"), "PriorityClass")
    example_pc = yaml.safe_load((REPO / "manifests" / "examples" / "prerequisites" / "priorityclass.yaml").read_text())
    fields = ("value", "globalDefault", "preemptionPolicy", "description")
    assert example_pc["metadata"]["name"] == chart_pc["metadata"]["name"]
    assert {k: example_pc[k] for k in fields} == {k: chart_pc[k] for k in fields}
    named = {yaml.safe_load(p.read_text())["spec"].get("priorityClassName")
             for p in (REPO / "manifests" / "examples").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert named - {None} == {chart_pc["metadata"]["name"]}


def test_images_pinned_by_digest_and_job_pull_secrets_reach_the_operator():
    """Issue 16: `make release` packages the chart with digests for the operator and both job
    images; jobImages.pullSecrets reach the operator, which puts them on every run's pod."""
    digest = "sha256:" + "0f" * 32
    docs = template("--set", f"image.digest={digest}", "--set", f"jobImages.cpu.digest={digest}",
                    "--set", f"jobImages.gpu.digest={digest}", "--set", "imagePullSecrets[0].name=reg",
                    "--set", "jobImages.pullSecrets[0].name=reg", "--set", "jobImages.pullSecrets[1].name=other")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == f"ghcr.io/thresher-dev/thresher/operator@{digest}"
    assert env["THRESHER_JOB_IMAGE"] == f"ghcr.io/thresher-dev/thresher/jobs@{digest}"
    assert env["THRESHER_JOB_GPU_IMAGE"] == f"ghcr.io/thresher-dev/thresher/jobs-gpu@{digest}"
    assert env["THRESHER_JOB_IMAGE_PULL_SECRETS"] == "reg,other"
    assert pod["imagePullSecrets"] == [{"name": "reg"}]
    default = {e["name"] for e in one(template(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "THRESHER_JOB_IMAGE_PULL_SECRETS" not in default
    error = template("--set", "jobImages.cpu.digest=latest", check=False)
    assert "values don't meet the specifications of the schema" in error and "digest" in error, error
