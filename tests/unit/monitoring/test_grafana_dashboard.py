"""The Grafana dashboard: current schema, templated datasource, and every query valid AND answered.

The queries run against a real Prometheus (tests/helpers/prometheus.py) that
scrapes an OperatorMetrics registry populated with sample runs, so a panel
whose metric, label or function is wrong shows up as "no data" here, not on
an on-call's screen.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.helpers.prometheus import Prometheus, running_prometheus
from tests.helpers.tools import REPO, require_tool, run_tool
from thresher.operator.desired_status import ScheduleState
from thresher.operator.metrics import OperatorMetrics

DASHBOARD = REPO / "manifests" / "monitoring" / "grafana-dashboard.json"

# What Grafana substitutes: "All" is the variable's allValue; $__rate_interval
# is at least four scrape intervals, so 1m is generous for a 1s scrape.
ALL = {"$namespace": ".*", "$schedule": ".*", "$__rate_interval": "1m"}
ONE = {"$namespace": "data", "$schedule": "tmdb-daily", "$__rate_interval": "1m"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> Iterator[dict]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest theirs


def exprs(dash: dict) -> list[tuple[str, str]]:
    """(panel title/refId, expr) of every query target."""
    return [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def substitute(expr: str, values: dict[str, str]) -> str:
    for var, value in values.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_schema_and_templating():
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "schedule"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("description"), f"panel {p['title']} has no description"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            # Per-schedule panels must honour the filters.
            if "thresher_schedule_" in t["expr"]:
                assert 'namespace=~"$namespace"' in t["expr"] and 'schedule=~"$schedule"' in t["expr"], t["expr"]


def test_covers_the_required_views():
    titles = {p["title"] for p in panels(dashboard())}
    for required in ("Runs by outcome", "Success rate (24h)", "Run duration p50 (24h)", "Run duration p95 (24h)",
                     "Time since last success", "Consecutive failures", "Time to next run", "Items per run",
                     "Quality rate", "Operator up", "Reconciles by handler and result"):
        assert required in titles


def test_every_query_parses_with_promtool(tmp_path):
    """promtool parses each expr as a recording rule: a PromQL syntax error fails here with the panel named."""
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr, ALL)}
             for i, (_, expr) in enumerate(exprs(dashboard()))]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool([require_tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def populate(m: OperatorMetrics, now: float) -> None:
    """Two schedules in two namespaces with some history."""
    for ns, name, job_type in (("data", "tmdb-daily", "tmdb"), ("farm", "drone-fields", "drone")):
        m.set_schedule_state(ScheduleState(
            namespace=ns, schedule=name, job_type=job_type, suspended=False, next_run=now + 3600,
            last_run=now - 600, last_success=now - 600, last_failure=now - 90000, consecutive_failures=1,
            failure_threshold=3, stale=False, stale_after_seconds=93600, min_quality=0.9, min_items=100,
            active_runs=1, oldest_active_start=now - 60, expected_duration_seconds=3600, cron="0 3 * * *",
            time_zone="UTC",
        ))
        m.observe_run(namespace=ns, schedule=name, job_type=job_type, outcome="succeeded", duration_seconds=300,
                      finished_at=now - 600, items=1000, valid=950, quality=0.95)
    for handler in ("schedule_create", "schedule_timer"):  # the start-up pass over existing schedules
        m.observe_reconcile(handler=handler, ok=True, seconds=0.02)


def more_runs(m: OperatorMetrics, now: float) -> None:
    """Increments after Prometheus's first scrape, so increase()/rate() see them."""
    for ns, name, job_type in (("data", "tmdb-daily", "tmdb"), ("farm", "drone-fields", "drone")):
        for outcome, duration in (("succeeded", 420.0), ("failed", 30.0), ("succeeded", 2000.0)):
            m.observe_run(namespace=ns, schedule=name, job_type=job_type, outcome=outcome,
                          duration_seconds=duration, finished_at=now, items=1200, valid=1100, quality=0.92)
    for handler, ok in (("schedule_create", True), ("schedule_timer", True), ("schedule_timer", False)):
        m.observe_reconcile(handler=handler, ok=ok, seconds=0.05)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    metrics = OperatorMetrics(version="0.0.0-test")
    populate(metrics, time.time())
    metrics.serve(0, "127.0.0.1")
    try:
        with running_prometheus(tmp_path_factory.mktemp("prometheus"),
                                targets=[f"127.0.0.1:{metrics.port}"]) as prom:
            prom.wait_for_scrape()
            changed_at = time.time()
            more_runs(metrics, changed_at)
            prom.wait_for_scrape(after=changed_at)
            yield prom
    finally:
        metrics.shutdown()


@pytest.mark.parametrize("values", [ALL, ONE], ids=["all", "one-schedule"])
def test_every_query_returns_data_from_a_real_prometheus(prometheus, values):
    missing = []
    for where, expr in exprs(dashboard()):
        query = substitute(expr, values)
        try:
            prometheus.wait_for_value(query, timeout=15)
        except TimeoutError as exc:
            missing.append(f"{where}: {query}: {exc}")
    assert not missing, "panels without data:\n" + "\n".join(missing) + "\n" + prometheus.log_tail()


def test_variable_queries_return_values(prometheus):
    """label_values(selector, label) as Grafana runs it: the selector's series carry the label."""
    for v in dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
        assert match, v["query"]
        selector, label = match.groups()
        found = {r["metric"].get(label) for r in prometheus.query(substitute(selector, ALL))}
        assert found == {"namespace": {"data", "farm"}, "schedule": {"tmdb-daily", "drone-fields"}}[label]
