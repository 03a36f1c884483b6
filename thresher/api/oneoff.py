"""One-off runs (``spec.runAt``), as pure functions (issue 17).

A schedule with ``runAt`` gets exactly one run at that time (beside its cron or interval runs,
if it has any). The run's Job is named like any due time's (``runnames.scheduled_job_name``),
so firing it twice creates one Job, and a ``runAt`` that falls on one of the schedule's own
fire times is that run. It is done once a run whose logical time is ``runAt`` is recorded.
A finished one-off schedule (``runAt`` and no ``schedule``) may be deleted ``ttlSecondsAfterFinished``
after its run finished, like a Job's TTL.

Every function takes ``now`` as a parameter; nothing reads the clock.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from thresher.api.runnames import format_logical_time as _fmt
from thresher.api.runnames import parse_instant

# Without spec.startingDeadlineSeconds, how far in the past a new runAt may lie: enough for a
# "now" typed by hand to reach the API server, too little for a mistyped day to start a run.
DEFAULT_RUN_AT_GRACE = timedelta(minutes=5)

OneOffState = Literal["Waiting", "Due", "Done", "Expired"]


def parse_run_at(text: str) -> datetime:
    """``thresher run NAME --at TIME``: RFC 3339 with an offset; ValueError with a one-line message."""
    return parse_instant(text, "runAt")


def validate_run_at(run_at: datetime, now: datetime, starting_deadline_seconds: int | None) -> str | None:
    """Why a newly set ``runAt`` is refused, or None. For the CLI and an admission check (CEL has no clock).

    A time in the past is accepted within the starting deadline (it fires at once), else refused;
    without a deadline within ``DEFAULT_RUN_AT_GRACE``. Seconds are refused because runs start
    on whole minutes and the Job's name is the minute.
    """
    if run_at.second or run_at.microsecond:
        return f"runAt {_fmt(run_at)} must be on a whole minute (runs start on whole minutes)"
    grace = (DEFAULT_RUN_AT_GRACE if starting_deadline_seconds is None
             else timedelta(seconds=starting_deadline_seconds))
    if run_at < now - grace:
        allowed = ("startingDeadlineSeconds" if starting_deadline_seconds is not None
                   else "the default of 5 minutes (no startingDeadlineSeconds set)")
        return (f"runAt {_fmt(run_at)} is {_ago(now - run_at)} in the past, beyond {allowed}: "
                f"give a time after {_fmt(now - grace)}, or use backfill for past runs")
    return None


def one_off_state(run_at: datetime, recorded_logical_times: Collection[datetime], now: datetime,
                  starting_deadline_seconds: int | None) -> OneOffState:
    """Where the one-off run stands: fire it now (``Due``) or not.

    ``recorded_logical_times``: the logical times of the runs of this schedule that exist (a
    Job) or were recorded (status); ``Done`` as soon as ``run_at`` is among them, so it fires
    once. ``Expired``: the operator saw it only after the starting deadline (down, or the
    cluster was); reported, never fired late. Without a deadline it fires however late, as a
    CronJob does.
    """
    if run_at in {t.astimezone(UTC) for t in recorded_logical_times}:
        return "Done"
    if now < run_at:
        return "Waiting"
    if starting_deadline_seconds is not None and (now - run_at).total_seconds() > starting_deadline_seconds:
        return "Expired"
    return "Due"


@dataclass(frozen=True)
class Expiry:
    """When a finished one-off schedule may be deleted, and whether that time has come."""

    delete_at: datetime
    due: bool


def ttl_expiry(finished_at: datetime | None, ttl_seconds_after_finished: int | None, now: datetime) -> Expiry | None:
    """None while the run has not finished or no TTL is set (keep the schedule for ever)."""
    if finished_at is None or ttl_seconds_after_finished is None:
        return None
    delete_at = finished_at + timedelta(seconds=ttl_seconds_after_finished)
    return Expiry(delete_at=delete_at, due=now >= delete_at)


def _ago(delta: timedelta) -> str:
    return str(timedelta(seconds=int(delta.total_seconds())))
