"""CollectionSchedule -> CronJob, with no cluster: what each run's pod gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from thresher.api.schedule import parse_schedule
from thresher.operator import builders

EXAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "examples"
IMAGES = builders.JobImages(cpu="jobs:1", gpu="jobs-gpu:1")


def example(name: str, namespace: str = "data") -> dict:
    body = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"].update(namespace=namespace, uid="uid-1")
    return body


def build(body: dict) -> dict:
    parsed = parse_schedule(body)
    assert not hasattr(parsed, "messages"), parsed
    return builders.build_cronjob(body, parsed, IMAGES)


def container_of(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def test_tmdb_schedule_maps_every_field():
    body = example("tmdb-daily.yaml")
    cj = build(body)
    spec, job = cj["spec"], cj["spec"]["jobTemplate"]["spec"]
    assert cj["metadata"]["ownerReferences"][0] == {
        "apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule", "name": "tmdb-daily",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
    assert cj["metadata"]["labels"][builders.MANAGED_BY] == "thresher"
    assert spec["schedule"] == "15 3 * * *" and spec["timeZone"] == "Europe/Berlin"
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600
    c = container_of(cj)
    assert c["image"] == "jobs:1"
    assert c["command"] == ["thresher", "job", "tmdb", "collect"]
    rendered = json.loads(c["args"][c["args"].index("--spec") + 1])
    assert rendered["collection"] == "daily" and rendered["timeZone"] == "Europe/Berlin"
    assert c["args"][c["args"].index("--min-quality-rate") + 1] == "0.9"
    key_env = next(e for e in c["env"] if e["name"] == "TMDB_API_KEY")
    assert key_env == {"name": "TMDB_API_KEY",
                       "valueFrom": {"secretKeyRef": {"name": "tmdb-api", "key": "api-key"}}}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "data")
    assert mount == {"name": "data", "mountPath": "/data", "readOnly": False, "subPath": "tmdb/daily"}


def test_no_secret_value_is_ever_rendered():
    """Secrets are referenced: nothing in the CronJob is a Secret's value or an inline key."""
    text = json.dumps(build(example("tmdb-daily.yaml")))
    assert "valueFrom" in text and "api_key=" not in text


@pytest.mark.parametrize("name", ["tmdb-daily.yaml", "drone-gpu.yaml", "container-every-minute.yaml"])
def test_every_pod_meets_the_restricted_profile(name):
    pod = build(example(name))["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
    for volume in pod["volumes"]:
        assert set(volume) <= {"name", "emptyDir", "persistentVolumeClaim"}


def test_gpu_drone_schedule_requests_tolerates_and_selects_gpu_nodes():
    cj = build(example("drone-gpu.yaml"))
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "jobs-gpu:1"
    assert int(c["resources"]["limits"][builders.GPU_RESOURCE]) >= 1
    assert {"key": builders.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"][builders.GPU_NODE_LABEL] == "true"


def test_config_errors_fail_the_job_without_retries():
    job = build(example("tmdb-daily.yaml"))["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "job", "operator": "In",
                                                  "values": [2]}} in rules


def test_hashed_schedule_is_resolved_stably_per_schedule():
    body = example("tmdb-hourly.yaml")
    first = build(body)["spec"]["schedule"]
    assert "H" not in first and first == build(body)["spec"]["schedule"]
    others = {build(example("tmdb-hourly.yaml", namespace=f"ns{i}"))["spec"]["schedule"] for i in range(20)}
    assert len(others) > 5  # spread, not all on one minute


def test_manual_job_copies_the_template_and_is_idempotent_per_token():
    cj = build(example("container-every-minute.yaml"))
    cj["metadata"]["uid"] = "cj-uid"
    job = builders.manual_job(cj, "2026-11-22T10:00:00Z")
    assert job["spec"] == cj["spec"]["jobTemplate"]["spec"]
    assert job["metadata"]["annotations"]["thresher.dev/manual-run"] == "true"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["name"] == builders.manual_job(cj, "2026-11-22T10:00:00Z")["metadata"]["name"]
    assert job["metadata"]["name"] != builders.manual_job(cj, "other")["metadata"]["name"]
    assert len(job["metadata"]["name"]) == len(cj["metadata"]["name"]) + 11


def test_drift_ignores_defaults_and_foreign_fields_but_not_edits():
    desired = build(example("container-every-minute.yaml"))["spec"]
    actual = json.loads(json.dumps(desired))
    actual["jobTemplate"]["spec"]["completions"] = 1  # API default
    actual["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] = {"someone": "else"}
    assert not builders.drifted(desired, actual)
    actual["schedule"] = "0 0 * * *"
    assert builders.drifted(desired, actual)


def _interval(schedule: str, **spec) -> dict:
    body = example("tmdb-daily.yaml")
    body["spec"].update(schedule=schedule, **spec)
    return build(body)


def test_an_interval_that_divides_an_hour_is_an_ordinary_cron_in_utc():
    """Issue 17: `@every 15m` is fired by the CronJob controller, as the cron it equals."""
    cronjob = _interval("@every 15m", intervalAnchor="2026-01-01T00:05:00Z", timeZone="Europe/Berlin")
    assert cronjob["spec"]["schedule"] == "5/15 * * * *"
    assert cronjob["spec"]["timeZone"] == "UTC"  # elapsed time: the anchor fixed the phase
    assert cronjob["spec"]["suspend"] is False


def test_an_interval_no_cron_repeats_keeps_the_cronjob_as_a_suspended_template():
    """Issue 17: `@every 90m` cannot be a cron: the CronJob must never fire it (the operator does),
    whatever spec.suspend says, and must still carry the run template."""
    cronjob = _interval("@every 90m")
    assert cronjob["spec"]["suspend"] is True
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]


def test_a_one_off_schedule_keeps_the_cronjob_as_a_suspended_template():
    body = example("tmdb-daily.yaml")
    body["spec"].pop("schedule")
    body["spec"]["runAt"] = "2026-05-01T06:00:00Z"
    cronjob = build(body)
    assert cronjob["spec"]["suspend"] is True and cronjob["spec"]["schedule"]
