"""What the user commands show, computed from the objects they read: pure, no cluster."""

from __future__ import annotations

from dataclasses import dataclass

SUCCEEDED = "Succeeded"


def _newest_first(runs: list[dict]) -> list[dict]:
    # By time, not by position: the order of status.recentRuns is the operator's to choose.
    return sorted(runs, key=lambda r: r.get("completionTime") or r.get("startTime") or "", reverse=True)


def dashboard_rows(schedules: list[dict]) -> list[dict]:
    """One row per schedule: what the old in-process schedulers' console dashboard showed,
    plus the runs still going (``status.active``) and whether one is blocked."""
    rows = []
    for body in sorted(schedules, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        spec, status = body.get("spec") or {}, body.get("status") or {}
        stats = status.get("stats") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        runs = _newest_first(status.get("recentRuns") or [])
        failures = [r for r in runs if r.get("outcome") != SUCCEEDED]
        ready = conditions.get("Ready", {})
        active = status.get("active") or []
        rows.append({
            "namespace": body["metadata"]["namespace"],
            "name": body["metadata"]["name"],
            "job": next(iter((spec.get("job") or {}).keys()), "?"),
            # A one-off schedule (runAt, no cron) shows its one run instead.
            "schedule": status.get("effectiveSchedule") or spec.get("schedule") or f"runAt {spec.get('runAt')}",
            "timeZone": spec.get("timeZone") or "UTC",
            "suspended": bool(spec.get("suspend")),
            "ready": ready.get("status") == "True",
            "readyMessage": ready.get("message", ""),
            "stale": conditions.get("Stale", {}).get("status") == "True",
            "nextRun": status.get("nextScheduleTime"),
            "lastResult": status.get("lastResult"),
            "lastSuccess": status.get("lastSuccessfulTime"),
            "consecutiveFailures": status.get("consecutiveFailures", 0),
            "runs": stats.get("runs", 0),
            "successRate": stats.get("successRate"),
            "meanDurationSeconds": stats.get("meanDurationSeconds"),
            "lastRunResult": (runs[0] if runs else {}).get("result"),
            "recentFailures": [{"job": r["jobName"], "at": r.get("completionTime"),
                                "message": r.get("message", "")} for r in failures[:3]],
            "active": [{k: a[k] for k in ("name", "phase", "node", "reason", "message") if a.get(k)}
                       for a in active],
            "retrying": [retry_line(r) for r in status.get("retrying") or []],
        })
    return rows


def state_of(row: dict) -> str:
    """The dashboard's one-word state; a blocked run outranks everything but suspension."""
    if row["suspended"]:
        return "suspended"
    blocked = [a for a in row["active"] if a.get("phase") == "Blocked"]
    if blocked:
        return f"blocked: {blocked[0].get('reason', '?')}"
    if not row["ready"]:
        return "not ready"
    if row["stale"]:
        return "stale"
    if row["active"]:
        return "running"
    return "retry waiting" if row.get("retrying") else "ok"


def retry_line(run: dict) -> str:
    """One run of ``status.retrying``: its first Job, attempt n of m, and the next attempt's time
    while it waits in the delay (or the attempt's Job while it runs)."""
    attempts = run.get("attempts") or [{}]
    last, of = attempts[-1], run.get("maxAttempts", "?")
    line = f"job.batch/{attempts[0].get('jobName')} attempt {last.get('attempt', '?')} of {of}"
    if not last.get("outcome"):
        return f"{line} running as job.batch/{last.get('jobName')}"
    line += f" {last['outcome']}"
    if run.get("nextAttemptTime"):
        line += f"; attempt {last.get('attempt', 0) + 1} of {of} at {run['nextAttemptTime']}"
    return line + (f": {run['message']}" if run.get("message") else "")


def retrying_run(schedule: dict, job_name: str) -> dict | None:
    """The ``status.retrying`` entry of the run whose first Job is ``job_name``."""
    retrying = (schedule.get("status") or {}).get("retrying") or []
    return next((r for r in retrying if ((r.get("attempts") or [{}])[0]).get("jobName") == job_name), None)


def recorded_run(schedule: dict, job_name: str) -> dict | None:
    """The run of ``job_name`` in ``status.recentRuns``, matched by Job name (not position)."""
    runs = (schedule.get("status") or {}).get("recentRuns") or []
    return next((r for r in runs if r.get("jobName") == job_name), None)


def active_run(schedule: dict, job_name: str) -> dict | None:
    """The ``status.active`` entry of ``job_name``, while the operator reports it unfinished."""
    active = (schedule.get("status") or {}).get("active") or []
    return next((a for a in active if a.get("name") == job_name), None)


@dataclass(frozen=True)
class WaitOutcome:
    """How ``thresher run --wait`` ends: its exit code and the line it prints."""

    exit_code: int
    line: str


def wait_outcome(run: dict) -> WaitOutcome:
    """Exit 0 for a succeeded run, 1 for any other recorded outcome, with the recorded message."""
    outcome = run.get("outcome", "?")
    line = f"job.batch/{run.get('jobName')} {outcome}"
    if run.get("attempts"):
        line += f" (attempt {len(run['attempts'])} of {run.get('maxAttempts', '?')})"
    if run.get("durationSeconds") is not None:
        line += f" after {run['durationSeconds']:g}s"
    if run.get("message"):
        line += f": {run['message']}"
    result = run.get("result") or {}
    if outcome == SUCCEEDED and result.get("items") is not None:
        line += f" ({result['items']} items)"
    return WaitOutcome(0 if outcome == SUCCEEDED else 1, line)


def progress_line(active: dict | None) -> str | None:
    """What to tell a waiting user about an unfinished run; None while there is nothing to say."""
    if not active or not active.get("phase"):
        return None
    line = f"job.batch/{active.get('name')} {active['phase']}"
    if active.get("node"):
        line += f" on {active['node']}"
    if active.get("reason"):
        line += f" ({active['reason']})"
    if active.get("message"):
        line += f": {active['message']}"
    return line
