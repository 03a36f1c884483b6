"""Interval schedules (@every): parsing, cron mapping, due times, DST, restarts (issue 17)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.api import cron, interval
from thresher.api.interval import Interval, IntervalError, as_cron, due_after, due_times, fire_decision, previous_due
from thresher.api.runnames import MAX_JOB_NAME, MAX_SCHEDULE_NAME, scheduled_job_name


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def every(expr: str, anchor: str | None = None, tz: str | None = None) -> Interval:
    return interval.parse(expr, anchor, tz)


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "minutes"), [
    ("@every 90m", 90), ("@every 1h30m", 90), ("@every 2h", 120), ("@every 1m", 1), ("@every 60s", 1),
    ("@every 1h0m", 60), ("@every 7h", 420), ("  @every 45m ", 45), ("@every 8784h", 8784 * 60),
])
def test_parse_accepts_go_durations_in_whole_minutes(expr, minutes):
    assert interval.parse_interval(expr) == timedelta(minutes=minutes)


@pytest.mark.parametrize(("expr", "message"), [
    ("@every 30s", "@every 30s is shorter than the minimum of 1 minute"),
    ("@every 0m", "@every 0m is shorter than the minimum of 1 minute"),
    ("@every 90s", "@every 90s is not a whole number of minutes (runs start on whole minutes)"),
    ("@every", "@every needs a duration after a space, such as '@every 90m' or '@every 1h30m'"),
    ("@every5m", "@every needs a duration after a space, such as '@every 90m' or '@every 1h30m'"),
    ("@every 1.5h", "@every '1.5h' is not a duration: use whole numbers with units h, m, s, such as 90m, "
                    "1h30m or 2h"),
    ("@every 5 minutes", "@every '5 minutes' is not a duration: use whole numbers with units h, m, s, such as "
                         "90m, 1h30m or 2h"),
    ("@every 2d", "@every '2d' is not a duration: use whole numbers with units h, m, s, such as 90m, 1h30m or 2h"),
    ("@every -5m", "@every '-5m' is not a duration: use whole numbers with units h, m, s, such as 90m, 1h30m "
                   "or 2h"),
    ("@every 30m1h", "@every '30m1h': give each unit once, largest first (h, then m, then s)"),
    ("@every 8785h", "@every 8785h is longer than the maximum of 366 days (8784h); use runAt for a single run"),
    ("*/5 * * * *", "an interval looks like '@every 90m' or '@every 1h30m', got '*/5 * * * *'"),
])
def test_parse_refuses_with_a_message_saying_what_is_allowed(expr, message):
    """Pins: @every below a minute, zero or garbage must be refused, never fired every 0 s."""
    with pytest.raises(IntervalError) as err:
        interval.parse_interval(expr)
    assert str(err.value) == message
    assert interval.validate_interval(expr) == message


@pytest.mark.parametrize(("anchor", "tz", "message"), [
    ("tomorrow", None, "anchor 'tomorrow' is not a date-time: use RFC 3339 such as 2026-03-01T06:00:00Z, or a "
                       "local time such as 2026-03-01T06:00:00 read in spec.timeZone"),
    ("2026-03-01T06:00:30Z", None, "anchor '2026-03-01T06:00:30Z' must be on a whole minute (runs start on "
                                   "whole minutes)"),
    ("2026-03-08T02:30:00", "America/New_York", "anchor '2026-03-08T02:30:00' does not exist in America/New_York "
                                                "(the clocks skip it); pick another time or give an offset"),
    ("2026-03-01T06:00:00", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
])
def test_bad_anchors_are_refused(anchor, tz, message):
    assert interval.validate_interval("@every 90m", anchor, tz) == message


def test_anchor_local_time_is_read_in_the_zone_with_the_offset_of_its_date():
    # Berlin is UTC+1 in winter, UTC+2 in summer.
    assert interval.parse_anchor("2026-01-15T06:00:00", "Europe/Berlin") == utc(2026, 1, 15, 5, 0)
    assert interval.parse_anchor("2026-07-15T06:00:00", "Europe/Berlin") == utc(2026, 7, 15, 4, 0)
    # An explicit offset wins over the zone; no zone means UTC.
    assert interval.parse_anchor("2026-07-15T06:00:00+00:00", "Europe/Berlin") == utc(2026, 7, 15, 6, 0)
    assert interval.parse_anchor("2026-07-15T06:00:00", None) == utc(2026, 7, 15, 6, 0)
    # Fall back: 01:30 happens twice in New York on 2026-11-01; the first one (EDT, UTC-4) is meant.
    assert interval.parse_anchor("2026-11-01T01:30:00", "America/New_York") == utc(2026, 11, 1, 5, 30)


def test_default_anchor_is_midnight_1970_in_the_zone():
    assert every("@every 90m").anchor == utc(1970, 1, 1)
    assert every("@every 90m", tz="Asia/Kolkata").anchor == utc(1969, 12, 31, 18, 30)


# --- cron mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "anchor", "tz", "schedule"), [
    ("@every 1m", None, None, "0/1 * * * *"),
    ("@every 15m", None, None, "0/15 * * * *"),
    ("@every 15m", "2026-01-01T00:07:00Z", None, "7/15 * * * *"),
    ("@every 20m", "2026-01-01T05:47:00Z", None, "7/20 * * * *"),
    ("@every 1h", "2026-01-01T05:47:00Z", None, "47 * * * *"),
    ("@every 6h", "2026-01-01T05:47:00Z", None, "47 5/6 * * *"),
    ("@every 6h", "2026-01-01T13:10:00Z", None, "10 1/6 * * *"),
    ("@every 24h", "2026-01-01T13:10:00Z", None, "10 13 * * *"),
    # 06:00 in Berlin in January is 05:00 UTC; the CronJob reads the expression in UTC all year.
    ("@every 12h", "2026-01-01T06:00:00", "Europe/Berlin", "0 5/12 * * *"),
])
def test_intervals_that_divide_an_hour_or_a_day_become_cron_in_utc(expr, anchor, tz, schedule):
    mapped = as_cron(every(expr, anchor, tz))
    assert mapped == interval.CronMapping(schedule, "UTC")
    assert cron.validate_schedule(mapped.schedule) is None


@pytest.mark.parametrize("expr", ["@every 90m", "@every 7h", "@every 45m", "@every 25m", "@every 48h",
                                  "@every 1h1m"])
def test_intervals_that_do_not_divide_are_fired_by_the_operator(expr):
    assert as_cron(every(expr)) is None


@settings(max_examples=150, deadline=None)
@given(minutes=st.sampled_from([1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440]),
       anchor=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
       after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)))
def test_the_cron_mapping_fires_exactly_the_due_times(minutes, anchor, after):
    """The CronJob (robfig semantics, cron.next_run) and the interval agree on every next due time."""
    iv = Interval(timedelta(minutes=minutes), anchor.replace(second=0, microsecond=0, tzinfo=UTC))
    mapped = as_cron(iv)
    assert mapped is not None
    after = after.replace(tzinfo=UTC)
    assert cron.next_run(mapped.schedule, mapped.time_zone, after) == due_after(iv, after)


# --- due times ----------------------------------------------------------------------------------


def test_due_times_follow_the_anchor_before_and_after_it():
    iv = every("@every 90m", "2026-05-01T06:15:00Z")
    assert due_after(iv, utc(2026, 5, 1, 6, 15)) == utc(2026, 5, 1, 7, 45)
    assert previous_due(iv, utc(2026, 5, 1, 6, 15)) == utc(2026, 5, 1, 6, 15)
    assert due_after(iv, utc(2026, 5, 1, 5, 0)) == utc(2026, 5, 1, 6, 15)
    assert previous_due(iv, utc(2026, 5, 1, 6, 14, 59)) == utc(2026, 5, 1, 4, 45)  # before the anchor too
    assert due_times(iv, utc(2026, 5, 1, 6, 0), utc(2026, 5, 1, 12, 0), limit=10) == [
        utc(2026, 5, 1, 6, 15), utc(2026, 5, 1, 7, 45), utc(2026, 5, 1, 9, 15), utc(2026, 5, 1, 10, 45)]
    assert len(due_times(iv, utc(2000, 1, 1), utc(2030, 1, 1), limit=3)) == 3  # bounded by the limit


def test_dst_does_not_change_the_gap_but_moves_the_wall_clock():
    """Intervals are elapsed time: 90 real minutes across New York's spring-forward night."""
    ny = ZoneInfo("America/New_York")
    iv = every("@every 90m", "2026-03-07T22:00:00", "America/New_York")
    times = due_times(iv, utc(2026, 3, 8, 2, 59), utc(2026, 3, 8, 12, 0), limit=10)
    assert {b - a for a, b in zip(times, times[1:])} == {timedelta(minutes=90)}
    walls = [t.astimezone(ny).strftime("%H:%M") for t in times]
    assert walls[:4] == ["22:00", "23:30", "01:00", "03:30"]  # 01:00 EST -> 03:30 EDT is 90 minutes
    # Fall back: the repeated hour is lived through, not skipped or doubled.
    times = due_times(iv, utc(2026, 11, 1, 3, 0), utc(2026, 11, 1, 10, 0), limit=10)
    assert {b - a for a, b in zip(times, times[1:])} == {timedelta(minutes=90)}


@settings(max_examples=200, deadline=None)
@given(minutes=st.integers(1, 3000),
       zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
       anchor=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
       at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)))
def test_due_times_are_evenly_spaced_around_any_instant(minutes, zone, anchor, at):
    iv = Interval(timedelta(minutes=minutes), interval.parse_anchor(anchor.strftime("%Y-%m-%dT%H:%M:00Z"), zone))
    at = at.replace(tzinfo=ZoneInfo(zone))
    before, after = previous_due(iv, at), due_after(iv, at)
    assert before <= at < after
    assert after - before == iv.every
    assert (before - iv.anchor) % iv.every == timedelta(0)


# --- firing and restarts ------------------------------------------------------------------------


IV = Interval(timedelta(minutes=90), utc(2026, 5, 1))
CREATED = utc(2026, 5, 1, 0, 10)


def test_nothing_is_fired_before_the_first_due_time_after_creation():
    d = fire_decision(IV, None, CREATED, utc(2026, 5, 1, 1, 29), starting_deadline_seconds=None)
    assert d == interval.FireDecision(fire=None, missed=0, next_due=utc(2026, 5, 1, 1, 30))


def test_a_due_time_fires_once_then_not_again():
    now = utc(2026, 5, 1, 1, 30, 5)
    d = fire_decision(IV, None, CREATED, now, None)
    assert d.fire == utc(2026, 5, 1, 1, 30) and d.missed == 0 and d.next_due == utc(2026, 5, 1, 3, 0)
    again = fire_decision(IV, d.fire, CREATED, now + timedelta(minutes=5), None)
    assert again.fire is None and again.missed == 0


def test_after_an_outage_only_the_newest_due_time_fires_and_the_rest_are_missed():
    d = fire_decision(IV, utc(2026, 5, 1, 1, 30), CREATED, utc(2026, 5, 1, 7, 40), None)
    assert d == interval.FireDecision(fire=utc(2026, 5, 1, 7, 30), missed=3, next_due=utc(2026, 5, 1, 9, 0))


def test_starting_deadline_decides_whether_a_late_due_time_still_fires():
    late = utc(2026, 5, 1, 1, 32)  # two minutes after the due time
    assert fire_decision(IV, None, CREATED, late, starting_deadline_seconds=180).fire == utc(2026, 5, 1, 1, 30)
    skipped = fire_decision(IV, None, CREATED, late, starting_deadline_seconds=60)
    assert skipped.fire is None and skipped.missed == 1


@settings(max_examples=150, deadline=None)
@given(minutes=st.integers(1, 400), checks=st.lists(st.integers(1, 900), min_size=1, max_size=40),
       crashes=st.lists(st.booleans(), min_size=40, max_size=40))
def test_restarts_never_skip_nor_double_a_due_time(minutes, checks, crashes):
    """Pins the restart promise: the operator may crash between creating a Job and writing
    status; the deterministic name makes the repeated create a no-op, nothing is skipped."""
    iv = Interval(timedelta(minutes=minutes), utc(2026, 1, 1))
    created, now = utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 0, 30)
    jobs: set[str] = set()  # the API server: names are unique
    fired: list[datetime] = []
    last_fired: datetime | None = None  # status.lastScheduleTime
    for step, crash in zip(checks, crashes):
        now += timedelta(minutes=step)
        d = fire_decision(iv, last_fired, created, now, starting_deadline_seconds=None)
        if d.fire is None:
            continue
        name = scheduled_job_name("s", d.fire)
        if name not in jobs:
            jobs.add(name)
            fired.append(d.fire)
        if not crash:
            last_fired = d.fire
    assert len(fired) == len(set(fired))
    # Without a deadline every check that passed a due time fired its newest one.
    assert fired == sorted(fired)
    if fired:
        assert fired[-1] == previous_due(iv, now) or due_times(iv, fired[-1], now, 2) == []


def test_job_names_are_the_cronjob_controllers_and_fit():
    due = utc(2026, 5, 1, 1, 30)
    assert scheduled_job_name("tmdb", due) == f"tmdb-{int(due.timestamp()) // 60}"
    assert len(scheduled_job_name("x" * MAX_SCHEDULE_NAME, utc(2099, 12, 31, 23, 59))) <= MAX_JOB_NAME
