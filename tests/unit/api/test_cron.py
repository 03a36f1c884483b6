"""Cron and time logic: robfig/cron (Kubernetes) semantics, H resolution, staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.api import cron

T0 = datetime(2025, 3, 8, 23, 17, 42, tzinfo=UTC)
NY = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold).astimezone(UTC)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", [
    "* * * * *", "*/5 * * * *", "0 0 * * 0", "0 9-17 * * MON-FRI", "0 0 1,15 * *", "5 4 * * sun",
    "0 0 1 jan *", "? * ? * ?", "15 3 * * *", "0 0 29 2 *", "7/15 * * * *", "@daily", "@hourly",
    "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "H * * * *", "H H * * *",
    "H(0-29) H(8-17) * * 1-5", "H/15 * * * *", "H(0-29)/10 * * * *", "  0  0  *  *  *  ",
])
def test_valid_schedules(expr):
    assert cron.validate_schedule(expr) is None


@pytest.mark.parametrize(("expr", "fragment"), [
    ("", "empty"),
    ("* * * *", "needs 5 fields"),
    ("* * * * * *", "needs 5 fields"),
    ("60 * * * *", "outside 0-59"),
    ("* 24 * * *", "outside 0-23"),
    ("* * 0 * *", "outside 1-31"),
    ("* * 32 * *", "outside 1-31"),
    ("* * * 13 *", "outside 1-12"),
    ("* * * * 7", "outside 0-6"),  # robfig, unlike Vixie cron, has no 7 for Sunday
    ("5-1 * * * *", "starts after it ends"),
    ("*/0 * * * *", "positive"),
    ("1/2/3 * * * *", "too many slashes"),
    ("1-2-3 * * * *", "too many hyphens"),
    ("a * * * *", "not a number"),
    ("1,,2 * * * *", "empty list element"),
    ("CRON_TZ=UTC 0 0 * * *", "timeZone"),
    ("TZ=Europe/Berlin 0 0 * * *", "timeZone"),
    ("@every 5m", "unknown macro"),
    ("@reboot", "unknown macro"),
    ("@DAILY", "unknown macro"),  # robfig matches descriptors case-sensitively
    ("@daily ", "unknown macro"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("* * H * *", "only supported in the minute and hour"),
    ("H(50-70) * * * *", "within 0-59"),
    ("H(9-3) * * * *", "within 0-59"),
    ("H-5 * * * *", "not a valid hashed value"),
    ("H/0 * * * *", "positive"),
])
def test_invalid_schedules(expr, fragment):
    message = cron.validate_schedule(expr)
    assert message is not None and fragment in message, message


def test_dom_and_dow_both_restricted_is_or_but_star_makes_it_and():
    """robfig's starBit: '1 * * * 1' style OR only when neither day field starts with * or ?."""
    either = cron.parse("0 0 13 * 5")
    assert not (either.days_star or either.weekdays_star)
    assert either.day_matches(datetime(2025, 6, 13))  # Friday the 13th
    assert either.day_matches(datetime(2025, 6, 6))  # a Friday
    assert either.day_matches(datetime(2025, 7, 13))  # a Sunday the 13th
    both = cron.parse("0 0 */1 * 5")  # */1 keeps the star, so both must match
    assert both.day_matches(datetime(2025, 6, 6)) and not both.day_matches(datetime(2025, 6, 7))
    stepped = cron.parse("0 0 */2 * 5")  # a step > 1 drops it: OR again
    assert not stepped.days_star and stepped.day_matches(datetime(2025, 6, 7))


# --- H ------------------------------------------------------------------------------------------


def test_hashed_values_are_stable_per_seed_and_in_range():
    """Pins the bug "the minute moves on operator restart": Python's hash() is salted per process."""
    first = cron.resolve_hashed("H H(8-17) * * *", "team-a/tmdb-daily")
    assert first == cron.resolve_hashed("H H(8-17) * * *", "team-a/tmdb-daily")
    minute, hour = (int(x) for x in first.split()[:2])
    assert 0 <= minute <= 59 and 8 <= hour <= 17
    # sha256("team-a/tmdb-daily\0minute") pinned: a change of algorithm would move every schedule.
    assert first == "16 17 * * *"


def test_hashed_minutes_spread_over_the_hour():
    minutes = {int(cron.resolve_hashed("H * * * *", f"ns/s{i}").split()[0]) for i in range(300)}
    assert len(minutes) > 45  # 300 draws from 60 values: all but a few appear


@pytest.mark.parametrize(("expr", "pattern"), [
    ("H/15 * * * *", r"^(\d+)-59/15 \* \* \* \*$"),
    ("H(0-29)/10 H * * *", r"^(\d+)-29/10 \d+ \* \* \*$"),
    ("0,H 3 * * *", r"^0,(\d+) 3 \* \* \*$"),
])
def test_hashed_steps_and_lists(expr, pattern):
    import re

    for seed in ("a/b", "c/d", "e/f"):
        resolved = cron.resolve_hashed(expr, seed)
        match = re.match(pattern, resolved)
        assert match, resolved
        assert cron.validate_schedule(resolved) is None
        start = int(match.group(1))
        assert start < (15 if "/15" in expr else 10 if "/10" in expr else 60)  # within the first step


def test_resolve_leaves_plain_expressions_and_names_alone():
    for expr in ("0 0 * * THU", "@hourly", "*/5 * * * *", "0 0 1 MAR *"):
        assert cron.resolve_hashed(expr, "ns/x") == expr


def test_unresolved_h_cannot_be_scheduled():
    with pytest.raises(cron.CronError, match="not resolved"):
        cron.next_run("H * * * *", None, T0)


# --- next_run: tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), [
    ("*/15 * * * *", None, utc(2025, 1, 1, 0, 0), utc(2025, 1, 1, 0, 15)),  # strictly after
    ("*/15 * * * *", None, utc(2025, 1, 1, 0, 14, 59, 999999), utc(2025, 1, 1, 0, 15)),
    ("0 9 * * MON-FRI", None, utc(2025, 6, 6, 9, 0), utc(2025, 6, 9, 9, 0)),  # Fri -> Mon
    ("0 0 29 2 *", None, utc(2025, 1, 1), utc(2028, 2, 29)),
    ("0 3 * * *", "Europe/Berlin", utc(2025, 1, 1), utc(2025, 1, 1, 2, 0)),  # CET = UTC+1
    ("0 3 * * *", "Europe/Berlin", utc(2025, 7, 1), utc(2025, 7, 1, 1, 0)),  # CEST = UTC+2
    ("@monthly", "Asia/Kolkata", utc(2025, 1, 31, 18, 30), utc(2025, 2, 28, 18, 30)),  # +05:30
    ("0 0 30 2 *", None, utc(2025, 1, 1), None),
])
def test_next_run_table(expr, tz, after, expected):
    assert cron.next_run(expr, tz, after) == expected


def test_spring_forward_skips_the_missing_wall_time():
    """02:30 does not exist in New York on 2025-03-09: Kubernetes (robfig) skips that day."""
    runs = cron.missed_runs("30 2 * * *", NY, utc(2025, 3, 7), utc(2025, 3, 11), 10)
    assert runs == [local(NY, 2025, 3, 7, 2, 30), local(NY, 2025, 3, 8, 2, 30), local(NY, 2025, 3, 10, 2, 30)]


def test_fall_back_fires_at_both_instants_of_a_repeated_wall_time():
    """01:30 happens twice in New York on 2025-11-02; robfig, hence a CronJob, fires at both."""
    runs = cron.missed_runs("30 1 * * *", NY, utc(2025, 11, 1, 12), utc(2025, 11, 3, 12), 10)
    assert runs == [local(NY, 2025, 11, 2, 1, 30), local(NY, 2025, 11, 2, 1, 30, fold=1),
                    local(NY, 2025, 11, 3, 1, 30)]
    assert runs[1] - runs[0] == timedelta(hours=1)


@pytest.mark.parametrize("when", [utc(2025, 3, 9, 4), utc(2025, 11, 2, 3)])
def test_hourly_stays_hourly_in_absolute_time_across_dst(when):
    runs = cron.missed_runs("0 * * * *", NY, when, when + timedelta(hours=6), 10)
    assert [b - a for a, b in zip(runs, runs[1:])] == [timedelta(hours=1)] * (len(runs) - 1)
    assert len(runs) == 6


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.next_run("* * * * *", None, datetime(2025, 1, 1))


def test_unknown_time_zone():
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.next_run("* * * * *", "Mars/Olympus", T0)


# --- next_run: properties -----------------------------------------------------------------------

ZONES = ["UTC", NY, "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Sao_Paulo",
         "Pacific/Chatham", "Europe/London", "America/St_Johns"]


def _values(low: int, high: int) -> st.SearchStrategy[str]:
    single = st.integers(low, high).map(str)
    # a < b: croniter mis-reads one-value ranges such as "0-0" in day-of-week.
    span = st.tuples(st.integers(low, high - 1), st.integers(1, high - low)).map(
        lambda p: f"{p[0]}-{min(high, p[0] + p[1])}")
    step = st.tuples(st.sampled_from(["*", f"{low}-{high}"]), st.integers(2, max(2, high - low))).map(
        lambda p: f"{p[0]}/{p[1]}")
    return st.lists(st.one_of(single, span, step), min_size=1, max_size=3).map(",".join)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    minute = draw(st.one_of(st.just("*"), _values(0, 59)))
    hour = draw(st.one_of(st.just("*"), _values(0, 23)))
    month = draw(st.one_of(st.just("*"), _values(1, 12)))
    # croniter and robfig agree on day semantics when one day field is "*"; both restricted
    # (OR) is covered by the tables above.
    dom, dow = draw(st.sampled_from([
        ("*", "*"), (draw(_values(1, 28)), "*"), ("*", draw(_values(0, 6)))]))
    return f"{minute} {hour} {dom} {month} {dow}"


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1),
                        timezones=st.just(UTC))
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(expr=expressions(), after=instants)
def test_matches_croniter_in_utc(expr, after):
    expected = croniter(expr, after).get_next(datetime)
    assert cron.next_run(expr, None, after) == expected


@FAST
@given(expr=expressions(), tz=st.sampled_from(ZONES), after=instants)
def test_next_is_strictly_after_monotone_and_matches_the_fields(expr, tz, after):
    spec = cron.parse(expr)
    first = cron.next_run(expr, tz, after)
    assert first is not None and first > after and first.tzinfo == UTC
    wall = first.astimezone(ZoneInfo(tz))
    assert wall.minute in spec.minutes and wall.hour in spec.hours and wall.month in spec.months
    assert spec.day_matches(wall) and wall.second == 0 and wall.microsecond == 0
    second = cron.next_run(expr, tz, first)
    assert second is not None and second > first
    # Nothing fires in between: asking from just before the second gives the second again.
    assert cron.next_run(expr, tz, second - timedelta(microseconds=1)) == second


@FAST
@given(expr=expressions(), tz=st.sampled_from(ZONES), after=instants,
       delta=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)))
def test_next_run_is_monotone_in_after(expr, tz, after, delta):
    assert cron.next_run(expr, tz, after) <= cron.next_run(expr, tz, after + delta)


@FAST
@given(tz=st.sampled_from(ZONES), after=instants, minute=st.integers(0, 59))
def test_hourly_fires_once_an_hour_of_absolute_time(tz, after, minute):
    """Hourly schedules neither skip nor double up over DST changes (all offsets are whole
    quarter hours, except Lord Howe's 30-minute DST, where the gap is 30 or 90 minutes)."""
    first = cron.next_run(f"{minute} * * * *", tz, after)
    second = cron.next_run(f"{minute} * * * *", tz, first)
    allowed = {timedelta(hours=1)}
    if tz in ("Australia/Lord_Howe",):
        allowed |= {timedelta(minutes=30), timedelta(minutes=90)}
    assert second - first in allowed


@FAST
@given(expr=expressions(), tz=st.sampled_from(ZONES), at=instants)
def test_previous_next_and_interval_agree(expr, tz, at):
    before = cron.previous_run(expr, tz, at)
    after = cron.next_run(expr, tz, at)
    assert before is not None and before <= at < after
    assert cron.next_run(expr, tz, before) == after or cron.next_run(expr, tz, before) <= at
    assert cron.expected_interval(expr, tz, at) == after - before


# --- missed runs, interval, staleness -----------------------------------------------------------


def test_missed_runs_are_bounded_and_oldest_first():
    runs = cron.missed_runs("*/10 * * * *", None, utc(2025, 1, 1), utc(2025, 1, 2), 5)
    assert runs == [utc(2025, 1, 1, 0, m) for m in (10, 20, 30, 40, 50)]
    assert cron.missed_runs("*/10 * * * *", None, utc(2025, 1, 1), utc(2025, 1, 1, 0, 10), 100) == [
        utc(2025, 1, 1, 0, 10)]  # `now` itself counts
    assert cron.missed_runs("0 0 * * *", None, utc(2025, 1, 1, 1), utc(2025, 1, 1, 23), 10) == []


@pytest.mark.parametrize(("expr", "tz", "at", "interval"), [
    ("*/5 * * * *", None, utc(2025, 1, 1, 0, 7), timedelta(minutes=5)),
    ("0 9 * * MON-FRI", None, utc(2025, 6, 7), timedelta(days=3)),  # Saturday: Fri 9:00 -> Mon 9:00
    ("0 9 * * MON-FRI", None, utc(2025, 6, 4), timedelta(days=1)),
    ("0 12 * * *", NY, utc(2025, 3, 9, 12), timedelta(hours=23)),  # the short day
    ("@yearly", None, utc(2025, 6, 1), timedelta(days=365)),
    ("0 0 30 2 *", None, utc(2025, 6, 1), None),
])
def test_expected_interval(expr, tz, at, interval):
    assert cron.expected_interval(expr, tz, at) == interval


DAILY = "0 0 * * *"
GRACE = timedelta(hours=1)


@pytest.mark.parametrize(("last_success", "now", "stale"), [
    (utc(2025, 1, 1, 0, 5), utc(2025, 1, 2, 0, 59), False),  # next due 01-02 00:00, within grace
    (utc(2025, 1, 1, 0, 5), utc(2025, 1, 2, 1, 0, 1), True),  # grace elapsed
    (utc(2025, 1, 1, 23, 0), utc(2025, 1, 2, 0, 30), False),
    (None, utc(2024, 12, 31, 12), False),  # new: created 12-31 10:00, first run 01-01 00:00
    (None, utc(2025, 1, 1, 1, 0, 1), True),  # never succeeded after its first due run + grace
])
def test_is_stale(last_success, now, stale):
    created = utc(2024, 12, 31, 10)
    assert cron.is_stale(last_success, created, DAILY, None, GRACE, now) is stale


def test_is_stale_respects_the_time_zone():
    # Daily at 00:00 Berlin = 23:00 UTC the day before.
    success = utc(2025, 1, 1, 23, 5)
    assert not cron.is_stale(success, success, DAILY, "Europe/Berlin", GRACE, utc(2025, 1, 2, 23, 59))
    assert cron.is_stale(success, success, DAILY, "Europe/Berlin", GRACE, utc(2025, 1, 3, 0, 1))


def test_never_firing_schedules_are_never_stale():
    assert not cron.is_stale(None, utc(2020, 1, 1), "0 0 30 2 *", None, GRACE, utc(2030, 1, 1))
