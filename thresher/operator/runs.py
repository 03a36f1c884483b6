"""Job and Pod status in, run record out: what one finished run of a schedule was.

Pure functions over the plain dicts the Kubernetes API returns (the API boundary), giving the
status model's ``RunRecord``; tested with no cluster and no mocks (kubebuilder's "status
reconstituted from the world").
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from thresher.api.names import (
    ATTEMPT_ANNOTATION,
    BACKFILL_RUN_ANNOTATION,
    COMPLETION_INDEX_ANNOTATION,
    MANUAL_ANNOTATION,
    RETRY_OF_ANNOTATION,
    SCHEDULED_TIMESTAMP_ANNOTATION,
    STARTUP_VERDICT_ANNOTATION,
    ExitCode,
)
from thresher.api.retry import MAX_ATTEMPTS, AttemptRecord
from thresher.api.runresult import ParsedMessage, RunResult, parse_message
from thresher.api.schedule import (
    MAX_RESULT_PROBLEM,
    MAX_RUN_MESSAGE,
    MAX_RUN_REASON,
    Outcome,
    RunRecord,
    RunSummary,
)

SUCCEEDED, FAILED, TIMED_OUT = "Succeeded", "Failed", "TimedOut"
FAILED_TO_START, NODE_LOST = "FailedToStart", "NodeLost"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished_condition(job: dict) -> dict | None:
    """The Job's terminal condition (Complete or Failed, status True), or None while it runs.

    A Job the operator stopped (``startup_verdict``) is finished at ``FailureTarget`` already:
    the Job controller sets ``Failed`` only once every pod has terminated, and a pod on a lost
    node stays Terminating until the node returns or is deleted."""
    conditions = job.get("status", {}).get("conditions") or []
    for cond in conditions:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond
    if startup_verdict_of(job) is not None:
        for cond in conditions:
            if cond.get("type") == "FailureTarget" and cond.get("status") == "True":
                return cond
    return None


def startup_verdict_of(job: dict) -> dict | None:
    """The verdict the operator wrote on a Job it stopped (outcome, reason, message), or None."""
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(STARTUP_VERDICT_ANNOTATION)
    if not raw:
        return None
    try:
        verdict = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(verdict, dict) or verdict.get("outcome") not in (FAILED_TO_START, NODE_LOST):
        return None  # written by hand or by another version: the Job's own condition decides
    return verdict


def _terminated_state(pod: dict) -> dict | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def last_terminated(pods: list[dict]) -> dict | None:
    """The terminated container state of the Job's most recent attempt that has one."""
    attempts = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    for pod in reversed(attempts):
        state = _terminated_state(pod)
        if state is not None:
            return state
    return None


def _outcome(condition: dict) -> Outcome:
    if condition["type"] == "Complete":
        return SUCCEEDED
    return TIMED_OUT if condition.get("reason") == "DeadlineExceeded" else FAILED


def run_record(job: dict, pods: list[dict]) -> RunRecord | None:
    """The run record of a finished Job, or None while it is still running."""
    condition = finished_condition(job)
    if condition is None:
        return None
    meta, status = job["metadata"], job.get("status", {})
    annotations = meta.get("annotations") or {}
    # Stopped by the operator: recorded with its verdict, unless it completed meanwhile.
    verdict = startup_verdict_of(job) if condition["type"] != "Complete" else None
    outcome = verdict["outcome"] if verdict else _outcome(condition)
    start = parse_time(status.get("startTime")) or parse_time(meta.get("creationTimestamp"))
    end = parse_time(status.get("completionTime")) or parse_time(condition.get("lastTransitionTime"))
    terminated = last_terminated(pods)
    parsed = (indexed_result(job, pods) if is_indexed(job)
              else parse_message(terminated.get("message") if terminated else None))
    failed = outcome != SUCCEEDED
    exit_code = terminated.get("exitCode") if failed and terminated else None
    reason = (str(verdict.get("reason") or outcome) if verdict else (condition.get("reason") or outcome)
              )[:MAX_RUN_REASON] if failed else None
    return RunRecord(
        job_name=meta["name"],
        manual=annotations.get(MANUAL_ANNOTATION) == "true",
        backfill=annotations.get(BACKFILL_RUN_ANNOTATION) == "true",
        scheduled_time=(parse_time(annotations.get(SCHEDULED_TIMESTAMP_ANNOTATION))
                        or parse_time(meta.get("creationTimestamp"))),
        start_time=start,
        completion_time=end,
        outcome=outcome,
        duration_seconds=round(max(0.0, (end - start).total_seconds()), 3) if start and end else None,
        # Trimmed to the status schema's bounds (RunSummary.from_result trims the result).
        result=RunSummary.from_result(parsed.result) if parsed.result is not None else None,
        result_problem=None if parsed.result is not None else parsed.problem[:MAX_RESULT_PROBLEM],
        reason=reason,
        message=(str(verdict.get("message") or outcome)[:MAX_RUN_MESSAGE] if verdict
                 else failure_message(condition, terminated, parsed.result)) if failed else None,
        exit_code=exit_code if isinstance(exit_code, int) else None,
    ).model_copy(update=_retry_attempt(annotations, meta["name"], start, end, outcome, exit_code, reason))


def _retry_attempt(annotations: dict, job_name: str, start: datetime | None, end: datetime | None, outcome: str,
                   exit_code: object, reason: str | None) -> dict:
    """A retry attempt's Job (``thresher.dev/retry-of``) is recorded as its run: ``jobName`` is
    the run's first Job and ``attempts`` holds this one attempt (the fold merges it)."""
    first = annotations.get(RETRY_OF_ANNOTATION)
    try:
        number = int(annotations.get(ATTEMPT_ANNOTATION) or "")
    except ValueError:
        return {}
    if not first or not 2 <= number <= MAX_ATTEMPTS:
        return {}  # written by hand or by another version: recorded as a run of its own
    attempt = AttemptRecord(attempt=number, job_name=job_name, start_time=start, completion_time=end,
                            outcome=outcome, exit_code=exit_code if isinstance(exit_code, int) else None,
                            reason=reason)
    return {"job_name": first, "attempts": [attempt]}


def failure_message(condition: dict, terminated: dict | None, result: RunResult | None) -> str:
    """One line for people: what Kubernetes says, then what the container said."""
    parts = [condition.get("message") or condition.get("reason") or "failed"]
    if terminated is not None:
        parts.append(f"exit code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})")
    if result is not None and result.error:
        parts.append(result.error)
    elif terminated is not None and terminated.get("message") and result is None:
        # Not a run result: a generic container's log tail (FallbackToLogsOnError).
        parts.append(terminated["message"].strip().splitlines()[-1][:300] if terminated["message"].strip() else "")
    return "; ".join(p for p in parts if p)[:MAX_RUN_MESSAGE]


# --- Indexed Jobs (a fanned-out drone run, docs/drone.md "Fan-out") --------------------------------

def is_indexed(job: dict) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def parse_indexes(text: str | None) -> list[int]:
    """Kubernetes' compressed index list ("1,3-5") as numbers."""
    out: list[int] = []
    for part in (text or "").split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit():
            out.extend(range(int(first), int(last if last.isdigit() else first) + 1))
    return out


def indexed_result(job: dict, pods: list[dict]) -> ParsedMessage:
    """One run result for an Indexed Job: every index's latest result summed (each counts its own shard,
    the merging index also the orthomosaics it merged), the merge's output, and the failed indexes
    (``status.failedIndexes``) named. Indexes without a result are named in a warning."""
    count = int((job.get("spec") or {}).get("completions") or 1)
    by_index: dict[int, list[dict]] = {}
    for pod in pods:
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "")
        if raw.isdigit():
            by_index.setdefault(int(raw), []).append(pod)
    by_result: dict[int, RunResult] = {}
    problems: list[str] = []
    for index in range(count):
        state = last_terminated(by_index.get(index, []))
        parsed = parse_message(state.get("message") if state else None)
        if parsed.result is not None:
            by_result[index] = parsed.result
        else:
            problems.append(f"shard {index} of {count}: {parsed.problem}")
    results = list(by_result.values())
    failed = parse_indexes((job.get("status") or {}).get("failedIndexes"))
    if not results:
        return ParsedMessage(None, "; ".join(problems) or "missing: no index wrote a run result")
    total = lambda name: sum(getattr(r, name) or 0 for r in results)  # noqa: E731
    items, valid = total("items"), total("valid")
    # An index that exited 5 finished its shard and reported bad inputs; any other failure left its
    # shard undone (its state keeps the inputs pending for the next run).
    partial = [i for i in failed if i in by_result and by_result[i].exit_code == int(ExitCode.PARTIAL)]
    undone = [i for i in failed if i not in partial]
    notes = ([f"shard(s) {', '.join(map(str, undone))} of {count} failed: their inputs are processed by the next "
              "run"] if undone else []) + \
        ([f"shard(s) {', '.join(map(str, partial))} of {count} skipped bad inputs"] if partial else [])
    lost = "; ".join(notes) or None
    errors = [r.error for r in results if r.error]
    return ParsedMessage(RunResult(
        job_type=results[0].job_type, succeeded=all(r.succeeded for r in results) and not failed,
        items=items, valid=valid, failed=total("failed"), quality=valid / items if items else None,
        output=next((r.output for r in results if r.output), None),
        duration_seconds=max((r.duration_seconds or 0.0) for r in results),
        warnings=([lost] if lost else []) + problems + [w for r in results for w in r.warnings],
        error="; ".join(([lost] if lost else []) + errors) or None,
        exit_code=max((r.exit_code or 0) for r in results)), None)
