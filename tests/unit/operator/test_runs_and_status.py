"""Run records from Job/Pod dicts and the status fold (the status model), with no cluster."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from thresher.api.names import MANUAL_ANNOTATION, SCHEDULED_TIMESTAMP_ANNOTATION
from thresher.api.schedule import MAX_RECENT_RUNS, MAX_RESULT_WARNINGS, RunRecord
from thresher.operator import desired_status as ds
from thresher.operator import runs

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def job(name="s-29000000", cond="Complete", reason=None, start="2026-11-22T10:00:00Z",
        end="2026-11-22T10:00:42Z", scheduled="2026-11-22T10:00:00Z", manual=False):
    annotations = {SCHEDULED_TIMESTAMP_ANNOTATION: scheduled} if scheduled else {}
    if manual:
        annotations[MANUAL_ANNOTATION] = "true"
    status = {"startTime": start, "conditions": [
        {"type": cond, "status": "True", "reason": reason, "message": f"{cond} because {reason}",
         "lastTransitionTime": end}]}
    if cond == "Complete":
        status["completionTime"] = end
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": start,
                         "annotations": annotations}, "status": status}


def pod(message=None, exit_code=0, created="2026-11-22T10:00:01Z", reason="Completed"):
    term = {"exitCode": exit_code, "reason": reason}
    if message is not None:
        term["message"] = message
    return {"metadata": {"creationTimestamp": created},
            "status": {"containerStatuses": [{"state": {"terminated": term}}]}}


def test_running_job_has_no_record():
    running = job()
    running["status"]["conditions"] = []
    assert runs.run_record(running, []) is None


def test_successful_run_carries_the_result_summary():
    message = json.dumps({"version": 1, "jobType": "tmdb", "succeeded": True, "items": 120,
                          "valid": 118, "quality": 0.98, "output": "/data/x", "warnings": ["w"] * 19})
    record = dump(runs.run_record(job(), [pod(message)]))
    assert record["outcome"] == "Succeeded"
    assert record["durationSeconds"] == 42
    assert record["scheduledTime"] == "2026-11-22T10:00:00Z"
    assert record["result"]["items"] == 120 and record["result"]["quality"] == 0.98
    assert len(record["result"]["warnings"]) == MAX_RESULT_WARNINGS
    assert "reason" not in record and "resultProblem" not in record


def dump(record: RunRecord) -> dict:
    """A record as the operator writes it into status."""
    return record.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_deadline_exceeded_is_timed_out():
    record = dump(runs.run_record(job(cond="Failed", reason="DeadlineExceeded"), []))
    assert record["outcome"] == "TimedOut"
    assert record["reason"] == "DeadlineExceeded"
    assert record["resultProblem"].startswith("missing")


def test_failed_run_message_names_exit_code_and_job_error():
    message = json.dumps({"jobType": "tmdb", "succeeded": False, "error": "TMDB answered 503 after 5 retries"})
    record = dump(runs.run_record(job(cond="Failed", reason="BackoffLimitExceeded"),
                                  [pod("garbage", 1, "2026-11-22T10:00:01Z", "Error"),
                                   pod(message, 3, "2026-11-22T10:00:20Z", "Error")]))
    assert record["outcome"] == "Failed"
    assert "exit code 3" in record["message"] and "503 after 5 retries" in record["message"]


def test_truncated_or_non_json_message_is_recorded_as_a_problem_not_a_crash():
    """A run-result message that is not JSON must not break recording; the outcome still
    comes from the Job."""
    record = dump(runs.run_record(job(), [pod("{\"items\": 12, \"valid")]))
    assert record["outcome"] == "Succeeded"
    assert record["resultProblem"].startswith("not JSON")
    record = dump(runs.run_record(job(), [pod("x" * 4096)]))
    assert record["resultProblem"].startswith(("truncated", "not JSON"))


def test_manual_runs_are_flagged_and_fall_back_to_creation_time():
    record = dump(runs.run_record(job(manual=True, scheduled=None), []))
    assert record["manual"] is True
    assert record["scheduledTime"] == "2026-11-22T10:00:00Z"


def rec(name, outcome, end):
    return {"jobName": name, "outcome": outcome, "completionTime": end, "durationSeconds": 10.0}


def merge(status: dict, records: list[dict]) -> tuple[dict, tuple[RunRecord, ...]]:
    """Fold records into a stored status: (the status patch, the runs that were new)."""
    current = ds.read_status(status)
    folded, new = ds.fold_runs(current, [RunRecord.model_validate(r) for r in records])
    return ds.status_patch(status, current, folded), new


def test_merge_counts_failures_and_success_resets():
    fields, new = merge({}, [rec("a", "Failed", "2026-11-22T10:00:00Z"),
                             rec("b", "Failed", "2026-11-22T11:00:00Z")])
    assert fields["consecutiveFailures"] == 2 and len(new) == 2
    assert fields["lastFailureTime"] == "2026-11-22T11:00:00Z"
    assert fields["stats"] == {"runs": 2, "succeeded": 0, "failed": 2, "successRate": 0.0,
                               "meanDurationSeconds": 10.0}
    status = {**fields}
    fields, _ = merge(status, [rec("c", "Succeeded", "2026-11-22T12:00:00Z")])
    assert fields["consecutiveFailures"] == 0
    assert fields["lastSuccessfulTime"] == "2026-11-22T12:00:00Z"
    assert fields["lastResult"] == "Succeeded"


def test_merging_a_recorded_run_again_changes_nothing():
    """Restarts re-deliver every Job: a run already in recentRuns must not count twice."""
    fields, _ = merge({}, [rec("a", "Failed", "2026-11-22T10:00:00Z")])
    again, new = merge(fields, [rec("a", "Failed", "2026-11-22T10:00:00Z")])
    assert again == {} and new == ()
    _, new = merge({}, [rec("x", "Failed", "2026-11-22T10:00:00Z"),
                        rec("x", "Failed", "2026-11-22T10:00:00Z")])
    assert len(new) == 1


def test_history_is_bounded_and_newest_first():
    """Pins issue 12: the CRD and docs say recentRuns is newest first, the operator stored the
    oldest first, so `jsonpath={.status.recentRuns[0]}` showed the oldest run."""
    status: dict = {}
    for i in range(30):
        fields, _ = merge(status, [rec(f"j{i:02d}", "Succeeded", f"2026-11-22T10:{i:02d}:00Z")])
        status.update(fields)
    assert len(status["recentRuns"]) == MAX_RECENT_RUNS
    assert status["recentRuns"][0]["jobName"] == "j29" and status["recentRuns"][-1]["jobName"] == "j10"
    assert status["stats"]["runs"] == MAX_RECENT_RUNS


def test_a_late_recorded_older_run_sorts_by_completion_time():
    status, _ = merge({}, [rec("b", "Succeeded", "2026-11-22T11:00:00Z")])
    status.update(merge(status, [rec("a", "Failed", "2026-11-22T10:00:00Z")])[0])
    assert [r["jobName"] for r in status["recentRuns"]] == ["b", "a"]
    assert status["lastResult"] == "Succeeded" and status["consecutiveFailures"] == 1


def test_condition_transition_time_moves_only_on_flip():
    later = NOW.replace(hour=13)
    conds = ds.set_condition([], "Ready", True, "A", "m", NOW, 1)
    same = ds.set_condition(conds, "Ready", True, "B", "m2", later, 2)
    assert same[0].last_transition_time == conds[0].last_transition_time
    assert same[0].reason == "B" and same[0].observed_generation == 2
    flipped = ds.set_condition(same, "Ready", False, "C", "m3", later, 2)
    assert flipped[0].last_transition_time == later


def test_status_patch_skips_writes_that_change_nothing():
    stored = {"consecutiveFailures": 0, "nextScheduleTime": "2026-11-22T10:00:00Z", "unknownField": 1}
    current = ds.read_status(stored)
    assert ds.status_patch(stored, current, current) == {}
    cleared = current.model_copy(update={"next_schedule_time": None, "observed_generation": 3})
    assert ds.status_patch(stored, current, cleared) == {"nextScheduleTime": None, "observedGeneration": 3}
    # A default value is still written when storage lacks it (kubectl shows 0, not <none>).
    assert ds.status_patch({}, ds.read_status({}), ds.read_status({})) == {"consecutiveFailures": 0}


def test_a_stored_field_that_does_not_validate_reads_as_unset():
    """Status written by another version or by hand must not make the status unreadable."""
    status = ds.read_status({"consecutiveFailures": -3, "lastResult": "Succeeded"})
    assert status.consecutive_failures == 0 and status.last_result == "Succeeded"


def test_result_text_is_trimmed_to_the_status_schema():
    """Found on the real node: a TMDB run's 600-character warning made the API server reject
    the whole status write (warnings items are at most 512 characters), so the run was never
    recorded. Every string taken from a job's result must fit the schema."""
    message = json.dumps({"jobType": "tmdb", "succeeded": False, "warnings": ["w" * 600, "x"],
                          "error": "e" * 5000, "output": "/" + "o" * 2000})
    record = dump(runs.run_record(job(cond="Failed", reason="BackoffLimitExceeded"), [pod(message, 3)]))
    assert len(record["result"]["warnings"][0]) == 512
    assert len(record["result"]["error"]) <= 2048 and len(record["result"]["output"]) <= 1024
    assert len(record["message"]) <= 1024
    RunRecord.model_validate(record)  # the status schema's own model accepts it
