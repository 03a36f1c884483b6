"""Alertmanager configuration, judged by amtool: it loads, and each alert reaches the right receivers."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
import yaml

from tests.helpers.prometheus import free_port, poll
from tests.helpers.tools import REPO, require_tool, run_tool
from tests.unit.monitoring.test_alert_rules import possible_severities

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
        # Per team (issue 17): the schedule's alerting.labels.team, joined from thresher_schedule_info.
        (("alertname=ThresherRunFailed", "severity=warning", "team=data-platform"), "data-platform-slack"),
        (("alertname=ThresherConsecutiveFailures", "severity=critical", "team=data-platform"),
         "data-platform-critical"),
        (("alertname=ThresherRunFailed", "severity=warning", "team=agronomy"), "agronomy-email"),
        (("alertname=ThresherScheduleStale", "severity=critical", "team=agronomy"), "agronomy-critical"),
        (("alertname=ThresherScheduleSuspended", "severity=info", "team=agronomy"), "null"),
        # A team without a route of its own falls back to the severity routes.
        (("alertname=ThresherScheduleStale", "severity=critical", "team=unknown"), "thresher-critical"),
        (("alertname=ThresherRunFailed", "severity=warning", "team=unknown"), "thresher-slack"),
    ],
)
def test_routes(labels, receiver):
    route(*labels, expect=receiver)


def test_every_rule_severity_routes_as_documented():
    """Ties the rule file to the routing tree: a new severity value would fall through to the default.
    A severity a schedule can override is routed with each value it can take."""
    expected = {"critical": "thresher-critical", "warning": "thresher-slack", "info": "null"}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for severity in possible_severities(rule):
                route(f"alertname={rule['alert']}", f"severity={severity}", expect=expected[severity])


def test_the_two_teams_get_slack_and_email():
    receivers = {r["name"]: r for r in yaml.safe_load(CONFIG.read_text())["receivers"]}
    assert set(receivers["data-platform-slack"]) == {"name", "slack_configs"}
    assert set(receivers["agronomy-email"]) == {"name", "email_configs"}
    for critical in ("data-platform-critical", "agronomy-critical"):
        assert set(receivers[critical]) == {"name", "email_configs", "slack_configs"}


def test_critical_receiver_emails_slacks_and_pages():
    receivers = {r["name"]: r for r in yaml.safe_load(CONFIG.read_text())["receivers"]}
    critical = receivers["thresher-critical"]
    assert critical.get("email_configs") and critical.get("slack_configs") and critical.get("pagerduty_configs")
    assert set(receivers["thresher-slack"]) == {"name", "slack_configs"}
    assert set(receivers["null"]) == {"name"}


def test_grouping_by_schedule():
    assert yaml.safe_load(CONFIG.read_text())["route"]["group_by"] == ["namespace", "schedule"]


def alert(name: str, severity: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": name}, "startsAt": "2020-01-01T00:00:00Z"}


def test_inhibition_in_a_real_alertmanager(tmp_path):
    """amtool cannot evaluate inhibit_rules; a real Alertmanager can (the API applies them per query).

    Operator down mutes warnings and info but not other criticals; ConsecutiveFailures
    mutes RunFailed of the same schedule only.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "alertmanager.log", "wb") as log:
        proc = subprocess.Popen(
            [require_tool("prometheus-alertmanager"), f"--config.file={CONFIG}",
             f"--storage.path={tmp_path}", f"--web.listen-address=127.0.0.1:{port}",
             "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, timeout=30,
             describe="alertmanager ready")
        seen: dict = {}

        def post(*alerts: dict) -> None:
            request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(request, timeout=5).close()

        def expect(expected: dict) -> None:
            def applied() -> bool:
                # The inhibitor learns source alerts asynchronously: poll until it has.
                with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
                    seen.clear()
                    seen.update({(a["labels"]["alertname"], a["labels"].get("schedule")):
                                 bool(a["status"]["inhibitedBy"]) for a in json.load(resp)})
                return seen == expected

            try:
                poll(applied, timeout=10, describe="inhibition")
            except TimeoutError:
                assert seen == expected

        # Operator up: ConsecutiveFailures mutes RunFailed of its own schedule only.
        post(alert("ThresherConsecutiveFailures", "critical", namespace="farm", schedule="d"),
             alert("ThresherRunFailed", "warning", namespace="farm", schedule="d"),
             alert("ThresherRunFailed", "warning", namespace="data", schedule="a"),
             alert("ThresherScheduleSuspended", "info", namespace="data", schedule="b"),
             alert("ThresherScheduleStale", "critical", namespace="data", schedule="c"))
        state = {("ThresherConsecutiveFailures", "d"): False, ("ThresherRunFailed", "d"): True,
                 ("ThresherRunFailed", "a"): False, ("ThresherScheduleSuspended", "b"): False,
                 ("ThresherScheduleStale", "c"): False}
        expect(state)
        # Operator down: every warning and info is a symptom; criticals still page.
        post(alert("ThresherOperatorDown", "critical"))
        expect({**state, ("ThresherOperatorDown", None): False, ("ThresherRunFailed", "a"): True,
                ("ThresherScheduleSuspended", "b"): True})
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_no_secret_inline():
    text = CONFIG.read_text()
    for key in ("api_url:", "routing_key:", "auth_password:", "service_key:"):
        assert key not in text, f"{key} must be a *_file reference"
