"""Backfill: one run per fire time of a schedule in a past window, as pure functions (issue 17).

``thresher backfill NAME --from T1 --to T2`` plans with ``plan_backfill`` and creates the Jobs
of ``BackfillPlan.new``. Each run has a logical time (the fire time it stands for), passed to
the job in ``THRESHER_LOGICAL_TIME`` and recorded on the Job; its name is a function of that
time (``runnames.backfill_job_name``), so a second call over the same window creates nothing:
the Jobs it would create exist already (or are recorded in status after the Job was cleaned up).

The window is half-open, ``[from, to)``: backfilling Monday and then Tuesday, each as
``00:00 -> 00:00``, runs every fire time once. It must lie in the past (a run for a time that has
not come yet is the schedule's job) and hold at most ``MAX_BACKFILL_RUNS`` fire times, so a
typo in a year cannot start thousands of Jobs.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from thresher.api import cron, interval
from thresher.api.runnames import backfill_job_name, format_logical_time, parse_instant

if TYPE_CHECKING:  # the spec's fields are read, the module is not needed at run time
    from thresher.api.schedule import CollectionScheduleSpec

MAX_BACKFILL_RUNS = 100  # the CronJob controller also gives up counting beyond 100 missed runs


class BackfillError(ValueError):
    """A backfill request that is refused; the text says what is allowed."""


@dataclass(frozen=True)
class BackfillRun:
    """One run to create: its logical time, Job name and the environment value it gets."""

    logical_time: datetime
    job_name: str

    @property
    def logical_time_value(self) -> str:
        return format_logical_time(self.logical_time)


@dataclass(frozen=True)
class BackfillPlan:
    """All runs of the window, oldest first, and those not created yet (what to create now)."""

    runs: tuple[BackfillRun, ...]
    new: tuple[BackfillRun, ...]


def fire_times(schedule: str, tz: str | None, anchor: str | None, start: datetime, end: datetime,
               limit: int) -> list[datetime]:
    """Fire times in ``[start, end)`` of a resolved cron expression or an ``@every`` interval,
    oldest first, at most ``limit`` (the work is bounded by ``limit``)."""
    if interval.is_interval(schedule):
        iv = interval.parse(schedule, anchor, tz)
        times = interval.due_times(iv, start - timedelta(microseconds=1), end, limit + 1)
    else:
        # cron.missed_runs looks in (since, now]; from one second earlier it starts at `start`.
        times = cron.missed_runs(schedule, tz, start - timedelta(seconds=1), end, limit + 1)
    return [t for t in times if start <= t < end][:limit]


def plan_backfill(schedule_name: str, schedule: str, tz: str | None, anchor: str | None,
                  start: datetime, end: datetime, now: datetime, existing_job_names: Collection[str],
                  cap: int = MAX_BACKFILL_RUNS) -> BackfillPlan:
    """The runs that backfill ``[start, end)``; BackfillError with a one-line message if refused.

    ``schedule`` is resolved (no ``H``; the status's effectiveSchedule) or ``@every ...``.
    ``existing_job_names``: the schedule's Jobs that exist and the job names in its status.
    """
    for name, t in (("--from", start), ("--to", end)):
        if t.tzinfo is None:
            raise BackfillError(f"{name} needs a time zone offset, such as 2026-05-01T00:00:00Z")
    if end <= start:
        raise BackfillError(f"--to {format_logical_time(end)} must be after --from {format_logical_time(start)}")
    if end > now:
        raise BackfillError(f"--to {format_logical_time(end)} is in the future; backfill covers past times "
                            f"only (up to {format_logical_time(now)})")
    try:
        times = fire_times(schedule, tz, anchor, start, end, cap + 1)
    except (cron.CronError, interval.IntervalError) as err:
        raise BackfillError(f"schedule {schedule!r}: {err}") from err
    if len(times) > cap:
        raise BackfillError(f"the window {format_logical_time(start)} to {format_logical_time(end)} holds more "
                            f"than {cap} fire times; backfill at most {cap} runs per call (split the window)")
    runs = tuple(BackfillRun(t.astimezone(UTC), backfill_job_name(schedule_name, t)) for t in times)
    existing = set(existing_job_names)
    return BackfillPlan(runs=runs, new=tuple(r for r in runs if r.job_name not in existing))


def plan_for_spec(spec: CollectionScheduleSpec, namespace: str, name: str, start: datetime, end: datetime,
                  now: datetime, existing_job_names: Collection[str]) -> BackfillPlan:
    """``plan_backfill`` for a schedule's spec: what the CLI checks and the operator creates alike."""
    effective = spec.effective_schedule(namespace, name)
    if effective is None:
        raise BackfillError(f"{name} has no schedule (runAt only): there are no fire times to backfill")
    return plan_backfill(name, effective, spec.time_zone, spec.interval_anchor, start, end, now, existing_job_names)


def request_value(start: datetime, end: datetime, token: str) -> str:
    """The ``thresher.dev/backfill`` annotation's value (a new token makes a repeated window a new request)."""
    return json.dumps({"from": format_logical_time(start), "to": format_logical_time(end), "token": token})


def parse_request(value: str) -> tuple[datetime, datetime]:
    """The window of a ``thresher.dev/backfill`` annotation; BackfillError with one line otherwise."""
    try:
        raw = json.loads(value)
        return parse_instant(raw["from"], "from"), parse_instant(raw["to"], "to")
    except (ValueError, KeyError, TypeError) as err:
        raise BackfillError(f"the backfill annotation must be JSON with RFC 3339 from and to: {err}") from err
