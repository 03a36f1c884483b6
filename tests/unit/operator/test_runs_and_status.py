"""Run records from Job/Pod dicts and the status fold, with no cluster."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from thresher.operator import runs, status as st

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def job(name="s-29000000", cond="Complete", reason=None, start="2026-11-22T10:00:00Z",
        end="2026-11-22T10:00:42Z", scheduled="2026-11-22T10:00:00Z", manual=False):
    annotations = {runs.SCHEDULED_TIMESTAMP: scheduled} if scheduled else {}
    if manual:
        annotations[runs.MANUAL_ANNOTATION] = "true"
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
                          "valid": 118, "quality": 0.98, "output": "/data/x", "warnings": ["w"] * 9})
    record = runs.run_record(job(), [pod(message)])
    assert record["outcome"] == "Succeeded"
    assert record["durationSeconds"] == 42
    assert record["scheduledTime"] == "2026-11-22T10:00:00Z"
    assert record["result"]["items"] == 120 and record["result"]["quality"] == 0.98
    assert len(record["result"]["warnings"]) == runs.MAX_WARNINGS_KEPT
    assert "reason" not in record and "resultProblem" not in record


def test_deadline_exceeded_is_timed_out():
    record = runs.run_record(job(cond="Failed", reason="DeadlineExceeded"), [])
    assert record["outcome"] == "TimedOut"
    assert record["reason"] == "DeadlineExceeded"
    assert record["resultProblem"].startswith("missing")


def test_failed_run_message_names_exit_code_and_job_error():
    message = json.dumps({"jobType": "tmdb", "succeeded": False, "error": "TMDB answered 503 after 5 retries"})
    record = runs.run_record(job(cond="Failed", reason="BackoffLimitExceeded"),
                             [pod("garbage", 1, "2026-11-22T10:00:01Z", "Error"),
                              pod(message, 3, "2026-11-22T10:00:20Z", "Error")])
    assert record["outcome"] == "Failed"
    assert "exit code 3" in record["message"] and "503 after 5 retries" in record["message"]


def test_truncated_or_non_json_message_is_recorded_as_a_problem_not_a_crash():
    """A run-result message that is not JSON must not break recording; the outcome still
    comes from the Job."""
    record = runs.run_record(job(), [pod("{\"items\": 12, \"valid")])
    assert record["outcome"] == "Succeeded"
    assert record["resultProblem"].startswith("not JSON")
    record = runs.run_record(job(), [pod("x" * 4096)])
    assert record["resultProblem"].startswith(("truncated", "not JSON"))


def test_manual_runs_are_flagged_and_fall_back_to_creation_time():
    record = runs.run_record(job(manual=True, scheduled=None), [])
    assert record["manual"] is True
    assert record["scheduledTime"] == "2026-11-22T10:00:00Z"


def rec(name, outcome, end):
    return {"jobName": name, "outcome": outcome, "completionTime": end, "durationSeconds": 10.0}


def test_merge_counts_failures_and_success_resets():
    fields, new = st.merge_runs({}, [rec("a", "Failed", "2026-11-22T10:00:00Z"),
                                     rec("b", "Failed", "2026-11-22T11:00:00Z")])
    assert fields["consecutiveFailures"] == 2 and len(new) == 2
    assert fields["lastFailureTime"] == "2026-11-22T11:00:00Z"
    assert fields["stats"] == {"runs": 2, "succeeded": 0, "failed": 2, "successRate": 0.0,
                               "meanDurationSeconds": 10.0}
    status = {**fields}
    fields, _ = st.merge_runs(status, [rec("c", "Succeeded", "2026-11-22T12:00:00Z")])
    assert fields["consecutiveFailures"] == 0
    assert fields["lastSuccessfulTime"] == "2026-11-22T12:00:00Z"
    assert fields["lastResult"] == "Succeeded"


def test_merging_a_recorded_run_again_changes_nothing():
    """Restarts re-deliver every Job: a run already in recentRuns must not count twice."""
    fields, _ = st.merge_runs({}, [rec("a", "Failed", "2026-11-22T10:00:00Z")])
    again, new = st.merge_runs(fields, [rec("a", "Failed", "2026-11-22T10:00:00Z")])
    assert again == {} and new == []
    _, new = st.merge_runs({}, [rec("x", "Failed", "2026-11-22T10:00:00Z"),
                                  rec("x", "Failed", "2026-11-22T10:00:00Z")])
    assert len(new) == 1


def test_history_is_bounded():
    status: dict = {}
    for i in range(30):
        fields, _ = st.merge_runs(status, [rec(f"j{i:02d}", "Succeeded", f"2026-11-22T10:{i:02d}:00Z")])
        status.update(fields)
    assert len(status["recentRuns"]) == st.HISTORY_LIMIT
    assert status["recentRuns"][0]["jobName"] == "j10"
    assert status["stats"]["runs"] == st.HISTORY_LIMIT


def test_condition_transition_time_moves_only_on_flip():
    later = NOW.replace(hour=13)
    conds = st.set_condition([], "Ready", True, "A", "m", NOW, 1)
    same = st.set_condition(conds, "Ready", True, "B", "m2", later, 2)
    assert same[0]["lastTransitionTime"] == conds[0]["lastTransitionTime"]
    assert same[0]["reason"] == "B" and same[0]["observedGeneration"] == 2
    flipped = st.set_condition(same, "Ready", False, "C", "m3", later, 2)
    assert flipped[0]["lastTransitionTime"] == "2026-11-22T13:00:00Z"


def test_changed_fields_skips_writes_that_change_nothing():
    assert st.changed_fields({"a": 1, "b": [1]}, {"a": 1, "b": [1]}) == {}
    assert st.changed_fields({"a": 1}, {"a": 2, "c": None}) == {"a": 2}
    assert st.changed_fields({"c": "2026-11-22T10:00:00Z"}, {"c": None}) == {"c": None}


def test_result_text_is_trimmed_to_the_status_schema():
    """Found on the real node: a TMDB run's 600-character warning made the API server reject
    the whole status write (warnings items are at most 512 characters), so the run was never
    recorded. Every string taken from a job's result must fit the schema."""
    from thresher.api.schedule import RunRecord

    message = json.dumps({"jobType": "tmdb", "succeeded": False, "warnings": ["w" * 600, "x"],
                          "error": "e" * 5000, "output": "/" + "o" * 2000})
    record = runs.run_record(job(cond="Failed", reason="BackoffLimitExceeded"), [pod(message, 3)])
    assert len(record["result"]["warnings"][0]) == 512
    assert len(record["result"]["error"]) <= 2048 and len(record["result"]["output"]) <= 1024
    assert len(record["message"]) <= 1024
    RunRecord.model_validate(record)  # the status schema's own model accepts it
