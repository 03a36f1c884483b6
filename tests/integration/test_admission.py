"""Admission of CollectionSchedules by the REAL API server with the generated CRD.

Each invalid manifest must be refused with a message a user understands; every example
must be accepted, defaulted and explainable; the status schema must keep everything the
operator writes (nothing pruned). What admission cannot check (a schedule that never
fires, an unknown time zone) is accepted here and reported by the operator as Ready=False.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from thresher.api.retry import AttemptRecord, RunAttempts
from thresher.api.schedule import (
    CollectionScheduleStatus,
    Condition,
    RunRecord,
    RunStats,
    RunSummary,
    SpecInvalid,
    parse_schedule,
)

pytestmark = pytest.mark.integration

# The schedules; kustomization.yaml applies them with their prerequisites/.
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml")
                  if p.name != "kustomization.yaml")

BASE = {
    "apiVersion": "thresher.dev/v1alpha1",
    "kind": "CollectionSchedule",
    "metadata": {"name": "probe"},
    "spec": {"schedule": "@daily", "job": {"container": {"image": "busybox:1.36"}}},
}
TMDB = {"apiKeySecretRef": {"name": "tmdb-api"}}


def manifest(spec: dict | None = None, drop: tuple[str, ...] = (), name: str = "probe") -> dict:
    body = copy.deepcopy(BASE)
    body["metadata"]["name"] = name
    body["spec"].update(spec or {})
    for key in drop:
        body["spec"].pop(key)
    return body


def env(*entries: dict) -> dict:
    return {"job": {"container": {"image": "busybox", "env": list(entries)}}}


SECRET = {"secretKeyRef": {"name": "s", "key": "k"}}

# (id, manifest, text the rejection must contain)
INVALID = [
    ("no-schedule", manifest(drop=("schedule",)),
     "set schedule (cron or @every), runAt (one run at that time), or both"),
    ("run-at-no-offset", manifest({"runAt": "2026-05-01T06:00:00"}), "spec.runAt in body must be of type date-time"),
    ("no-job", manifest(drop=("job",)), "spec.job: Required value"),
    ("empty-job", manifest({"job": {}}), "job must set exactly one of tmdb, drone or container"),
    ("two-jobs", manifest({"job": {"container": {"image": "a"}, "tmdb": TMDB}}),
     "job must set exactly one of tmdb, drone or container"),
    ("cron-tz", manifest({"schedule": "CRON_TZ=Europe/Berlin 0 3 * * *"}), "set spec.timeZone instead"),
    ("tz-prefix", manifest({"schedule": "TZ=UTC 0 3 * * *"}), "set spec.timeZone instead"),
    ("six-fields", manifest({"schedule": "0 0 3 * * *"}), "schedule must be 5 cron fields"),
    ("minute-60", manifest({"schedule": "60 * * * *"}), "with values in range"),
    ("dow-7", manifest({"schedule": "0 0 * * 7"}), "schedule must be 5 cron fields"),
    ("every-no-duration", manifest({"schedule": "@every 5"}), "or an interval such as '@every 90m'"),
    ("every-30s", manifest({"schedule": "@every 30s"}),
     "an @every interval must be whole minutes, at least 1 minute (@every 1m) and at most 366 days"),
    ("every-90s", manifest({"schedule": "@every 1m30s"}), "an @every interval must be whole minutes"),
    ("every-too-long", manifest({"schedule": "@every 9000h"}), "at most 366 days (@every 8784h)"),
    ("anchor-with-cron", manifest({"intervalAnchor": "2026-03-01T06:00:00Z"}),
     "intervalAnchor needs an @every schedule"),
    ("anchor-not-a-time", manifest({"schedule": "@every 90m", "intervalAnchor": "tomorrow"}),
     "spec.intervalAnchor in body should match"),
    ("label-capital", manifest({"alerting": {"labels": {"Team": "a"}}}),
     'unknown field "spec.alerting.labels.Team"'),
    ("label-value", manifest({"alerting": {"labels": {"team": "data platform"}}}),
     "spec.alerting.labels.team in body should match"),
    ("label-severity", manifest({"alerting": {"labels": {"consecutiveFailuresSeverity": "page"}}}),
     'spec.alerting.labels.consecutiveFailuresSeverity: Unsupported value: "page"'),
    ("hash-in-dom", manifest({"schedule": "0 0 H * *"}), "H is allowed only in minute and hour"),
    ("tz-local", manifest({"timeZone": "Local"}), "timeZone must be an IANA name such as Europe/Berlin, not Local"),
    ("tz-spaces", manifest({"timeZone": "Europe Berlin"}), "spec.timeZone in body should match"),
    ("concurrency", manifest({"concurrencyPolicy": "Sometimes"}), 'spec.concurrencyPolicy: Unsupported value: "Sometimes"'),
    ("deadline-5", manifest({"startingDeadlineSeconds": 5}), "spec.startingDeadlineSeconds in body should be greater than or equal to 10"),
    ("retries-11", manifest({"retries": 11}), "spec.retries in body should be less than or equal to 10"),
    ("timeout-0", manifest({"timeoutSeconds": 0}), "spec.timeoutSeconds in body should be greater than or equal to 1"),
    ("stop-after-0", manifest({"stopAfterConsecutiveFailures": 0}),
     "spec.stopAfterConsecutiveFailures in body should be greater than or equal to 1"),
    ("history-101", manifest({"failedJobsHistoryLimit": 101}), "spec.failedJobsHistoryLimit in body should be less than or equal to 100"),
    ("cpu-words", manifest({"resources": {"cpu": "lots"}}), "spec.resources.cpu in body should match"),
    ("memory-negative", manifest({"resources": {"memoryLimit": "-1Gi"}}), "spec.resources.memoryLimit in body should match"),
    ("gpus-17", manifest({"resources": {"gpus": 17}}), "spec.resources.gpus in body should be less than or equal to 16"),
    ("cuda-no-gpu", manifest({"job": {"drone": {"backend": "cuda"}}}), "job.drone.backend cuda needs resources.gpus >= 1"),
    ("env-both", manifest(env({"name": "A", "value": "1", "valueFrom": SECRET})), "env entries need exactly one of value or valueFrom"),
    ("env-neither", manifest(env({"name": "A"})), "env entries need exactly one of value or valueFrom"),
    ("env-duplicate", manifest(env({"name": "A", "value": "1"}, {"name": "A", "value": "2"})), "Duplicate value"),
    ("env-secret-no-key", manifest(env({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}})),
     "spec.job.container.env[0].valueFrom.secretKeyRef.key: Required value"),
    ("no-image", manifest({"job": {"container": {"command": ["true"]}}}), "spec.job.container.image: Required value"),
    ("storage-no-claim", manifest({"storage": {"mountPath": "/data"}}), "spec.storage.claimName: Required value"),
    ("mount-relative", manifest({"storage": {"claimName": "d", "mountPath": "data"}}), "spec.storage.mountPath in body should match"),
    ("subpath-dotdot", manifest({"storage": {"claimName": "d", "subPath": "a/../../etc"}}), "storage.subPath must not contain '..'"),
    ("toleration-seconds", manifest({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}),
     "tolerationSeconds needs effect NoExecute"),
    ("toleration-exists-value", manifest({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
     "a toleration with operator Exists must not set value"),
    ("toleration-no-key", manifest({"tolerations": [{"operator": "Equal", "value": "v"}]}),
     "a toleration without key must use operator Exists"),
    ("toleration-effect", manifest({"tolerations": [{"key": "k", "effect": "Sometimes"}]}),
     'Unsupported value: "Sometimes"'),
    ("name-53", manifest(name="n" * 53), "metadata.name must be at most 52 characters"),
    ("privileged", manifest({"privileged": True}), 'unknown field "spec.privileged"'),
    ("host-network", manifest({"job": {"container": {"image": "a", "hostNetwork": True}}}),
     'unknown field "spec.job.container.hostNetwork"'),
    ("host-path", manifest({"storage": {"claimName": "d", "hostPath": "/"}}), 'unknown field "spec.storage.hostPath"'),
    ("tmdb-no-key", manifest({"job": {"tmdb": {"collection": "daily"}}}), "spec.job.tmdb.apiKeySecretRef: Required value"),
    ("tmdb-custom-no-sources", manifest({"job": {"tmdb": {**TMDB, "collection": "custom"}}}),
     "tmdb collection custom needs sources"),
    ("tmdb-page-cap", manifest({"job": {"tmdb": {**TMDB, "collection": "custom",
                                                  "sources": [{"endpoint": "popular", "pages": 501}]}}}),
     "spec.job.tmdb.sources[0].pages in body should be less than or equal to 500"),
    ("drone-thresholds", manifest({"job": {"drone": {"thresholds": {"ndvi": {"vegetation": 0.5, "stressed": 0.1}}}}}),
     "drone thresholds: stressed must be >= vegetation"),
    ("drone-primary", manifest({"job": {"drone": {"indices": ["VARI"], "primaryIndex": "NDVI"}}}),
     "drone primaryIndex must be one of indices"),
    ("drone-input-dotdot", manifest({"job": {"drone": {"inputPath": "../other-tenant"}}}),
     "drone inputPath must not contain '..'"),
    ("drone-output-dotdot", manifest({"job": {"drone": {"outputPath": "out/../../etc"}}}),
     "drone outputPath must not contain '..'"),
    ("drone-state-dotdot", manifest({"job": {"drone": {"statePath": "state/.."}}}),
     "drone statePath must not contain '..'"),
    ("drone-backup-dotdot", manifest({"job": {"drone": {"backupPath": ".."}}}),
     "drone backupPath must not contain '..'"),
    ("drone-fanout-no-storage", manifest({"job": {"drone": {"parallelism": 2}}}),
     "job.drone.parallelism above 1 needs writable storage"),
    ("drone-fanout-read-only", manifest({"job": {"drone": {"parallelism": 2}},
                                         "storage": {"claimName": "d", "readOnly": True}}),
     "job.drone.parallelism above 1 needs writable storage"),
    ("drone-fanout-report", manifest({"job": {"drone": {"parallelism": 2, "task": "report"}},
                                      "storage": {"claimName": "d"}}),
     "drone parallelism above 1 is for task process only"),
    ("quality-1.5", manifest({"alerting": {"minQualityRate": 1.5}}),
     "spec.alerting.minQualityRate in body should be less than or equal to 1"),
    ("failure-threshold-0", manifest({"alerting": {"consecutiveFailureThreshold": 0}}),
     "spec.alerting.consecutiveFailureThreshold in body should be greater than or equal to 1"),
    ("priority-class", manifest({"priorityClassName": "Not_A_Name"}), "spec.priorityClassName in body should match"),
    ("retry-delay-beyond-timeout", manifest({"retryPolicy": {"delaySeconds": 600, "timeoutSeconds": 300}}),
     "retryPolicy.delaySeconds is beyond retryPolicy.timeoutSeconds: no retry could ever start"),
    ("retry-cap-below-delay", manifest({"retryPolicy": {"delaySeconds": 600, "maxDelaySeconds": 60}}),
     "retryPolicy.maxDelaySeconds must be at least delaySeconds"),
    ("retry-attempts-11", manifest({"retryPolicy": {"attempts": 11}}),
     "spec.retryPolicy.attempts in body should be less than or equal to 10"),
    ("retry-delay-day", manifest({"retryPolicy": {"delaySeconds": 86401}}),
     "spec.retryPolicy.delaySeconds in body should be less than or equal to 86400"),
    ("ttl-recurring", manifest({"ttlSecondsAfterFinished": 60}),
     "ttlSecondsAfterFinished needs a one-off schedule: runAt without schedule"),
]


def create(cluster, namespace: str, body: dict, check: bool = False):
    return cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body), check=check)


def get(cluster, namespace: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", "collectionschedule", name, "-n", namespace, "-o", "json").stdout)


def test_there_are_enough_cases():
    assert len(INVALID) >= 25 and len({case[0] for case in INVALID}) == len(INVALID)


@pytest.mark.parametrize(("body", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_manifest_is_refused_with_a_human_message(cluster, crd, namespace, body, expected):
    proc = create(cluster, namespace, body)
    assert proc.returncode != 0, f"accepted: {json.dumps(body)}"
    assert expected in proc.stderr, proc.stderr
    # The models agree with the server (the operator's second line of defence).
    assert isinstance(parse_schedule(body), SpecInvalid)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_defaulted(cluster, crd, namespace, path):
    body = yaml.safe_load(path.read_text())
    create(cluster, namespace, body, check=True)
    stored = get(cluster, namespace, body["metadata"]["name"])
    spec = stored["spec"]
    # Server-side defaults come from the models.
    assert spec["suspend"] is False and "concurrencyPolicy" in spec and spec["alerting"]["consecutiveFailureThreshold"] >= 1
    assert spec["resources"]["cpu"] and spec["resources"]["memory"] and "gpus" in spec["resources"]
    # What the server stored, the models read back identically.
    parsed = parse_schedule(stored)
    assert not isinstance(parsed, SpecInvalid), parsed.message
    assert parsed.spec == parse_schedule(body).spec


def test_admission_leaves_never_firing_schedules_to_the_operator(cluster, crd, namespace):
    """CEL cannot search the calendar: admitted, then parse_schedule explains (Ready=False)."""
    body = manifest({"schedule": "0 0 30 2 *", "timeZone": "Mars/Olympus"})
    create(cluster, namespace, body, check=True)
    problem = parse_schedule(get(cluster, namespace, "probe"))
    assert isinstance(problem, SpecInvalid)
    assert "never fires" in problem.message and "unknown time zone" in problem.message


def test_short_name_category_columns_and_explain(cluster, crd, namespace):
    create(cluster, namespace, manifest(), check=True)
    table = cluster.kubectl("get", "csched", "-n", namespace).stdout
    header = table.splitlines()[0]
    for column in ("SCHEDULE", "SUSPEND", "LAST RESULT", "LAST SUCCESS", "NEXT RUN", "FAILURES", "AGE"):
        assert column in header
    assert "probe" in cluster.kubectl("get", "thresher", "-n", namespace, "-o", "name").stdout
    explained = cluster.kubectl("explain", "collectionschedule.spec.schedule").stdout
    assert "H(a-b)" in explained and "@every 90m" in explained
    explained = cluster.kubectl("explain", "csched.status.conditions").stdout
    assert "Ready, Stale, Failing, RunBlocked and PrerequisitesMissing" in explained


def test_status_written_from_the_models_is_kept_whole(cluster, crd, namespace):
    """Pins the bug "status fields silently pruned": every field the models write survives."""
    create(cluster, namespace, manifest(), check=True)
    t = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    runs = [RunRecord(job_name="probe-29100000", scheduled_time=t, start_time=t, completion_time=t,
                      outcome="Failed", duration_seconds=12.5, reason="BackoffLimitExceeded", message="exit 2",
                      result=RunSummary(items=10, valid=9, quality=0.9, failed=1, output="/data/x",
                                        warnings=["slow"], error="boom"), result_problem=None),
            RunRecord(job_name="probe-manual", manual=True, outcome="Succeeded", result_problem="missing"),
            RunRecord(job_name="probe-29100060", outcome="Failed", exit_code=3, max_attempts=2, attempts=[
                AttemptRecord(attempt=1, job_name="probe-29100060", start_time=t, completion_time=t,
                              outcome="Failed", exit_code=3, reason="BackoffLimitExceeded"),
                AttemptRecord(attempt=2, job_name="probe-r0123abcde", start_time=t, completion_time=t,
                              outcome="Failed", exit_code=3)])]
    retrying = [RunAttempts(logical_time=t, max_attempts=3, next_attempt_time=t, manual=True, message="exit 3",
                            attempts=[AttemptRecord(attempt=1, job_name="probe-m1", outcome="NodeLost",
                                                    reason="NodeLost", completion_time=t)])]
    status = CollectionScheduleStatus(
        observed_generation=1,
        conditions=[Condition(type="Ready", status="True", reason="CronJobReady", message="ok",
                              last_transition_time=t, observed_generation=1),
                    Condition(type="Failing", status="False", reason="BelowThreshold", last_transition_time=t)],
        cron_job_ref={"name": "probe"}, effective_schedule="0 0 * * *", last_schedule_time=t,
        last_successful_time=t, last_failure_time=t, next_schedule_time=t, consecutive_failures=1,
        last_result="Failed", recent_runs=runs, stats=RunStats.from_runs(runs), retrying=retrying,
    )
    written = status.model_dump(mode="json", exclude_none=True)
    cluster.kubectl("patch", "collectionschedule", "probe", "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": written}))
    stored = get(cluster, namespace, "probe")["status"]
    assert stored == written
    assert CollectionScheduleStatus.model_validate(stored) == status
    row = cluster.kubectl("get", "csched", "probe", "-n", namespace, "--no-headers").stdout.split()
    assert "Failed" in row and "1" in row
