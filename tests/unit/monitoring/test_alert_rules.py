"""The alert rules, judged by promtool, and kept consistent with the metrics and the runbook."""

from __future__ import annotations

import re

import yaml
from tests.helpers.tools import REPO, require_tool, run_tool
from thresher.operator.activeruns import BLOCKED_GAUGE
from thresher.operator.metrics import OperatorMetrics

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
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, a["alert"]
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
