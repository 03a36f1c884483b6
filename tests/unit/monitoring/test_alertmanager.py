"""Alertmanager configuration, judged by amtool: it loads, and each alert reaches the right receivers."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers.tools import REPO, require_tool, run_tool

CONFIG = REPO / "manifests" / "monitoring" / "alertmanager.yaml"
RULES = REPO / "manifests" / "monitoring" / "thresher-rules.yaml"


def test_amtool_check_config():
    result = run_tool([require_tool("amtool"), "check-config", str(CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def route(*labels: str, expect: str) -> None:
    """amtool resolves the receivers for ``labels``; --verify.receivers makes a mismatch exit non-zero."""
    result = run_tool([require_tool("amtool"), "config", "routes", "test", f"--config.file={CONFIG}",
                       f"--verify.receivers={expect}", *labels])
    assert result.returncode == 0, f"{labels} -> {result.stdout.strip()} (expected {expect}) {result.stderr}"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (("alertname=ThresherConsecutiveFailures", "severity=critical", "namespace=data", "schedule=a"),
         "thresher-critical"),
        (("alertname=ThresherOperatorDown", "severity=critical"), "thresher-critical"),
        (("alertname=ThresherRunFailed", "severity=warning", "namespace=data", "schedule=a"), "thresher-slack"),
        (("alertname=ThresherScheduleSuspended", "severity=info", "namespace=data", "schedule=a"), "null"),
        # No severity label at all: still reaches a human.
        (("alertname=SomethingElse",), "thresher-slack"),
    ],
)
def test_routes(labels, receiver):
    route(*labels, expect=receiver)


def test_every_rule_severity_routes_as_documented():
    """Ties the rule file to the routing tree: a new severity value would fall through to the default."""
    expected = {"critical": "thresher-critical", "warning": "thresher-slack", "info": "null"}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            route(f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}",
                  expect=expected[rule["labels"]["severity"]])


def test_critical_receiver_emails_slacks_and_pages():
    receivers = {r["name"]: r for r in yaml.safe_load(CONFIG.read_text())["receivers"]}
    critical = receivers["thresher-critical"]
    assert critical.get("email_configs") and critical.get("slack_configs") and critical.get("pagerduty_configs")
    assert set(receivers["thresher-slack"]) == {"name", "slack_configs"}
    assert set(receivers["null"]) == {"name"}


def test_grouping_and_inhibition():
    """amtool cannot evaluate inhibition, so check its shape: operator down mutes warnings and info."""
    config = yaml.safe_load(CONFIG.read_text())
    assert config["route"]["group_by"] == ["namespace", "schedule"]
    operator_down = [r for r in config["inhibit_rules"]
                     if r["source_matchers"] == ['alertname="ThresherOperatorDown"']]
    assert operator_down and operator_down[0]["target_matchers"] == ['severity=~"warning|info"']
    assert "equal" not in operator_down[0], "operator alerts carry no schedule labels to be equal on"


def test_no_secret_inline():
    text = CONFIG.read_text()
    for key in ("api_url:", "routing_key:", "auth_password:", "service_key:"):
        assert key not in text, f"{key} must be a *_file reference"
