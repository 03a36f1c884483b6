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
    ("thresher.dev", "collectionschedules"): {"get", "list", "watch", "patch"},
    ("thresher.dev", "collectionschedules/status"): {"patch"},
    ("thresher.dev", "collectionschedules/finalizers"): {"update"},
    ("batch", "cronjobs"): {"get", "list", "watch", "create", "patch"},
    ("batch", "cronjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"list", "watch", "create", "patch"},
    ("", "pods"): {"list"},
    ("", "events"): {"create"},
    ("events.k8s.io", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


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


@functools.cache
def scenario(name: str) -> tuple[dict, ...]:
    return tuple(template("-f", str(CHART / "ci" / name)))


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
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    # Selector labels are a stable subset of the pod labels, without version or chart.
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(selector)
    service = one(docs, "Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http-metrics", "port": 9090, "targetPort": "http-metrics",
                                         "protocol": "TCP"}]
    c = spec["template"]["spec"]["containers"][0]
    assert c["image"] == f"ghcr.io/thresher-dev/thresher-operator:{APP_VERSION}"
    assert c["command"][:7] == ["thresher", "operator", "run", "--metrics-port", "9090", "--liveness-port", "8080"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["THRESHER_JOB_IMAGE"] == f"ghcr.io/thresher-dev/thresher-jobs:{APP_VERSION}"
    assert env["THRESHER_JOB_GPU_IMAGE"] == f"ghcr.io/thresher-dev/thresher-jobs-gpu:{APP_VERSION}"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert spec["template"]["spec"]["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_watched_namespaces_become_flags():
    default = one(scenario("default-values.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert default["command"][7:] == ["--all-namespaces"]
    namespaced = one(scenario("namespaced-values.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert namespaced["command"][7:] == ["--namespace", "data", "--namespace", "drone"]


def test_documented_rules_are_the_specified_ones():
    doc = documented_rules()
    assert rule_set(doc["namespaced"] + doc["cluster"] + doc["clusterWide"]) == SPECIFIED_RULES


def test_cluster_wide_rbac_equals_the_documented_list():
    docs = scenario("default-values.yaml")
    doc = documented_rules()
    role = one(docs, "ClusterRole")
    assert rule_set(role["rules"]) == rule_set(doc["namespaced"] + doc["cluster"] + doc["clusterWide"])
    assert kinds(docs, "Role") == [] and kinds(docs, "RoleBinding") == []
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": one(docs, "ServiceAccount")["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def test_namespaced_rbac_has_a_role_per_namespace_and_only_crd_reads_cluster_wide():
    docs = scenario("namespaced-values.yaml")
    doc = documented_rules()
    assert rule_set(one(docs, "ClusterRole")["rules"]) == rule_set(doc["cluster"])
    roles = {r["metadata"]["namespace"]: r for r in kinds(docs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in kinds(docs, "RoleBinding")}
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
