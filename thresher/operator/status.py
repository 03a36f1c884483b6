"""Pure status arithmetic: fold new run records into a schedule's status, compute conditions.

Recording is idempotent by construction: a run is keyed by its Job name, and merging a record
that is already in ``recentRuns`` changes nothing, so an operator restarted between writing
status and marking the Job never counts a run twice.
"""

from __future__ import annotations

from datetime import datetime

from thresher.operator.runs import SUCCEEDED, format_time, parse_time

HISTORY_LIMIT = 20

# Condition types (see docs/api.md): Ready (spec valid, CronJob in sync), Stale (no success
# within the expected interval plus grace), Failing (consecutive failures at the threshold).
READY, STALE, FAILING = "Ready", "Stale", "Failing"


def merge_runs(status: dict, records: list[dict], limit: int = HISTORY_LIMIT) -> tuple[dict, list[dict]]:
    """Return (status fields to write, records that were new). ``status`` is not modified."""
    known = {run["jobName"] for run in status.get("recentRuns") or []}
    new = sorted((r for r in records if r["jobName"] not in known),
                 key=lambda r: r.get("completionTime") or "")
    # Deduplicate within the batch too (two events for one Job).
    unique: list[dict] = []
    for record in new:
        if record["jobName"] not in {u["jobName"] for u in unique}:
            unique.append(record)
    if not unique:
        return {}, []

    runs = sorted([*(status.get("recentRuns") or []), *unique], key=lambda r: r.get("completionTime") or "")
    runs = runs[-limit:]

    consecutive = int(status.get("consecutiveFailures") or 0)
    last_success = parse_time(status.get("lastSuccessfulTime"))
    last_failure = parse_time(status.get("lastFailureTime"))
    for record in unique:
        finished = parse_time(record.get("completionTime"))
        if record["outcome"] == SUCCEEDED:
            consecutive = 0
            last_success = max(filter(None, (last_success, finished)), default=None)
        else:
            consecutive += 1
            last_failure = max(filter(None, (last_failure, finished)), default=None)

    fields = {
        "recentRuns": runs,
        "consecutiveFailures": consecutive,
        "lastResult": runs[-1]["outcome"],
        "stats": run_stats(runs),
    }
    if last_success:
        fields["lastSuccessfulTime"] = format_time(last_success)
    if last_failure:
        fields["lastFailureTime"] = format_time(last_failure)
    return fields, unique


def run_stats(runs: list[dict]) -> dict:
    succeeded = sum(1 for r in runs if r["outcome"] == SUCCEEDED)
    durations = [r["durationSeconds"] for r in runs if r.get("durationSeconds") is not None]
    stats = {"runs": len(runs), "succeeded": succeeded, "failed": len(runs) - succeeded}
    if runs:
        stats["successRate"] = round(succeeded / len(runs), 4)
    if durations:
        stats["meanDurationSeconds"] = round(sum(durations) / len(durations), 3)
    return stats


def set_condition(conditions: list[dict], type_: str, status: bool, reason: str, message: str,
                  now: datetime, generation: int | None) -> list[dict]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    result = []
    found = False
    for cond in conditions or []:
        if cond.get("type") != type_:
            result.append(cond)
            continue
        found = True
        transition = cond.get("lastTransitionTime") if cond.get("status") == value else format_time(now)
        result.append(_condition(type_, value, reason, message, transition, generation))
    if not found:
        result.append(_condition(type_, value, reason, message, format_time(now), generation))
    return result


def _condition(type_, value, reason, message, transition, generation) -> dict:
    cond = {"type": type_, "status": value, "reason": reason, "message": message[:1000],
            "lastTransitionTime": transition}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def changed_fields(current: dict, desired: dict) -> dict:
    """The subset of ``desired`` that differs from ``current``: skip writes that change nothing."""
    return {k: v for k, v in desired.items() if current.get(k) != v}
