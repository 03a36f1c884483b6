"""The runs the operator fires itself, as pure steps (issue 17): intervals, runAt, retries, and
when a finished one-off schedule expires.

An ``@every`` interval that no cron expression repeats (90m, 7m, 7h) keeps its CronJob
suspended as the run template; the operator creates each run's Job at its due time, as the
CronJob controller would: ``interval.fire_decision`` picks the newest due time not yet fired
(counted from ``status.lastScheduleTime``, so a restart neither skips nor doubles a run) and
this step adds what the CronJob's fields say: ``suspend`` (nothing), ``concurrencyPolicy``
against the schedule's unfinished Jobs, and when to look again.

The Job's name is the due time's (``runnames.scheduled_job_name``): creating it twice creates
one Job. Pure: the reconciler reads the world, calls ``fire_step`` and creates the Job.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from thresher.api import interval
from thresher.api.oneoff import Expiry, one_off_state, ttl_expiry
from thresher.api.retry import RetryPolicy, RunAttempts
from thresher.api.runnames import scheduled_job_name
from thresher.api.schedule import RunRecord
from thresher.api.timing import ScheduleTimes
from thresher.operator.retries import Retry, next_step

# With concurrencyPolicy Forbid a due run waits while another runs; it is looked at again this
# soon (a finished run also triggers a refresh) and fires then, unless startingDeadlineSeconds
# passed meanwhile: the CronJob controller's behaviour.
FORBID_RECHECK = timedelta(seconds=10)


@dataclass(frozen=True)
class FireStep:
    """``fire``: create the Job of this due time now (None: nothing). ``stop``: the unfinished runs
    to end first (Replace). ``recheck``: when to look again (None: never, e.g. suspended).
    ``missed``: due times since the last fired one that will not run."""

    fire: datetime | None
    stop: tuple[str, ...] = ()
    recheck: datetime | None = None
    missed: int = 0


def fire_step(times: ScheduleTimes, name: str, last_fired: datetime | None, created: datetime, now: datetime, *,
              suspended: bool, starting_deadline_seconds: int | None,
              concurrency_policy: Literal["Allow", "Forbid", "Replace"], unfinished: Collection[str]) -> FireStep:
    """What to do now for schedule ``name`` (a no-op unless the operator fires its runs).

    ``unfinished``: the names of the schedule's Jobs that have not finished. The Job of the due
    time itself among them means it was created and its status write was lost (a crash, a stale
    read): it is reported as fired again, and the create answers AlreadyExists.
    """
    if times.every is None or not times.fired_by_operator or suspended:
        return FireStep(fire=None)
    decision = interval.fire_decision(times.every, last_fired, created, now, starting_deadline_seconds)
    if decision.fire is None:
        return FireStep(fire=None, recheck=decision.next_due, missed=decision.missed)
    gate, others = concurrency_gate(scheduled_job_name(name, decision.fire), unfinished, concurrency_policy)
    if gate == "wait":
        return FireStep(fire=None, recheck=min(decision.next_due, now + FORBID_RECHECK), missed=decision.missed)
    return FireStep(fire=decision.fire, stop=others if gate == "replace" else (), recheck=decision.next_due,
                    missed=decision.missed)


Gate = Literal["start", "replace", "wait"]


def concurrency_gate(own: str, unfinished: Collection[str],
                     concurrency_policy: Literal["Allow", "Forbid", "Replace"]) -> tuple[Gate, tuple[str, ...]]:
    """``concurrencyPolicy`` for a run the operator is about to start as Job ``own``, against the
    schedule's unfinished Jobs: ``start`` it, ``replace`` the others (returned) and start it, or
    ``wait`` (Forbid) and look again. ``own`` among them: it was created before (a lost status
    write), and the create answers AlreadyExists: it counts as started."""
    others = tuple(sorted(job for job in unfinished if job != own))
    if own in unfinished or not others or concurrency_policy == "Allow":
        return "start", others
    return ("replace" if concurrency_policy == "Replace" else "wait"), others


def run_at_step(run_at: datetime | None, name: str, known_jobs: Collection[str], now: datetime, *,
                suspended: bool, starting_deadline_seconds: int | None,
                concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow",
                unfinished: Collection[str] = ()) -> FireStep:
    """The one run of ``spec.runAt``: fire it when due, once (``oneoff.one_off_state``).

    ``known_jobs``: the names of the schedule's Jobs that exist or are recorded in status; the
    run is done once its Job (named for ``run_at``) is among them. A cron or interval run due at
    the same minute has that very name: it is the same run. Seen after the starting deadline: not
    fired (the CronJob controller's rule), and nothing to look at again. ``concurrencyPolicy``
    holds as for any due run (``concurrency_gate`` against ``unfinished``): Forbid holds it back
    while another run is unfinished, looking again every 10 s until it may start or its starting
    deadline passed; Replace ends the unfinished runs and starts it.
    """
    if run_at is None or suspended:
        return FireStep(fire=None)
    own = scheduled_job_name(name, run_at)
    done = [run_at] if own in known_jobs else []
    state = one_off_state(run_at, done, now, starting_deadline_seconds)
    if state == "Waiting":
        return FireStep(fire=None, recheck=run_at)
    if state != "Due":
        return FireStep(fire=None, missed=int(state == "Expired"))
    gate, others = concurrency_gate(own, unfinished, concurrency_policy)
    if gate == "wait":
        return FireStep(fire=None, recheck=now + FORBID_RECHECK)
    return FireStep(fire=run_at, stop=others if gate == "replace" else ())


@dataclass(frozen=True)
class RetryStart:
    """Create attempt ``attempt`` of the run whose first Job is ``first_job`` as Job ``job_name`` now."""

    first_job: str
    attempt: int
    job_name: str


def retry_steps(policy: RetryPolicy | None, retrying: Sequence[RunAttempts], name: str, now: datetime, *,
                suspended: bool, concurrency_policy: Literal["Allow", "Forbid", "Replace"],
                unfinished: Collection[str]) -> tuple[tuple[RetryStart, ...], datetime | None]:
    """The retry attempts to create now (``retries.next_step`` due), and when to look again.

    A retry belongs to an older run than anything running: it never replaces a run. With Forbid
    or Replace it waits while another run of the schedule is unfinished (looked at again in
    10 s); with Allow it starts beside it. ``suspend`` holds retries back like any run (the
    retry timeout still counts).
    """
    starts, recheck = [], None
    for run in retrying:
        step = next_step(policy, run, name, now) if run.waiting else None
        if not isinstance(step, Retry):
            continue  # running, or final (the status fold records it)
        if suspended:
            continue  # looked at again when the spec changes (and by every resync)
        if not step.due:
            recheck = min(filter(None, (recheck, step.at)))
            continue
        gate, _ = concurrency_gate(step.job_name, unfinished, "Allow" if concurrency_policy == "Allow" else "Forbid")
        if gate == "wait":
            recheck = min(filter(None, (recheck, now + FORBID_RECHECK)))
            continue
        starts.append(RetryStart(run.first_job, step.attempt, step.job_name))
    return tuple(starts), recheck


def one_off_expiry(run_at: datetime | None, recurring: bool, ttl_seconds: int | None, name: str,
                   recent_runs: Sequence[RunRecord], retrying: Sequence[RunAttempts], now: datetime) -> Expiry | None:
    """When a finished one-off schedule is deleted (``ttlSecondsAfterFinished``), or None: no TTL,
    a recurring schedule, or its run has not finished (not recorded yet, or waiting for a retry).
    Finished: the run of ``runAt`` (its Job's name) is in recentRuns, counted from its completion."""
    if run_at is None or recurring or ttl_seconds is None:
        return None
    own = scheduled_job_name(name, run_at)
    if any(run.first_job == own for run in retrying):
        return None
    record = next((run for run in recent_runs if run.job_name == own), None)
    if record is None:
        return None
    return ttl_expiry(record.completion_time or now, ttl_seconds, now)
