"""CollectionSchedule models: defaults, validation messages, examples, status helpers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from thresher.api import cron
from thresher.api.runresult import RunResult
from thresher.api.schedule import (
    CollectionSchedule,
    CollectionScheduleSpec,
    CollectionScheduleStatus,
    ConditionType,
    RunRecord,
    RunStats,
    RunSummary,
    SpecInvalid,
    parse_schedule,
)

# The schedules; kustomization.yaml applies them with their prerequisites/.
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[3] / "manifests" / "examples").glob("*.yaml")
                  if p.name != "kustomization.yaml")

MINIMAL = {
    "apiVersion": "thresher.dev/v1alpha1",
    "kind": "CollectionSchedule",
    "metadata": {"name": "s", "namespace": "ns"},
    "spec": {"schedule": "@daily", "job": {"container": {"image": "busybox"}}},
}


def obj(**spec_changes) -> dict:
    body = copy.deepcopy(MINIMAL)
    body["spec"].update(spec_changes)
    return body


def problems(body: dict) -> str:
    result = parse_schedule(body)
    assert isinstance(result, SpecInvalid), f"expected a problem, got {result!r}"
    return result.message


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"tmdb-daily.yaml", "tmdb-weekly.yaml", "tmdb-hourly.yaml",
                                         "drone-gpu.yaml", "container-every-minute.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path):
    result = parse_schedule(yaml.safe_load(path.read_text()))
    assert isinstance(result, CollectionSchedule), getattr(result, "message", "")
    assert len(result.metadata.name) <= 52


def test_defaults():
    spec = parse_schedule(MINIMAL).spec
    assert (spec.suspend, spec.concurrency_policy, spec.retries) == (False, "Forbid", 0)
    assert (spec.successful_jobs_history_limit, spec.failed_jobs_history_limit) == (3, 3)
    assert (spec.resources.cpu, spec.resources.memory, spec.resources.gpus) == ("100m", "256Mi", 0)
    assert spec.alerting.consecutive_failure_threshold == 3
    assert spec.storage is None and spec.time_zone is None and spec.job.kind == "container"
    assert spec.stale_grace() == timedelta(hours=1)


def test_stale_grace_covers_long_runs_and_explicit_values():
    assert parse_schedule(obj(timeoutSeconds=7200)).spec.stale_grace() == timedelta(hours=2)
    assert parse_schedule(obj(timeoutSeconds=7200, alerting={"staleAfterSeconds": 60})).spec.stale_grace() == \
        timedelta(minutes=1)


def test_camel_case_round_trip():
    spec = parse_schedule(yaml.safe_load((EXAMPLES[0].parent / "drone-gpu.yaml").read_text())).spec
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert "nodeSelector" in dumped and "node_selector" not in dumped
    assert CollectionScheduleSpec.model_validate(dumped) == spec


def test_effective_schedule_resolves_h_per_namespace_and_name():
    spec = parse_schedule(obj(schedule="H 8-22 * * *")).spec
    a, b = spec.effective_schedule("ns", "a"), spec.effective_schedule("other", "a")
    assert a == cron.resolve_hashed("H 8-22 * * *", "ns/a") and a.endswith(" 8-22 * * *")
    assert cron.validate_schedule(a) is None and cron.validate_schedule(b) is None
    assert parse_schedule(obj(schedule="@daily")).spec.effective_schedule("ns", "a") == "@daily"


@pytest.mark.parametrize(("change", "fragment"), [
    ({"schedule": "0 0 30 2 *"}, "never fires"),
    ({"schedule": "CRON_TZ=UTC 0 0 * * *"}, "set spec.timeZone instead"),
    ({"schedule": "61 * * * *"}, "outside 0-59"),
    ({"timeZone": "Mars/Olympus"}, "unknown time zone"),
    ({"timeZone": "Local"}, "not Local"),
    ({"concurrencyPolicy": "Sometimes"}, "concurrencyPolicy"),
    ({"startingDeadlineSeconds": 5}, "greater than or equal to 10"),
    ({"retries": 11}, "less than or equal to 10"),
    ({"timeoutSeconds": 0}, "timeoutSeconds"),
    ({"stopAfterConsecutiveFailures": 0}, "stopAfterConsecutiveFailures"),
    ({"successfulJobsHistoryLimit": 101}, "successfulJobsHistoryLimit"),
    ({"resources": {"cpu": "lots"}}, "resources.cpu"),
    ({"resources": {"memory": "-1Gi"}}, "resources.memory"),
    ({"resources": {"gpus": 17}}, "resources.gpus"),
    ({"storage": {"mountPath": "/x"}}, "storage.claimName"),
    ({"storage": {"claimName": "data", "mountPath": "relative"}}, "storage.mountPath"),
    ({"alerting": {"minQualityRate": 1.5}}, "alerting.minQualityRate"),
    ({"alerting": {"consecutiveFailureThreshold": 0}}, "consecutiveFailureThreshold"),
    ({"tolerations": [{"operator": "Maybe"}]}, "tolerations.0.operator"),
    ({"privileged": True}, "privileged"),
    ({"job": {}}, "exactly one of tmdb, drone or container"),
    ({"job": {"container": {"image": "a"}, "drone": {}}}, "exactly one of tmdb, drone or container"),
    ({"job": {"container": {"image": "a", "hostNetwork": True}}}, "hostNetwork"),
    ({"job": {"container": {"image": "a", "env": [{"name": "A"}]}}}, "exactly one of value or valueFrom"),
    ({"job": {"container": {"image": "a", "env": [
        {"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}},
     "exactly one of value or valueFrom"),
    ({"job": {"container": {"image": "a", "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}},
     "env names must be unique"),
    ({"storage": {"claimName": "d", "subPath": "a/../b"}}, "must not contain '..'"),
    ({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 1}]}, "needs effect NoExecute"),
    ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, "must not set value"),
    ({"tolerations": [{"value": "v"}]}, "without key must use operator Exists"),
    ({"job": {"drone": {"backend": "cuda"}}}, "needs resources.gpus >= 1"),
    ({"job": {"tmdb": {"collection": "custom", "apiKeySecretRef": {"name": "k"}}}}, "sources"),
    ({"job": {"tmdb": {"collection": "daily"}}}, "apiKeySecretRef"),
    ({"schedule": "@every 30s"}, "shorter than the minimum of 1 minute"),
    ({"schedule": "@every 90s"}, "not a whole number of minutes"),
    ({"schedule": "@every 9000h"}, "longer than the maximum of 366 days"),
    ({"schedule": "@every 90"}, "is not a duration"),
    ({"schedule": "0 * * * *", "intervalAnchor": "2026-03-01T06:00:00Z"}, "intervalAnchor needs an @every schedule"),
    ({"schedule": "@every 7m", "intervalAnchor": "2026-03-29T02:30:00", "timeZone": "Europe/Berlin"},
     "does not exist in Europe/Berlin"),
    ({"alerting": {"labels": {"Team": "a"}}}, "'Team' is not supported"),
    ({"schedule": None}, "set schedule (cron or @every), runAt (one run at that time), or both"),
    ({"runAt": "2026-05-01T06:00:30Z"}, "runAt must be on a whole minute"),
    ({"runAt": "2026-05-01T06:00:00"}, "timestamps must carry a time zone"),
    ({"alerting": {"labels": {"__name__": "a"}}}, "not a valid Prometheus label name"),
    ({"alerting": {"labels": {"consecutiveFailuresSeverity": "page"}}}, "use warning or critical"),
])
def test_invalid_specs_say_what_is_wrong(change, fragment):
    assert fragment in problems(obj(**change))


def test_messages_carry_camel_case_paths_from_the_root():
    message = problems(obj(startingDeadlineSeconds=1))
    assert message.startswith("spec.startingDeadlineSeconds:"), message


def test_pattern_mismatches_are_explained_in_words():
    assert "spec.resources.cpu: 'lots' must be a Kubernetes quantity" in problems(obj(resources={"cpu": "lots"}))
    assert "must be a lowercase DNS name" in problems(obj(serviceAccountName="Bad_Name"))


def test_long_names_are_refused():
    """A 53-character name makes a CronJob Kubernetes refuses; catch it before."""
    body = copy.deepcopy(MINIMAL)
    body["metadata"]["name"] = "x" * 53
    assert "at most 52 characters" in problems(body)
    body["metadata"]["name"] = "x" * 52
    assert isinstance(parse_schedule(body), CollectionSchedule)


def test_cuda_with_a_gpu_is_fine():
    result = parse_schedule(obj(job={"drone": {"backend": "cuda"}}, resources={"gpus": 1}))
    assert isinstance(result, CollectionSchedule)


def test_parse_schedule_never_raises_on_garbage():
    for body in ({}, {"spec": None}, {"spec": []}, [], "x", {"spec": {"schedule": 5, "job": 3}}):
        assert isinstance(parse_schedule(body), SpecInvalid)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=10))
def test_parse_schedule_never_raises_on_random_specs(spec):
    result = parse_schedule({"spec": spec})
    assert isinstance(result, SpecInvalid) and result.messages


# --- status -------------------------------------------------------------------------------------

NOW = datetime(2025, 5, 1, 12, tzinfo=UTC)


def run(outcome: str, duration: float | None = 10.0, **extra) -> RunRecord:
    return RunRecord(job_name=f"s-{outcome.lower()}", outcome=outcome, duration_seconds=duration,
                     completion_time=NOW, **extra)


def test_stats_over_recent_runs():
    stats = RunStats.from_runs([run("Succeeded", 10), run("Failed", 30), run("TimedOut", None),
                                run("Succeeded", 20)])
    assert (stats.runs, stats.succeeded, stats.failed) == (4, 2, 2)
    assert stats.success_rate == 0.5 and stats.mean_duration_seconds == 20.0
    empty = RunStats.from_runs([])
    assert empty.runs == 0 and empty.success_rate is None and empty.mean_duration_seconds is None


def test_status_serialises_like_kubernetes():
    status = CollectionScheduleStatus(
        observed_generation=2, consecutive_failures=1, last_result="Failed",
        last_successful_time=datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        conditions=[{"type": ConditionType.READY, "status": "True", "reason": "CronJobReady",
                     "lastTransitionTime": "2025-05-01T12:00:00+02:00"}],
        recent_runs=[run("Failed", result=RunSummary(items=3), reason="BackoffLimitExceeded")],
    )
    data = status.model_dump(mode="json", exclude_none=True)
    assert data["lastSuccessfulTime"] == "2025-05-01T12:00:00Z"  # metav1.Time: seconds, UTC
    assert data["conditions"][0]["lastTransitionTime"] == "2025-05-01T10:00:00Z"
    assert data["recentRuns"][0]["result"] == {"items": 3, "warnings": []}
    assert CollectionScheduleStatus.model_validate(data) == status


def test_status_refuses_naive_times_and_too_many_runs():
    with pytest.raises(ValidationError, match="time zone"):
        CollectionScheduleStatus(last_schedule_time=datetime(2025, 1, 1))
    with pytest.raises(ValidationError, match="at most 20"):
        CollectionScheduleStatus(recent_runs=[run("Succeeded")] * 21)


def test_run_summary_trims_to_the_status_bounds():
    result = RunResult(job_type="tmdb", succeeded=False, items=5, warnings=[f"w{i}" * 300 for i in range(30)],
                       error="e" * 5000, output="/data/out")
    summary = RunSummary.from_result(result)
    assert len(summary.warnings) == 10 and all(len(w) <= 512 for w in summary.warnings)
    assert len(summary.error) == 2048 and summary.items == 5 and summary.output == "/data/out"
    RunSummary.model_validate(summary.model_dump())  # still within its own constraints


def test_an_interval_schedule_parses_with_its_anchor_and_keeps_its_text():
    """Issue 17: `@every` was refused; it is a schedule now, normalised for status.effectiveSchedule."""
    spec = parse_schedule(obj(schedule="  @every  1h30m ", intervalAnchor="2026-03-01T06:15:00",
                              timeZone="Europe/Berlin")).spec
    assert spec.effective_schedule("ns", "s") == "@every 1h30m"
    times = spec.times("ns", "s")
    assert times.every.every == timedelta(minutes=90)
    assert times.every.anchor == datetime(2026, 3, 1, 5, 15, tzinfo=UTC)  # 06:15 in Berlin (CET)
    assert times.fired_by_operator
    assert not parse_schedule(obj(schedule="@every 15m")).spec.times("ns", "s").fired_by_operator


def test_alerting_labels_are_part_of_the_spec():
    spec = parse_schedule(obj(alerting={"labels": {"team": "data-platform", "staleSeverity": "warning"}})).spec
    assert spec.alerting.labels.info_labels()["team"] == "data-platform"
    assert parse_schedule(obj()).spec.alerting.labels.root == {}


def test_a_one_off_schedule_needs_no_cron():
    """Issue 17: runAt alone is a schedule of one run (no recurring times, no effective schedule)."""
    spec = parse_schedule(obj(schedule=None, runAt="2026-05-01T08:00:00+02:00")).spec
    assert spec.run_at == datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
    assert spec.times("ns", "s") is None and spec.effective_schedule("ns", "s") is None
