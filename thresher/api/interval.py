"""Interval schedules (``@every 90m``), as pure functions (issue 17).

An interval is *elapsed* time: ``@every 90m`` means 90 real minutes between runs, also across
a daylight-saving change (a wall clock would show 01:30 -> 03:00 -> 05:30 on the night the
clocks go forward, and that is intended: the gap is what an interval promises). The optional
anchor fixes the phase: due times are ``anchor + k * interval`` for every integer ``k`` (the
anchor is a phase, not a start: runs before it are due too, exactly as with a cron
expression). Without an anchor the phase is 1970-01-01T00:00 in the schedule's time zone, so
``@every 90m`` in UTC fires at 00:00, 01:30, 03:00, ... every day.

An anchor is RFC 3339 with an offset (an instant), or a local date-time without one,
read in ``spec.timeZone`` (UTC when unset). A local time that does not exist (inside a
spring-forward gap) is refused; one that exists twice (fall-back) means the first.

Where the interval divides an hour, or is a whole number of hours dividing a day, it is an
ordinary cron expression evaluated in UTC (``as_cron``): the CronJob fires it and the
operator only watches, as for any cron schedule. Otherwise the operator fires the runs itself
(``fire_decision``); due times and Job names are deterministic, so a restart neither skips nor
doubles a run.

Every function takes the time as a parameter and never reads the clock. Datetimes in and out
are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "INTERVAL_PATTERN",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "CronMapping",
    "FireDecision",
    "Interval",
    "IntervalError",
    "as_cron",
    "due_after",
    "due_times",
    "fire_decision",
    "is_interval",
    "parse_anchor",
    "parse_interval",
    "previous_due",
    "validate_interval",
]

PREFIX = "@every"
MIN_INTERVAL = timedelta(minutes=1)
MAX_INTERVAL = timedelta(days=366)  # beyond a year, a one-off run (runAt) says it better
# The phase when no anchor is given (read in the schedule's zone).
DEFAULT_ANCHOR = "1970-01-01T00:00:00"

_TERM = re.compile(r"(\d+)([hms])")
# For CEL (``self.matches``, RE2) beside the cron pattern in schedule.py's SCHEDULE_REGEX: the
# syntax only; bounds (>= 1 minute, whole minutes, <= 366 days) are checked by parse_interval.
INTERVAL_PATTERN = r"\s*@every\s+(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?\s*"
_UNITS = {"h": 3600, "m": 60, "s": 1}
_DAY_MINUTES = 24 * 60


class IntervalError(ValueError):
    """An ``@every`` expression or anchor that Thresher does not accept; the text says what is allowed."""


@dataclass(frozen=True)
class Interval:
    """A parsed interval: the gap between runs and the instant that fixes their phase (UTC)."""

    every: timedelta
    anchor: datetime

    @property
    def minutes(self) -> int:
        return int(self.every.total_seconds()) // 60


def is_interval(expr: object) -> bool:
    """True for ``@every ...`` (valid or not): the schedule is meant as an interval, not cron."""
    return isinstance(expr, str) and expr.strip().startswith(PREFIX)


def parse_interval(expr: str) -> timedelta:
    """``@every 90m`` / ``@every 1h30m`` -> the gap; raises IntervalError with a human message.

    Go duration syntax, as CronJob users know it from robfig/cron's ``@every``, limited to
    whole numbers of h, m and s that add up to whole minutes between 1 minute and 366 days.
    """
    if not is_interval(expr):
        raise IntervalError(f"an interval looks like '@every 90m' or '@every 1h30m', got {expr!r}")
    text = expr.strip()[len(PREFIX):]
    if not text[:1].isspace() or not text.strip():
        raise IntervalError("@every needs a duration after a space, such as '@every 90m' or '@every 1h30m'")
    duration = text.strip()
    if _TERM.sub("", duration) != "" or not duration:
        raise IntervalError(f"@every {duration!r} is not a duration: use whole numbers with units h, m, s, "
                            "such as 90m, 1h30m or 2h")
    units = [unit for _, unit in _TERM.findall(duration)]
    if len(set(units)) != len(units) or units != sorted(units, key="hms".index):
        raise IntervalError(f"@every {duration!r}: give each unit once, largest first (h, then m, then s)")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _TERM.findall(duration))
    if seconds < MIN_INTERVAL.total_seconds():
        raise IntervalError(f"@every {duration} is shorter than the minimum of 1 minute")
    if seconds % 60:
        raise IntervalError(f"@every {duration} is not a whole number of minutes (runs start on whole minutes)")
    if seconds > MAX_INTERVAL.total_seconds():
        raise IntervalError(f"@every {duration} is longer than the maximum of 366 days (8784h); "
                            "use runAt for a single run")
    return timedelta(seconds=seconds)


def _zone(tz: str | None) -> ZoneInfo | None:
    if not tz:
        return None
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise IntervalError(f"unknown time zone {tz!r}") from err


def parse_anchor(text: str | None, tz: str | None) -> datetime:
    """The anchor as a UTC instant: RFC 3339 with offset, or a local date-time read in ``tz``."""
    raw = DEFAULT_ANCHOR if text is None else text
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError) as err:
        raise IntervalError(f"anchor {text!r} is not a date-time: use RFC 3339 such as 2026-03-01T06:00:00Z, "
                            "or a local time such as 2026-03-01T06:00:00 read in spec.timeZone") from err
    if parsed.second or parsed.microsecond:
        raise IntervalError(f"anchor {text!r} must be on a whole minute (runs start on whole minutes)")
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    zone = _zone(tz)
    if zone is None:
        return parsed.replace(tzinfo=UTC)
    local = parsed.replace(tzinfo=zone, fold=0)
    # A wall time in a spring-forward gap does not round-trip through UTC.
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != parsed:
        raise IntervalError(f"anchor {text!r} does not exist in {tz} (the clocks skip it); "
                            "pick another time or give an offset")
    return local.astimezone(UTC)


def parse(expr: str, anchor: str | None = None, tz: str | None = None) -> Interval:
    """Parse the interval and its anchor together."""
    return Interval(every=parse_interval(expr), anchor=parse_anchor(anchor, tz))


def validate_interval(expr: str, anchor: str | None = None, tz: str | None = None) -> str | None:
    """A human message saying what is wrong, or None for a usable interval (for admission and the CLI)."""
    try:
        parse(expr, anchor, tz)
    except IntervalError as err:
        return str(err)
    return None


# --- cron where cron can do it ------------------------------------------------------------------


@dataclass(frozen=True)
class CronMapping:
    """The cron expression that fires exactly the interval's due times, and the zone to read it in."""

    schedule: str
    time_zone: str = "UTC"  # elapsed time: UTC has no DST, so wall-clock steps equal real ones


def as_cron(interval: Interval) -> CronMapping | None:
    """The equivalent cron expression, or None when the operator has to fire the runs itself.

    Equivalent means the same instants: the interval divides an hour (``@every 15m`` ->
    ``r/15 * * * *``) or is whole hours dividing a day (``@every 6h`` -> ``m r/6 * * *``), with the
    anchor's phase, in UTC. 90m, 7h, 45m... are not (no single cron expression repeats them).
    """
    minutes = interval.minutes
    since_midnight = interval.anchor.hour * 60 + interval.anchor.minute
    if 60 % minutes == 0:
        if minutes == 60:
            return CronMapping(f"{interval.anchor.minute} * * * *")
        return CronMapping(f"{interval.anchor.minute % minutes}/{minutes} * * * *")
    if minutes % 60 == 0 and _DAY_MINUTES % minutes == 0:
        hours = minutes // 60
        if hours == 24:
            return CronMapping(f"{interval.anchor.minute} {interval.anchor.hour} * * *")
        return CronMapping(f"{interval.anchor.minute} {(since_midnight // 60) % hours}/{hours} * * *")
    return None


# --- due times ----------------------------------------------------------------------------------


def _aware(name: str, t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return t.astimezone(UTC)


def _index(interval: Interval, t: datetime) -> int:
    """k of the last due time at or before ``t`` (floor division: exact, no float drift)."""
    return (_aware("t", t) - interval.anchor) // interval.every


def previous_due(interval: Interval, at: datetime) -> datetime:
    """The last due time at or before ``at``."""
    return interval.anchor + _index(interval, at) * interval.every


def due_after(interval: Interval, after: datetime) -> datetime:
    """The first due time strictly after ``after`` (what status.nextScheduleTime shows)."""
    return interval.anchor + (_index(interval, after) + 1) * interval.every


def due_times(interval: Interval, since: datetime, until: datetime, limit: int) -> list[datetime]:
    """Due times in ``(since, until]``, oldest first, at most ``limit`` (work bounded by ``limit``)."""
    out: list[datetime] = []
    t = due_after(interval, since)
    until = _aware("until", until)
    while t <= until and len(out) < limit:
        out.append(t)
        t += interval.every
    return out


@dataclass(frozen=True)
class FireDecision:
    """What the operator does now for an interval it fires itself.

    ``fire``: the due time to create a Job for now (None: nothing). ``missed``: how many due
    times since the last fired one will not run (overtaken by a later one, or later than
    ``startingDeadlineSeconds``), as the CronJob controller skips them. ``next_due``: when to
    look again (status.nextScheduleTime).
    """

    fire: datetime | None
    missed: int
    next_due: datetime


def fire_decision(interval: Interval, last_fired: datetime | None, created: datetime, now: datetime,
                  starting_deadline_seconds: int | None) -> FireDecision:
    """The CronJob controller's rule, for intervals: fire the most recent due time not yet fired.

    Due times count from ``last_fired`` (status.lastScheduleTime, the due time of the last Job
    created) or, before the first run, from ``created`` (due times before the schedule existed
    are not owed). Of several due times passed meanwhile (operator down), only the newest runs;
    it still runs however late unless ``starting_deadline_seconds`` says it is too late.

    Restart-safe: the fired due time becomes ``last_fired`` only once its Job exists, and the
    Job's name is a function of the due time, so a crash between "create Job" and "write status"
    repeats the create (AlreadyExists: nothing doubles) and a crash before it fires it then.
    """
    now = _aware("now", now)
    since = _aware("last_fired", last_fired) if last_fired is not None else _aware("created", created)
    next_due = due_after(interval, now)
    owed = max(0, _index(interval, now) - _index(interval, since))
    if owed == 0:
        return FireDecision(fire=None, missed=0, next_due=next_due)
    latest = previous_due(interval, now)
    if starting_deadline_seconds is not None and (now - latest).total_seconds() > starting_deadline_seconds:
        return FireDecision(fire=None, missed=owed, next_due=next_due)
    return FireDecision(fire=latest, missed=owed - 1, next_due=next_due)
