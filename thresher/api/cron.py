"""Cron and time logic for CollectionSchedules, as pure functions.

Semantics follow what a Kubernetes CronJob does, because the CronJob
controller is what actually fires our jobs: it parses ``spec.schedule`` with
robfig/cron v3's standard parser and steps through time with that library's
``SpecSchedule.Next``. This module is a port of both, so the times we show
(``status.nextScheduleTime``) and alert on (staleness, missed runs) are the
times the controller uses:

* five fields, minute hour day-of-month month day-of-week, separated by
  whitespace; ``*``, ``?`` (same as ``*``), lists ``a,b``, ranges ``a-b``,
  steps ``*/n``, ``a-b/n`` and ``a/n`` (= ``a-max/n``); month names JAN-DEC and
  day names SUN-SAT, case-insensitive; day-of-week is 0-6 (7 is rejected);
* macros @yearly @annually @monthly @weekly @daily @midnight @hourly
  (``@every`` is not accepted: it has no fixed phase to alert on);
* day-of-month and day-of-week: when either field starts with ``*`` or ``?``
  (and has no step above 1) both must match, otherwise either may match;
* time zones: wall-clock times that do not exist (spring forward) are skipped
  that day; wall-clock times in a repeated hour (fall back) fire at both
  instants, exactly like robfig/cron and hence Kubernetes;
* a schedule that finds no time within five years never fires.

Thresher adds Jenkins-style hashed values in the minute and hour fields:
``H``, ``H(a-b)``, ``H/n`` and ``H(a-b)/n``. They resolve to fixed numbers
derived from a SHA-256 of a seed (the schedule's ``namespace/name``), so many
``H * * * *`` schedules spread over the hour while each keeps its minute for
ever. The resolved expression is what goes into the CronJob.

Every function takes the time as a parameter and never reads the clock.
Datetimes in and out are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "MACROS",
    "CronError",
    "CronSpec",
    "expected_interval",
    "is_stale",
    "missed_runs",
    "next_run",
    "parse",
    "previous_run",
    "resolve_hashed",
    "validate_schedule",
]

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# robfig/cron gives up after five years; so do we (and "never fires" means that).
_YEAR_LIMIT = 5
# Bound on the fire times missed_runs walks, whatever limit it is given.
_MAX_STEPS = 100_000

_MONTH_NAMES = {n: i for i, n in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_DOW_NAMES = {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}


@dataclass(frozen=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Bounds("minute", 0, 59),
    _Bounds("hour", 0, 23),
    _Bounds("day-of-month", 1, 31),
    _Bounds("month", 1, 12, _MONTH_NAMES),
    _Bounds("day-of-week", 0, 6, _DOW_NAMES),
)
_HASHABLE = {"minute", "hour"}
_HASH_TERM = re.compile(r"^H(?:\((\d+)-(\d+)\))?(?:/(\d+))?$")


class CronError(ValueError):
    """A schedule expression that Kubernetes (or Thresher's H syntax) does not accept."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed five-field expression: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    # robfig's "starBit": the field began with * or ? (and had no step > 1).
    days_star: bool
    weekdays_star: bool

    def day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow


# --- parsing -------------------------------------------------------------------------------------


def _split(expr: str) -> list[str]:
    if not isinstance(expr, str) or not expr.strip():
        raise CronError("schedule is empty")
    if "TZ=" in expr:
        raise CronError("schedule must not contain CRON_TZ= or TZ=; set spec.timeZone instead")
    text = expr
    if text.startswith("@"):  # robfig matches descriptors exactly: no case folding, no spaces
        macro = MACROS.get(text)
        if macro is None:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
        text = macro
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"schedule needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    return fields


def _number(text: str, b: _Bounds) -> int:
    if b.names and text.lower() in b.names:
        return b.names[text.lower()]
    if not text.isdigit() or not text.isascii():
        raise CronError(f"{b.name}: {text!r} is not a number")
    return int(text)


def _range(term: str, b: _Bounds) -> tuple[set[int], bool]:
    """One comma-separated term of a field: its values, and whether it sets robfig's starBit."""
    range_and_step = term.split("/")
    if len(range_and_step) > 2:
        raise CronError(f"{b.name}: too many slashes in {term!r}")
    low_high = range_and_step[0].split("-")
    star = False
    if low_high[0] in ("*", "?"):
        if len(low_high) > 1:
            raise CronError(f"{b.name}: {term!r} is not a valid range")
        start, end, star = b.low, b.high, True
    else:
        if len(low_high) > 2:
            raise CronError(f"{b.name}: too many hyphens in {term!r}")
        start = _number(low_high[0], b)
        end = _number(low_high[1], b) if len(low_high) == 2 else start
    step = 1
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], _Bounds(f"{b.name} step", 0, 0))
        if len(low_high) == 1 and not star:
            end = b.high  # "a/n" means "a-max/n"
        if step > 1:
            star = False
    if start < b.low or end > b.high:
        raise CronError(f"{b.name}: {term!r} is outside {b.low}-{b.high}")
    if start > end:
        raise CronError(f"{b.name}: range {term!r} starts after it ends")
    if step == 0:
        raise CronError(f"{b.name}: step in {term!r} must be a positive number")
    return set(range(start, end + 1, step)), star


def _field(text: str, b: _Bounds) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for term in text.split(","):
        if not term:
            raise CronError(f"{b.name}: empty list element in {text!r}")
        if term.startswith("H"):
            raise CronError(f"{b.name}: {term!r} is a hashed value that was not resolved")
        got, is_star = _range(term, b)
        values |= got
        star = star or is_star
    return frozenset(values), star


def parse(expr: str) -> CronSpec:
    """Parse a resolved expression (no ``H``) or macro; raises CronError with a human message."""
    fields = _split(expr)
    parsed = [_field(text, b) for text, b in zip(fields, _FIELDS, strict=True)]
    return CronSpec(
        minutes=parsed[0][0], hours=parsed[1][0], days=parsed[2][0], months=parsed[3][0],
        weekdays=parsed[4][0], days_star=parsed[2][1], weekdays_star=parsed[4][1],
    )


# --- hashed values (H) ---------------------------------------------------------------------------


def _hash_value(seed: str, field: str, span: int) -> int:
    # SHA-256, not hash(): Python's str hash is salted per process, and the minute must never move.
    digest = hashlib.sha256(f"{seed}\x00{field}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % span


def _resolve_term(term: str, b: _Bounds, seed: str) -> str:
    match = _HASH_TERM.match(term)
    if not term.startswith("H"):  # no month or day name starts with H
        return term
    if match is None:
        raise CronError(f"{b.name}: {term!r} is not a valid hashed value (H, H(a-b), H/n or H(a-b)/n)")
    if b.name not in _HASHABLE:
        raise CronError(f"{b.name}: H is only supported in the minute and hour fields")
    low, high = b.low, b.high
    if match.group(1) is not None:
        low, high = int(match.group(1)), int(match.group(2))
        if low < b.low or high > b.high or low > high:
            raise CronError(f"{b.name}: H({low}-{high}) must be a range within {b.low}-{b.high}")
    if match.group(3) is None:
        return str(low + _hash_value(seed, b.name, high - low + 1))
    step = int(match.group(3))
    if step < 1:
        raise CronError(f"{b.name}: step in {term!r} must be a positive number")
    start = low + _hash_value(seed, b.name, min(step, high - low + 1))
    return f"{start}-{high}/{step}"


def resolve_hashed(expr: str, seed: str) -> str:
    """Replace ``H`` terms in the minute and hour fields by numbers derived from ``seed``.

    ``seed`` is the schedule's ``namespace/name``. Expressions without ``H`` (and
    macros) come back unchanged, so the result can always go into a CronJob.
    """
    if isinstance(expr, str) and expr.startswith("@"):
        return expr
    fields = _split(expr)
    out = []
    for text, b in zip(fields, _FIELDS, strict=True):
        out.append(",".join(_resolve_term(term, b, seed) for term in text.split(",")))
    return " ".join(out)


def validate_schedule(expr: str) -> str | None:
    """A human message saying what is wrong with ``expr``, or None when it is a usable schedule.

    Accepts ``H`` terms (any seed resolves them to a valid value) and rejects
    expressions that never fire, such as ``0 0 30 2 *`` (searched five years ahead).
    """
    try:
        resolved = resolve_hashed(expr, seed="")
        spec = parse(resolved)
    except CronError as err:
        return str(err)
    if not _can_fire(spec):
        return f"schedule {expr!r} never fires (no matching day in any allowed month)"
    return None


def _can_fire(spec: CronSpec) -> bool:
    # Searching ahead from a fixed leap-year start keeps this pure; robfig's own five-year
    # limit bounds the work (about 2,000 day steps at worst).
    return _next(spec, UTC, datetime(2024, 1, 1, tzinfo=UTC)) is not None


# --- time arithmetic the way Go's time package does it -------------------------------------------


def _zone(tz: str | None) -> tzinfo:
    if tz is None or tz == "":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise CronError(f"unknown time zone {tz!r}") from err


def _add(t: datetime, delta: timedelta) -> datetime:
    # Absolute (elapsed-time) addition, like Go's Time.Add; Python's aware + is wall-clock.
    return (t.astimezone(UTC) + delta).astimezone(t.tzinfo)


def _wall(year: int, month: int, day: int, hour: int, minute: int, zone: tzinfo) -> datetime:
    """Go's time.Date: normalise overflowing fields, then resolve the wall time in ``zone``."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    naive = datetime(year, month, 1) + timedelta(days=day - 1, hours=hour, minutes=minute)
    as_utc = naive.replace(tzinfo=UTC)
    # Go looks up the offset at "wall time read as UTC", then re-checks at the implied instant.
    first = as_utc.astimezone(zone).utcoffset()
    offset = (as_utc - first).astimezone(zone).utcoffset()
    return (as_utc - offset).astimezone(zone)


def _scan(t: datetime, added: bool, matches: Callable[[datetime], bool], truncate: Callable[[datetime], datetime],
          step: Callable[[datetime], datetime], wraps: Callable[[datetime], bool]) -> tuple[datetime, bool, bool]:
    """One of robfig's field loops: step ``t`` until the field matches, truncating the smaller
    fields the first time anything moves. Returns (t, added, wrapped): wrapped means "goto WRAP"."""
    while not matches(t):
        if not added:
            added = True
            t = truncate(t)
        t = step(t)
        if wraps(t):
            return t, added, True
    return t, added, False


def _next_day(t: datetime, zone: tzinfo) -> datetime:
    t = _wall(t.year, t.month, t.day + 1, t.hour, t.minute, zone)
    # Midnight may not exist (DST at 00:00): robfig nudges to the day's first hour.
    if t.hour != 0:
        t = _add(t, timedelta(hours=24 - t.hour) if t.hour > 12 else timedelta(hours=-t.hour))
    return t


def _next(spec: CronSpec, zone: tzinfo, after: datetime) -> datetime | None:
    """robfig/cron v3 ``SpecSchedule.Next``, loop for loop (its seconds field is fixed at 0)."""
    loops = (
        (lambda t: t.month in spec.months, lambda t: _wall(t.year, t.month, 1, 0, 0, zone),
         lambda t: _wall(t.year, t.month + 1, t.day, t.hour, t.minute, zone), lambda t: t.month == 1),
        (spec.day_matches, lambda t: _wall(t.year, t.month, t.day, 0, 0, zone),
         lambda t: _next_day(t, zone), lambda t: t.day == 1),
        (lambda t: t.hour in spec.hours, lambda t: _wall(t.year, t.month, t.day, t.hour, 0, zone),
         lambda t: _add(t, timedelta(hours=1)), lambda t: t.hour == 0),
        (lambda t: t.minute in spec.minutes, lambda t: _add(t, -timedelta(seconds=t.second)),
         lambda t: _add(t, timedelta(minutes=1)), lambda t: t.minute == 0),
        # robfig steps seconds one by one and wraps when they roll over to 0; jump there.
        (lambda t: t.second == 0, lambda t: t, lambda t: _add(t, timedelta(seconds=60 - t.second)),
         lambda t: True),
    )
    t = after.astimezone(zone)
    t = _add(t, timedelta(seconds=1, microseconds=-t.microsecond))  # the upcoming whole second
    added = False
    year_limit = t.year + _YEAR_LIMIT
    while t.year <= year_limit:  # each pass is robfig's "WRAP:" label
        for matches, truncate, step, wraps in loops:
            t, added, wrapped = _scan(t, added, matches, truncate, step, wraps)
            if wrapped:
                break
        else:
            return t
    return None


# --- the public time functions -------------------------------------------------------------------


def _aware(name: str, t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return t


def next_run(expr: str, tz: str | None, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``, in UTC; None if none within five years.

    ``expr`` must be resolved (no ``H``); ``tz`` is an IANA name, None for UTC.
    """
    result = _next(parse(expr), _zone(tz), _aware("after", after))
    return None if result is None else result.astimezone(UTC)


def previous_run(expr: str, tz: str | None, at: datetime) -> datetime | None:
    """The last fire time at or before ``at``, in UTC; None if none in the five years before."""
    spec, zone = parse(expr), _zone(tz)
    at = _aware("at", at).astimezone(UTC)
    # Start with the gap between the next two fire times: for regular schedules the first
    # window already holds the previous one; irregular ones double it a few times.
    window = timedelta(minutes=1)
    following = _next(spec, zone, at)
    then = _next(spec, zone, following) if following is not None else None
    if then is not None:
        window = max(window, then - following)
    limit = timedelta(days=366 * _YEAR_LIMIT)
    while window <= 2 * limit:
        lo = at - window
        first = _next(spec, zone, lo)
        if first is not None and first <= at:
            return _last_before(spec, zone, lo, at).astimezone(UTC)
        window *= 2  # no fire time in the window yet
    return None


def _last_before(spec: CronSpec, zone: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The last fire time in ``(lo, hi]``, given there is one: bisection, about 20 steps."""
    at = hi
    # Invariants: a fire time lies in (lo, at]; none lies in (hi, at].
    while hi - lo > timedelta(seconds=30):  # fire times are whole minutes apart
        mid = lo + (hi - lo) / 2
        found = _next(spec, zone, mid)
        if found is not None and found <= at:
            lo = mid
        else:
            hi = mid
    return _next(spec, zone, lo)


def expected_interval(expr: str, tz: str | None, at: datetime) -> timedelta | None:
    """The gap between the fire times around ``at``: the last one at or before it and the next.

    Without a fire time before ``at``, the gap between the next two. None if the
    schedule never fires.
    """
    after = next_run(expr, tz, at)
    if after is None:
        return None
    before = previous_run(expr, tz, at)
    if before is not None:
        return after - before
    following = next_run(expr, tz, after)
    return None if following is None else following - after


def missed_runs(expr: str, tz: str | None, since: datetime, now: datetime, limit: int) -> list[datetime]:
    """Fire times in ``(since, now]``, oldest first, at most ``limit`` of them (UTC).

    A result of exactly ``limit`` times means there may be more; the work is
    bounded by ``limit``, never by the length of the gap.
    """
    spec, zone = parse(expr), _zone(tz)
    now = _aware("now", now)
    out: list[datetime] = []
    t = _next(spec, zone, _aware("since", since))
    while t is not None and t <= now and len(out) < min(limit, _MAX_STEPS):
        out.append(t.astimezone(UTC))
        t = _next(spec, zone, t)
    return out


def is_stale(
    last_success: datetime | None,
    created: datetime,
    expr: str,
    tz: str | None,
    grace: timedelta,
    now: datetime,
) -> bool:
    """Dead-man's switch: no success by the first fire time after the last one, plus ``grace``.

    The reference point is ``last_success`` or, before the first success, ``created``
    (the schedule's creation, or whenever monitoring restarted, e.g. on resume).
    A daily schedule that last succeeded on Monday at 00:05 is stale once Tuesday
    00:00 + grace passes without a success. Schedules that never fire are never stale.
    """
    ref = _aware("last_success", last_success) if last_success is not None else _aware("created", created)
    due = next_run(expr, tz, ref)
    if due is None:
        return False
    return _aware("now", now) > due + grace
