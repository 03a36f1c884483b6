"""A fanned-out drone run (issue 18, point 3): its Indexed Job, the storage rule, and its record."""

from __future__ import annotations

import copy
import json

import pytest

from thresher.api.names import COMPLETION_INDEX_ANNOTATION
from thresher.api.schedule import SpecInvalid, parse_schedule
from thresher.operator import builders, runs
from tests.unit.operator.test_builders import build, container_of, example


def fanned(parallelism: int = 3, **spec) -> dict:
    body = example("drone-orthomosaic.yaml")
    body["spec"]["job"]["drone"]["parallelism"] = parallelism
    body["spec"].update(spec)
    return body


def test_parallelism_makes_an_indexed_job_with_retries_per_index():
    job = build(fanned(3, retries=2))["spec"]["jobTemplate"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"], job["backoffLimitPerIndex"]) == \
        ("Indexed", 3, 3, 2)
    assert "backoffLimit" not in job  # per index instead; a bad shard does not use up the others' retries
    assert "maxFailedIndexes" not in job  # every index runs to its end
    rules = job["podFailurePolicy"]["rules"]
    assert {"action": "FailIndex", "onExitCodes": {"containerName": "job", "operator": "In", "values": [5]}} in rules
    assert {"action": "FailJob", "onExitCodes": {"containerName": "job", "operator": "In", "values": [2]}} in rules
    env = {e["name"]: e for e in container_of(build(fanned(3)))["env"]}
    assert env["THRESHER_RUN_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    spec = json.loads(container_of(build(fanned(3)))["args"][1])
    assert spec["parallelism"] == 3


def test_one_pod_runs_keep_their_job_shape():
    job = build(example("drone-fields.yaml"))["spec"]["jobTemplate"]["spec"]
    assert "completionMode" not in job and "backoffLimit" in job
    assert all(r["action"] != "FailIndex" for r in job["podFailurePolicy"]["rules"])
    assert all(e["name"] != "THRESHER_RUN_ID" for e in container_of(build(example("drone-fields.yaml")))["env"])


def test_with_gpus_every_index_asks_for_a_gpu_node():
    body = fanned(3, resources={"gpus": 1, "cpu": "1", "memory": "1Gi"})
    pod = build(body)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"][builders.GPU_NODE_LABEL] == "true"
    assert pod["containers"][0]["resources"]["limits"][builders.GPU_RESOURCE] == "1"
    assert pod["containers"][0]["image"] == "jobs-gpu:1"


def test_fan_out_needs_writable_storage_at_admission():
    body = fanned(2)
    del body["spec"]["storage"]
    parsed = parse_schedule(body)
    assert isinstance(parsed, SpecInvalid) and "parallelism above 1 needs writable storage" in str(parsed.messages)
    ro = fanned(2)
    ro["spec"]["storage"]["readOnly"] = True
    assert isinstance(parse_schedule(ro), SpecInvalid)


def pvc(*modes: str, bound: bool = True) -> dict:
    claim = {"metadata": {"name": "orthomosaics"}, "spec": {"accessModes": list(modes)}}
    if bound:
        claim["status"] = {"phase": "Bound", "accessModes": list(modes)}
    return claim


@pytest.mark.parametrize("modes,node_selector,problem", [
    (("ReadWriteMany",), {}, None),
    (("ReadWriteOnce",), {"kubernetes.io/hostname": "n1"}, None),
    (("ReadWriteOnce",), {}, "is ReadWriteOnce: job.drone.parallelism 3 needs a ReadWriteMany claim, or pin one "
                             "node with nodeSelector kubernetes.io/hostname"),
    (("ReadWriteOncePod",), {"kubernetes.io/hostname": "n1"}, "is ReadWriteOncePod: job.drone.parallelism 3 "
                                                                "needs a ReadWriteMany claim"),
])
def test_a_claim_the_indexes_cannot_share_is_named(modes, node_selector, problem):
    parsed = parse_schedule({**fanned(3), "spec": {**fanned(3)["spec"], "nodeSelector": node_selector}})
    found = builders.shared_storage_problem(parsed.spec, pvc(*modes))
    if problem is None:
        assert found is None
    else:
        assert found == f'PersistentVolumeClaim "orthomosaics" {problem}'
    one_pod = parse_schedule(fanned(1))
    assert builders.shared_storage_problem(one_pod.spec, pvc("ReadWriteOnce")) is None


# --- recording an Indexed Job ------------------------------------------------------------------------

def indexed_job(failed: str | None = None, completed: str = "0-2") -> dict:
    status = {"startTime": "2026-12-01T01:30:00Z", "completedIndexes": completed,
              "conditions": [{"type": "Failed" if failed else "Complete", "status": "True",
                              "reason": "FailedIndexes" if failed else None,
                              "message": "Job has failed indexes" if failed else "",
                              "lastTransitionTime": "2026-12-01T01:40:00Z"}]}
    if failed:
        status["failedIndexes"] = failed
    else:
        status["completionTime"] = "2026-12-01T01:40:00Z"
    return {"metadata": {"name": "ortho-29000000", "namespace": "ns", "creationTimestamp": "2026-12-01T01:30:00Z"},
            "spec": {"completionMode": "Indexed", "completions": 3}, "status": status}


def index_pod(index: int, items: int, output: str | None = None, exit_code: int = 0, created: str = "01:31",
              message: str | None = None) -> dict:
    result = {"version": 1, "jobType": "drone", "succeeded": exit_code == 0, "items": items, "valid": items,
              "failed": 0, "exitCode": exit_code, "durationSeconds": 60.0 + index}
    if output:
        result["output"] = output
    return {"metadata": {"creationTimestamp": f"2026-12-01T{created}:00Z",
                         "annotations": {COMPLETION_INDEX_ANNOTATION: str(index)}},
            "status": {"containerStatuses": [{"state": {"terminated": {
                "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                "message": json.dumps(result) if message is None else message}}}]}}


def test_an_indexed_run_counts_every_shard_and_takes_the_merge_output():
    pods = [index_pod(0, 4), index_pod(1, 3), index_pod(2, 5, output="/data/out/runs/ortho-29000000/summary.json")]
    record = runs.run_record(indexed_job(), pods)
    assert record.outcome == "Succeeded"
    assert (record.result.items, record.result.valid, record.result.quality) == (12, 12, 1.0)
    assert record.result.output == "/data/out/runs/ortho-29000000/summary.json"


def test_a_failed_index_makes_the_run_partial_and_is_named():
    """Index 1 failed twice (its retry included); the others' results still count."""
    pods = [index_pod(0, 4), index_pod(1, 0, exit_code=1, created="01:31", message="Traceback ..."),
            index_pod(1, 0, exit_code=1, created="01:33", message="OOM"), index_pod(2, 5)]
    record = runs.run_record(indexed_job(failed="1", completed="0,2"), pods)
    assert record.outcome == "Failed" and record.reason == "FailedIndexes"
    assert record.result.items == 9
    assert record.result.warnings[0] == "shard(s) 1 of 3 failed: their inputs are processed by the next run"
    assert record.result.error.startswith("shard(s) 1 of 3 failed")
    assert any("shard 1 of 3: not JSON" in w for w in record.result.warnings)


def test_an_index_that_skipped_bad_inputs_is_told_apart_from_an_undone_shard():
    """Exit 5 (FailIndex at once): the shard finished and reported its bad photos; its inputs are not
    redone, so the record must not say they will be."""
    bad = index_pod(2, 5, exit_code=5)
    pods = [index_pod(0, 4), index_pod(1, 0, exit_code=137, message=""), bad]
    record = runs.run_record(indexed_job(failed="1,2", completed="0"), pods)
    assert record.result.warnings[0] == ("shard(s) 1 of 3 failed: their inputs are processed by the next run; "
                                         "shard(s) 2 of 3 skipped bad inputs")
    assert record.result.items == 9 and record.outcome == "Failed"


def test_index_lists_parse_as_kubernetes_writes_them():
    assert runs.parse_indexes("1,3-5,9") == [1, 3, 4, 5, 9]
    assert runs.parse_indexes(None) == [] and runs.parse_indexes("") == []


def test_a_plain_job_is_recorded_from_its_last_pod_as_before():
    job = copy.deepcopy(indexed_job())
    del job["spec"]
    record = runs.run_record(job, [index_pod(0, 4), index_pod(1, 3, created="01:35")])
    assert record.result.items == 3
