"""The alert rules, judged by promtool, and kept consistent with the metrics and the runbook."""

from __future__ import annotations

import re

import yaml
from tests.helpers.tools import REPO, require_tool, run_tool
from thresher.api.alerting_labels import INFO_LABELS, ROUTING_KEYS, SEVERITY_KEYS
from thresher.operator.activeruns import BLOCKED_GAUGE
from thresher.operator.metrics import INFO_SERIES_LABELS, OperatorMetrics

MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "thresher-rules.yaml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_BASE = "https://github.com/thresher-dev/thresher/blob/main/docs/runbook.md#"

EXPECTED_ALERTS = {
    "ThresherRunFailed", "ThresherRunBlocked", "ThresherConsecutiveFailures", "ThresherScheduleStale", "ThresherRunTooLong",
    "ThresherDataQualityLow", "ThresherVolumeLow", "ThresherScheduleSuspended", "ThresherOperatorDown",
    "ThresherOperatorNotReconciling", "ThresherOperatorReconcileErrors",
}


# "{{ with $labels.X }}{{ . }}{{ else }}DEFAULT{{ end }}": a severity the schedule may override.
OVERRIDE = re.compile(r"^\{\{ with \$labels\.(\w+) \}\}\{\{ \. \}\}\{\{ else \}\}(\w+)\{\{ end \}\}$")


def possible_severities(rule: dict) -> set[str]:
    """The severities an alert can carry: its fixed one, or its default and both override values."""
    severity = rule["labels"]["severity"]
    match = OVERRIDE.match(severity)
    return {match.group(2), "warning", "critical"} if match else {severity}


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules():
    result = run_tool([require_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_test_rules():
    """Every case in manifests/monitoring/tests, including those that must NOT fire."""
    assert RULE_TESTS, "no promtool test files"
    result = run_tool([require_tool("promtool"), "test", "rules", *map(str, RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_the_expected_alerts_exist_and_each_has_promtool_cases():
    names = {a["alert"] for a in alerts()}
    assert names == EXPECTED_ALERTS
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", [])}
    assert names - tested == set(), "alerts without a promtool test"


def test_every_alert_has_severity_summary_description_and_a_runbook_anchor():
    runbook = RUNBOOK.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for a in alerts():
        assert possible_severities(a) <= {"critical", "warning", "info"}, a["alert"]
        ann = a["annotations"]
        assert ann["summary"] and ann["description"], a["alert"]
        assert ann["runbook_url"] == RUNBOOK_BASE + a["alert"].lower(), a["alert"]
        assert a["alert"].lower() in anchors, f"docs/runbook.md has no section {a['alert']}"


def test_rules_only_use_metrics_the_operator_exports():
    """A renamed metric would silently turn an alert into one that never fires."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    declared = {family.name + suffix
                for family in OperatorMetrics().registry.collect() for suffix in suffixes[family.type]}
    used = set(re.findall(r"\bthresher_[a-z_]+", RULES.read_text()))
    assert used and used - declared == set()


def test_the_blocked_gauge_is_registered_and_documented():
    """Issue 13: ThresherRunBlocked alerts on the gauge the operator really exports."""
    declared = {family.name for family in OperatorMetrics().registry.collect()}
    assert BLOCKED_GAUGE in declared
    assert BLOCKED_GAUGE in (REPO / "docs" / "metrics.md").read_text()


def _schedule_alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] if g["name"] == "thresher.schedules"
            for r in g["rules"]]


def test_every_schedule_alert_joins_the_info_metric_with_a_fallback():
    """Pins issue 17: an alert without the schedule's team cannot be routed to it, and one whose
    info series is missing must still fire (the `or` half; promtool's routing.yaml proves both)."""
    routing = ", ".join(ROUTING_KEYS.values())
    for rule in _schedule_alerts():
        expr = rule["expr"]
        join = re.search(r"\* on \(namespace, schedule\) group_left \(([^)]*)\)\s+"
                         r"topk by \(namespace, schedule\) \(1, thresher_schedule_info\)\s+or on \(namespace, schedule\)",
                         expr)
        assert join, rule["alert"]
        assert join.group(1).startswith(routing), rule["alert"]
        # Both halves evaluate the same condition.
        assert expr[:join.start()].split() == expr[join.end():].split(), rule["alert"]


def test_severity_overrides_match_the_alerting_labels_model():
    """The rules and thresher/api/alerting_labels.py name the same override labels and defaults."""
    overridden = {}
    for rule in _schedule_alerts():
        match = OVERRIDE.match(rule["labels"]["severity"])
        if match:
            overridden[rule["alert"]] = (match.group(1), match.group(2))
            assert f", {match.group(1)})" in rule["expr"], "the override label must be joined"
    assert overridden == {alert: (label, default) for label, alert, default in SEVERITY_KEYS.values()}


def _info_labels_declared() -> set[str]:
    return set(INFO_SERIES_LABELS)


def test_joined_labels_are_labels_of_the_info_metric():
    """A label the rules copy but the info series never carries would route nothing."""
    for rule in _schedule_alerts():
        joined = re.search(r"group_left \(([^)]*)\)", rule["expr"]).group(1).split(", ")
        assert set(joined) <= _info_labels_declared() | set(INFO_LABELS), rule["alert"]
