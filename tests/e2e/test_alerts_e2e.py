"""Alerts and dashboard end to end: the chart installed on the local control plane, the real
operator running with the chart's RBAC (its ServiceAccount's token), a real Prometheus
scraping it with ``honor_labels: true`` and evaluating manifests/monitoring/thresher-rules.yaml
as shipped (unmodified), and runs simulated by kwok.

- Three failed runs -> ThresherConsecutiveFailures is *firing* in /api/v1/alerts; one success
  -> it is gone. The rule has no ``for:``, so with a 1 s evaluation interval the real file
  fires within seconds: no shortened copy is needed.
- Every Grafana panel query (template variables substituted as Grafana does) parses and
  returns data from this Prometheus, for "All" and for the test's schedule.

How to run it, and what it needs: docs/monitoring.md ("End to end").
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import REPO
from tests.helpers.chart import (
    OperatorRun, Release, install_chart, service_account_kubeconfig, uninstall_chart,
)
from tests.helpers.prometheus import Prometheus, running_prometheus
from tests.helpers.wait import eventually
from tests.integration.test_operator import run_now, schedule, simulate, wait_runs
from tests.unit.monitoring.test_grafana_dashboard import dashboard, exprs, substitute

pytestmark = pytest.mark.e2e

RULES = REPO / "manifests" / "monitoring" / "thresher-rules.yaml"
NAME = "flaky"
RESULT = {"jobType": "container", "succeeded": True, "items": 120, "valid": 117, "quality": 0.975}


@dataclass
class Stack:
    cluster: object
    namespace: str
    release: Release
    operator: OperatorRun
    prometheus: Prometheus

    def run(self, count: int, *, exit_code: int | None = None) -> dict:
        """One run-now with the given fate; returns the status once ``count`` runs are recorded."""
        if exit_code is None:
            simulate(self.cluster, self.namespace, NAME, message=RESULT)
        else:
            simulate(self.cluster, self.namespace, NAME, exit_code=exit_code,
                     message={"jobType": "container", "succeeded": False, "error": "upstream 503"})
        run_now(self.cluster, self.namespace, NAME)
        return wait_runs(self.cluster, self.namespace, NAME, count)

    def alert(self, name: str) -> dict | None:
        return next((a for a in self.prometheus.alerts() if a["labels"].get("alertname") == name
                     and a["labels"].get("namespace") == self.namespace
                     and a["labels"].get("schedule") == NAME), None)


@pytest.fixture(scope="module")
def stack(cluster, crd, tmp_path_factory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    ns = f"thresher-e2e-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    release = install_chart(cluster, f"e2e{uuid.uuid4().hex[:5]}", ns)
    op = None
    try:
        kubeconfig = service_account_kubeconfig(cluster, ns, release.service_account, workdir / "sa.kubeconfig")
        op = OperatorRun(kubeconfig, workdir / "operator.log").start()
        with running_prometheus(workdir / "prometheus", targets=[op.metrics_target], rule_files=[RULES]) as prom:
            prom.wait_for_scrape()
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=schedule(
                NAME, retries=0, timeoutSeconds=600,
                alerting={"consecutiveFailureThreshold": 3, "minQualityRate": 0.9, "minItems": 100}))
            yield Stack(cluster, ns, release, op, prom)
    finally:
        if op:
            op.stop()
        uninstall_chart(cluster, release)
        cluster.kubectl("delete", "collectionschedules", "--all", "-n", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_consecutive_failures_alert_fires_and_clears(stack):
    """ThresherConsecutiveFailures: not active after two failures (threshold 3), firing after
    the third, gone after a success."""
    stack.run(1, exit_code=1)
    assert stack.operator.log_has("manual run", '"job_created": true'), \
        "another operator created the run's Job: stop other Thresher operators watching all namespaces"
    status = stack.run(2, exit_code=1)
    assert status["consecutiveFailures"] == 2
    # The gauge of 2 is scraped and evaluated, and the alert is still not active.
    stack.prometheus.wait_for_value(
        f'thresher_schedule_consecutive_failures{{namespace="{stack.namespace}",schedule="{NAME}"}} == 2')
    stack.prometheus.wait_for_scrape(after=time.time() + 2)  # two more evaluations
    assert stack.alert("ThresherConsecutiveFailures") is None

    status = stack.run(3, exit_code=1)
    assert status["consecutiveFailures"] == 3
    firing = eventually(lambda: (a := stack.alert("ThresherConsecutiveFailures")) and a["state"] == "firing" and a,
                        timeout=30, message="ThresherConsecutiveFailures firing")
    # warning: the default since issue 17 (critical only where spec.alerting.labels says so).
    assert firing["labels"]["severity"] == "warning" and float(firing["value"]) == 3.0
    assert "failed 3 times in a row" in firing["annotations"]["summary"]
    # The companion alert of the same rule file sees the failed runs too.
    assert eventually(lambda: stack.alert("ThresherRunFailed"), timeout=30, message="ThresherRunFailed")

    status = stack.run(4)
    assert status["consecutiveFailures"] == 0
    eventually(lambda: stack.alert("ThresherConsecutiveFailures") is None, timeout=30,
               message="ThresherConsecutiveFailures cleared after a success")


@pytest.mark.parametrize("scope", ["all", "one-schedule"])
def test_every_dashboard_query_returns_data_from_the_real_operator(stack, scope):
    """Each panel query of grafana-dashboard.json, variables substituted, parses and returns
    data; rate windows ($__rate_interval = 1m) see a run from the last minute."""
    if not stack.prometheus.query(f'thresher_schedule_runs_total{{namespace="{stack.namespace}"}}'):
        pytest.fail("no runs scraped: test_consecutive_failures_alert_fires_and_clears must run first")
    count = len(json.loads(stack.cluster.kubectl("get", "collectionschedule", NAME, "-n", stack.namespace,
                                                 "-o", "json").stdout)["status"]["recentRuns"])
    stack.run(count + 1)  # a fresh success for the 1m rate windows
    values = ({"$namespace": ".*", "$schedule": ".*", "$__rate_interval": "1m"} if scope == "all" else
              {"$namespace": stack.namespace, "$schedule": NAME, "$__rate_interval": "1m"})
    missing = []
    for where, expr in exprs(dashboard()):
        query = substitute(expr, values)
        try:
            stack.prometheus.wait_for_value(query, timeout=20)
        except TimeoutError as exc:
            missing.append(f"{where}: {query}: {exc}")
    assert not missing, "panels without data:\n" + "\n".join(missing) + "\n" + stack.prometheus.log_tail()
    namespaces = {r["metric"]["namespace"] for r in stack.prometheus.query("thresher_schedule_info")}
    assert stack.namespace in namespaces  # the namespace variable offers the test's namespace
