"""Backfill: one run per fire time of a schedule in a past window, as pure functions (issue 17).

``thresher backfill NAME --from T1 --to T2`` plans with ``plan_backfill`` and creates the Jobs
of ``BackfillPlan.new``. Each run has a logical time (the fire time it stands for), passed to
the job in ``THRESHER_LOGICAL_TIME`` and recorded on the Job; its name is a function of that
time (``runnames.backfill_job_name``), so a second call over the same window creates nothing:
the Jobs it would create exist already (or are recorded in status after the Job was cleaned up).
Names alone forget: the CronJob controller deletes finished Jobs beyond its history limits and
recentRuns keeps only the newest runs. So the operator also records each window it backfilled in
``status.backfilled`` (``merge_windows``), and a run whose logical time lies in a recorded window
is never new again, whatever became of its Job.

The window is half-open, ``[from, to)``: backfilling Monday and then Tuesday, each as
``00:00 -> 00:00``, runs every fire time once. It must lie in the past (a run for a time that has
not come yet is the schedule's job) and hold at most ``MAX_BACKFILL_RUNS`` fire times, so a
typo in a year cannot start thousands of Jobs.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from thresher.api import cron, interval
from thresher.api.runnames import backfill_job_name, format_logical_time, parse_instant

MAX_BACKFILL_RUNS = 100  # the CronJob controller also gives up counting beyond 100 missed runs
MAX_BACKFILLED_WINDOWS = 20  # status.backfilled: merged windows kept, the newest (by end) first to stay

Window = tuple[datetime, datetime]  # half-open [start, end), time zone aware


class ScheduleSpec(Protocol):
    """What planning reads of a ``schedule.CollectionScheduleSpec`` (a Protocol: the status
    model imports this module for its bounds, so this one does not import it back)."""

    time_zone: str | None
    interval_anchor: str | None

    def effective_schedule(self, namespace: str, name: str) -> str | None: ...


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


def merge_windows(windows: Iterable[Window], start: datetime, end: datetime,
                  cap: int = MAX_BACKFILLED_WINDOWS) -> list[Window]:
    """``windows`` with ``[start, end)`` added: their union as half-open intervals, sorted, with
    overlapping and adjacent ones merged; beyond ``cap`` windows the newest (by end) are kept.

    Bounds are cut to whole seconds inwards (start up, end down), as status stores them, so a
    stored window never covers a time the backfill did not."""
    def inward(s: datetime, e: datetime) -> Window:
        s, e = s.astimezone(UTC), e.astimezone(UTC)
        ceil = s.replace(microsecond=0) + (timedelta(seconds=1) if s.microsecond else timedelta())
        return ceil, e.replace(microsecond=0)

    merged: list[Window] = []
    for s, e in sorted(w for w in (inward(*w) for w in [*windows, (start, end)]) if w[0] < w[1]):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged[-cap:] if cap > 0 else []  # disjoint and sorted: the last ones end newest


def in_windows(t: datetime, windows: Iterable[Window]) -> bool:
    return any(s <= t < e for s, e in windows)


def plan_backfill(schedule_name: str, schedule: str, tz: str | None, anchor: str | None,
                  start: datetime, end: datetime, now: datetime, existing_job_names: Collection[str],
                  cap: int = MAX_BACKFILL_RUNS, done: Collection[Window] = ()) -> BackfillPlan:
    """The runs that backfill ``[start, end)``; BackfillError with a one-line message if refused.

    ``schedule`` is resolved (no ``H``; the status's effectiveSchedule) or ``@every ...``.
    ``existing_job_names``: the schedule's Jobs that exist and the job names in its status.
    ``done``: the windows backfilled before (status.backfilled); their runs are not new.
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
    return BackfillPlan(runs=runs, new=tuple(r for r in runs if r.job_name not in existing
                                             and not in_windows(r.logical_time, done)))


def plan_for_spec(spec: ScheduleSpec, namespace: str, name: str, start: datetime, end: datetime,
                  now: datetime, existing_job_names: Collection[str], done: Collection[Window] = ()) -> BackfillPlan:
    """``plan_backfill`` for a schedule's spec: what the CLI checks and the operator creates alike."""
    effective = spec.effective_schedule(namespace, name)
    if effective is None:
        raise BackfillError(f"{name} has no schedule (runAt only): there are no fire times to backfill")
    return plan_backfill(name, effective, spec.time_zone, spec.interval_anchor, start, end, now, existing_job_names,
                         done=done)


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
