"""The runs the operator fires itself, as one pure step (issue 17).

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

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from thresher.api import interval
from thresher.api.oneoff import one_off_state
from thresher.api.runnames import scheduled_job_name
from thresher.api.timing import ScheduleTimes

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
    own = scheduled_job_name(name, decision.fire)
    others = tuple(sorted(job for job in unfinished if job != own))
    if own in unfinished or not others or concurrency_policy == "Allow":
        return FireStep(fire=decision.fire, recheck=decision.next_due, missed=decision.missed)
    if concurrency_policy == "Replace":
        return FireStep(fire=decision.fire, stop=others, recheck=decision.next_due, missed=decision.missed)
    return FireStep(fire=None, recheck=min(decision.next_due, now + FORBID_RECHECK), missed=decision.missed)


def run_at_step(run_at: datetime | None, name: str, known_jobs: Collection[str], now: datetime, *,
                suspended: bool, starting_deadline_seconds: int | None) -> FireStep:
    """The one run of ``spec.runAt``: fire it when due, once (``oneoff.one_off_state``).

    ``known_jobs``: the names of the schedule's Jobs that exist or are recorded in status; the
    run is done once its Job (named for ``run_at``) is among them. A cron or interval run due at
    the same minute has that very name: it is the same run. Seen after the starting deadline: not
    fired (the CronJob controller's rule), and nothing to look at again.
    """
    if run_at is None or suspended:
        return FireStep(fire=None)
    done = [run_at] if scheduled_job_name(name, run_at) in known_jobs else []
    state = one_off_state(run_at, done, now, starting_deadline_seconds)
    if state == "Waiting":
        return FireStep(fire=None, recheck=run_at)
    if state == "Due":
        return FireStep(fire=run_at)
    return FireStep(fire=None, missed=int(state == "Expired"))
