"""Jobs of runs the operator creates itself, with their logical time (issue 17)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from thresher.api.backfill import plan_backfill
from thresher.api.runnames import LOGICAL_TIME_ENV, backfill_job_name
from thresher.operator.runjobs import run_job
from thresher.operator.runs import run_record

from .test_builders import build, example

LOGICAL = datetime(2026, 5, 10, 8, 0, tzinfo=UTC)


def _cronjob() -> dict:
    cj = build(example("tmdb-hourly.yaml"))
    cj["metadata"]["uid"] = "cj-uid"
    return cj


def test_a_backfill_job_carries_its_logical_time_three_ways():
    cj = _cronjob()
    before = copy.deepcopy(cj)
    name = backfill_job_name(cj["metadata"]["name"], LOGICAL)
    job = run_job(cj, name, {}, logical_time=LOGICAL)
    assert cj == before  # the CronJob's template is copied, never changed
    assert job["metadata"]["name"] == name
    annotations = job["metadata"]["annotations"]
    assert annotations["thresher.dev/logical-time"] == "2026-05-10T08:00:00Z"
    assert annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] == "2026-05-10T08:00:00Z"
    assert "thresher.dev/manual-run" not in annotations
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["env"][-1] == {"name": LOGICAL_TIME_ENV, "value": "2026-05-10T08:00:00Z"}
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob",
                                                   "name": cj["metadata"]["name"], "uid": "cj-uid",
                                                   "controller": True, "blockOwnerDeletion": True}]
    # Everything else is the template's: same pod security, same limits.
    container.pop("env")
    template = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container == {k: v for k, v in template.items() if k != "env"}


def test_a_logical_time_already_in_the_template_is_replaced_not_doubled():
    cj = _cronjob()
    cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": LOGICAL_TIME_ENV, "value": "stale"})
    env = run_job(cj, "x", {}, logical_time=LOGICAL)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == LOGICAL_TIME_ENV] == ["2026-05-10T08:00:00Z"]


def test_run_recording_reads_the_logical_time_as_the_scheduled_time():
    """No change to run recording is needed: a backfilled run is recorded for its logical time."""
    cj = _cronjob()
    (run,) = plan_backfill(cj["metadata"]["name"], "0 * * * *", None, None, LOGICAL,
                           datetime(2026, 5, 10, 9, 0, tzinfo=UTC), datetime(2026, 5, 11, tzinfo=UTC), []).runs
    job = run_job(cj, run.job_name, {}, logical_time=run.logical_time)
    job["metadata"]["creationTimestamp"] = "2026-05-11T12:00:00Z"
    job["status"] = {"startTime": "2026-05-11T12:00:01Z", "completionTime": "2026-05-11T12:00:09Z",
                     "conditions": [{"type": "Complete", "status": "True"}]}
    record = run_record(job, []).model_dump(by_alias=True, mode="json")
    assert record["scheduledTime"] == "2026-05-10T08:00:00Z" and record["jobName"] == run.job_name
    assert record["outcome"] == "Succeeded" and record["manual"] is False
