"""OperatorMetrics as Prometheus sees it: through the text exposition, parsed by prometheus_client's parser."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from thresher.api.alerting_labels import INFO_LABELS, AlertingLabels
from thresher.operator.desired_status import ScheduleState
from thresher.operator.metrics import OUTCOMES, OperatorMetrics

NS, NAME = "data", "tmdb-daily"


def samples(metrics: OperatorMetrics) -> dict[tuple[str, frozenset], float]:
    """Every exposed sample, keyed by (sample name, labels)."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def names_with(metrics: OperatorMetrics, **labels: str) -> set[str]:
    """Sample names that have a series carrying all of ``labels``."""
    want = set(labels.items())
    return {name for (name, lbls) in samples(metrics) if want <= lbls}


def full_state(**overrides) -> dict:
    state = dict(
        namespace=NS, schedule=NAME, job_type="tmdb", suspended=False, next_run=2000.0, last_run=1500.0,
        last_success=1500.0, last_failure=1200.0, consecutive_failures=0, failure_threshold=3, stale=False,
        stale_after_seconds=93600.0, min_quality=0.9, min_items=100, active_runs=1, oldest_active_start=1900.0,
        expected_duration_seconds=3600.0, cron="0 3 * * *", time_zone="Europe/Berlin",
    )
    state.update(overrides)
    return state


def run(metrics: OperatorMetrics, **overrides) -> None:
    kwargs = dict(namespace=NS, schedule=NAME, job_type="tmdb", outcome="succeeded", duration_seconds=42.0,
                  finished_at=1500.0, items=1000, valid=990, quality=0.99)
    kwargs.update(overrides)
    metrics.observe_run(**kwargs)


def test_nothing_is_registered_at_import_or_shared_between_instances():
    """Two instances in one process must not collide (the import-time-registry pitfall)."""
    a, b = OperatorMetrics(), OperatorMetrics()
    run(a)
    assert a.registry is not b.registry
    assert value(b, "thresher_schedule_runs_total", namespace=NS, schedule=NAME, job_type="tmdb",
                 outcome="succeeded") is None


def test_explicit_registry_is_used():
    registry = CollectorRegistry()
    m = OperatorMetrics(registry, version="9.9.9")
    assert m.registry is registry
    assert registry.get_sample_value("thresher_operator_info", {"version": "9.9.9"}) == 1


def test_observe_run_counts_outcomes_and_initialises_the_others_at_zero():
    """A counter that first appears at 1 is invisible to increase(); all outcomes must start at 0."""
    m = OperatorMetrics()
    run(m, outcome="failed", finished_at=1000.0)
    base = dict(namespace=NS, schedule=NAME, job_type="tmdb")
    assert value(m, "thresher_schedule_runs_total", **base, outcome="failed") == 1
    assert value(m, "thresher_schedule_runs_total", **base, outcome="succeeded") == 0
    assert value(m, "thresher_schedule_runs_total", **base, outcome="timed_out") == 0
    run(m, outcome="timed_out", finished_at=1100.0)
    assert value(m, "thresher_schedule_runs_total", **base, outcome="timed_out") == 1


def test_observe_run_duration_histogram_buckets_span_seconds_to_hours():
    m = OperatorMetrics()
    run(m, duration_seconds=42.0)
    run(m, duration_seconds=5 * 3600.0, finished_at=2000.0)
    base = dict(namespace=NS, schedule=NAME, job_type="tmdb")
    assert value(m, "thresher_schedule_run_duration_seconds_count", **base) == 2
    assert value(m, "thresher_schedule_run_duration_seconds_sum", **base) == 42.0 + 18000.0
    assert value(m, "thresher_schedule_run_duration_seconds_bucket", **base, le="1.0") == 0
    assert value(m, "thresher_schedule_run_duration_seconds_bucket", **base, le="60.0") == 1
    assert value(m, "thresher_schedule_run_duration_seconds_bucket", **base, le="21600.0") == 2


def test_observe_run_sets_last_run_gauges_and_removes_unknown_ones():
    """A crashed run that reported nothing must not leave the previous run's quality in place."""
    m = OperatorMetrics()
    run(m, items=1000, valid=990, quality=0.99)
    sj = dict(namespace=NS, schedule=NAME, job_type="tmdb")
    assert value(m, "thresher_schedule_last_run_items", **sj) == 1000
    assert value(m, "thresher_schedule_last_run_valid_items", **sj) == 990
    assert value(m, "thresher_schedule_last_run_quality_ratio", **sj) == 0.99
    run(m, outcome="failed", items=None, valid=None, quality=None, finished_at=1600.0)
    assert value(m, "thresher_schedule_last_run_items", **sj) is None
    assert value(m, "thresher_schedule_last_run_quality_ratio", **sj) is None


def test_observe_run_timestamps_only_move_forward():
    m = OperatorMetrics()
    s = dict(namespace=NS, schedule=NAME)
    run(m, outcome="failed", finished_at=2000.0)
    run(m, outcome="succeeded", finished_at=1500.0)  # recorded late, finished earlier
    assert value(m, "thresher_schedule_last_run_timestamp_seconds", **s) == 2000.0
    assert value(m, "thresher_schedule_last_failure_timestamp_seconds", **s) == 2000.0
    assert value(m, "thresher_schedule_last_success_timestamp_seconds", **s) == 1500.0
    run(m, outcome="failed", finished_at=1800.0)
    assert value(m, "thresher_schedule_last_failure_timestamp_seconds", **s) == 2000.0


def test_observe_run_rejects_unknown_outcome():
    """Outcome is a bounded label: free text there would explode cardinality."""
    with pytest.raises(ValueError, match="outcome"):
        run(OperatorMetrics(), outcome="OOMKilled")


def test_set_schedule_state_exposes_every_gauge():
    m = OperatorMetrics()
    m.set_schedule_state(ScheduleState(**full_state()))
    s = dict(namespace=NS, schedule=NAME)
    sj = dict(s, job_type="tmdb")
    expected = {
        ("thresher_schedule_suspended", "s"): 0,
        ("thresher_schedule_next_run_timestamp_seconds", "s"): 2000,
        ("thresher_schedule_last_run_timestamp_seconds", "s"): 1500,
        ("thresher_schedule_last_success_timestamp_seconds", "s"): 1500,
        ("thresher_schedule_last_failure_timestamp_seconds", "s"): 1200,
        ("thresher_schedule_consecutive_failures", "s"): 0,
        ("thresher_schedule_consecutive_failures_threshold", "s"): 3,
        ("thresher_schedule_stale", "s"): 0,
        ("thresher_schedule_stale_after_seconds", "s"): 93600,
        ("thresher_schedule_min_quality_ratio", "sj"): 0.9,
        ("thresher_schedule_min_items", "sj"): 100,
        ("thresher_schedule_active_runs", "s"): 1,
        ("thresher_schedule_oldest_active_run_start_timestamp_seconds", "s"): 1900,
        ("thresher_schedule_expected_duration_seconds", "s"): 3600,
    }
    for (name, kind), want in expected.items():
        assert value(m, name, **(s if kind == "s" else sj)) == want, name
    unset = dict.fromkeys(INFO_LABELS, "")
    assert value(m, "thresher_schedule_info", **sj, cron="0 3 * * *", time_zone="Europe/Berlin", **unset) == 1
    for outcome in OUTCOMES:
        assert value(m, "thresher_schedule_runs_total", **sj, outcome=outcome) == 0


@pytest.mark.parametrize(
    ("field", "metric"),
    [
        ("next_run", "thresher_schedule_next_run_timestamp_seconds"),
        ("last_run", "thresher_schedule_last_run_timestamp_seconds"),
        ("last_success", "thresher_schedule_last_success_timestamp_seconds"),
        ("last_failure", "thresher_schedule_last_failure_timestamp_seconds"),
        ("stale_after_seconds", "thresher_schedule_stale_after_seconds"),
        ("min_quality", "thresher_schedule_min_quality_ratio"),
        ("min_items", "thresher_schedule_min_items"),
        ("oldest_active_start", "thresher_schedule_oldest_active_run_start_timestamp_seconds"),
        ("expected_duration_seconds", "thresher_schedule_expected_duration_seconds"),
    ],
)
def test_unknown_values_remove_the_series_instead_of_writing_zero(field, metric):
    """'Never succeeded' written as 0 would read as 1970 and make time()-x alerts fire at once."""
    m = OperatorMetrics()
    m.set_schedule_state(ScheduleState(**full_state()))
    assert metric in names_with(m, namespace=NS, schedule=NAME)
    m.set_schedule_state(ScheduleState(**full_state(**{field: None})))
    assert metric not in names_with(m, namespace=NS, schedule=NAME)


def test_oldest_active_start_is_dropped_when_nothing_runs():
    m = OperatorMetrics()
    m.set_schedule_state(ScheduleState(**full_state(active_runs=0, oldest_active_start=1900.0)))
    assert value(m, "thresher_schedule_active_runs", namespace=NS, schedule=NAME) == 0
    assert "thresher_schedule_oldest_active_run_start_timestamp_seconds" not in names_with(m, schedule=NAME)


def test_changed_cron_replaces_the_info_series():
    m = OperatorMetrics()
    m.set_schedule_state(ScheduleState(**full_state()))
    m.set_schedule_state(ScheduleState(**full_state(cron="@hourly", time_zone="UTC")))
    infos = [lbl for (n, lbl) in samples(m) if n == "thresher_schedule_info"]
    assert len(infos) == 1 and dict(infos[0])["cron"] == "@hourly"


def test_changed_job_type_drops_the_old_kinds_thresholds():
    """A schedule switched from tmdb to container must not keep alerting on tmdb's min_items."""
    m = OperatorMetrics()
    run(m)
    m.set_schedule_state(ScheduleState(**full_state()))
    m.set_schedule_state(ScheduleState(**full_state(job_type="container")))
    for name in ("thresher_schedule_min_items", "thresher_schedule_min_quality_ratio",
                 "thresher_schedule_last_run_items", "thresher_schedule_last_run_quality_ratio"):
        assert name not in names_with(m, schedule=NAME, job_type="tmdb"), name
    assert value(m, "thresher_schedule_min_items", namespace=NS, schedule=NAME, job_type="container") == 100


def test_forget_schedule_removes_every_series_and_keeps_the_others():
    m = OperatorMetrics()
    for name in (NAME, "drone-fields"):
        run(m, schedule=name)
        m.set_schedule_state(ScheduleState(**full_state(schedule=name)))
    m.forget_schedule(namespace=NS, schedule=NAME)
    assert names_with(m, schedule=NAME) == set()
    assert "thresher_schedule_runs_total" in names_with(m, schedule="drone-fields")
    assert "thresher_schedule_info" in names_with(m, schedule="drone-fields")
    # Forgetting twice, or an unknown schedule, is harmless (deletion handlers retry).
    m.forget_schedule(namespace=NS, schedule=NAME)
    m.forget_schedule(namespace="other", schedule="never-seen")
    # And the schedule can come back under the same name.
    run(m)
    assert value(m, "thresher_schedule_runs_total", namespace=NS, schedule=NAME, job_type="tmdb",
                 outcome="succeeded") == 1


def test_labels_are_bounded():
    """Only the documented label names exist; nothing per run (job name, message) leaks into labels."""
    m = OperatorMetrics()
    for i in range(20):
        run(m, finished_at=1000.0 + i, outcome=OUTCOMES[i % 3])
    m.set_schedule_state(ScheduleState(**full_state()))
    m.observe_reconcile(handler="schedule_update", ok=False, seconds=0.2)
    allowed = {"namespace", "schedule", "job_type", "outcome", "cron", "time_zone", "le", "handler", "result",
               "version", "reason", *INFO_LABELS}
    all_samples = samples(m)
    used = {k for (_, lbls) in all_samples for (k, _) in lbls}
    assert used <= allowed
    # 20 runs of one schedule: series count does not grow with runs.
    before = len(all_samples)
    run(m, finished_at=5000.0)
    assert len(samples(m)) == before


def test_observe_reconcile():
    m = OperatorMetrics()
    m.observe_reconcile(handler="create", ok=True, seconds=0.03)
    m.observe_reconcile(handler="create", ok=False, seconds=0.5)
    assert value(m, "thresher_operator_reconcile_total", handler="create", result="ok") == 1
    assert value(m, "thresher_operator_reconcile_total", handler="create", result="error") == 1
    assert value(m, "thresher_operator_reconcile_duration_seconds_count", handler="create") == 2
    assert value(m, "thresher_operator_last_reconcile_timestamp_seconds") > 1.7e9


def test_operator_info_carries_the_version():
    m = OperatorMetrics(version="1.2.3")
    assert value(m, "thresher_operator_info", version="1.2.3") == 1


def test_serve_exposes_the_registry_over_http():
    m = OperatorMetrics()
    run(m)
    m.serve(0, "127.0.0.1")
    try:
        port = m.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'thresher_schedule_runs_total{job_type="tmdb",namespace="data",outcome="succeeded",' in body
    finally:
        m.shutdown()


def test_alerting_labels_reach_the_info_series_and_a_change_replaces_it():
    """Issue 17: spec.alerting.labels must reach thresher_schedule_info (the rules join on it), and
    a changed team must not leave the old series behind (alerts would route to both teams)."""
    m = OperatorMetrics()
    first = AlertingLabels({"team": "data-platform", "consecutiveFailuresSeverity": "critical"}).info_labels()
    m.set_schedule_state(ScheduleState(**{**full_state(), "info_labels": tuple(first.values())}))
    info = dict(namespace=NS, schedule=NAME, job_type="tmdb", cron="0 3 * * *", time_zone="Europe/Berlin")
    assert value(m, "thresher_schedule_info", **info, **first) == 1
    second = AlertingLabels({"team": "growth"}).info_labels()
    m.set_schedule_state(ScheduleState(**{**full_state(), "info_labels": tuple(second.values())}))
    assert value(m, "thresher_schedule_info", **info, **second) == 1
    assert value(m, "thresher_schedule_info", **info, **first) is None
