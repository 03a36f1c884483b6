"""ScheduleTimes: one receiver for cron and @every fire times, and what the CronJob carries (issue 17)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.api import cron
from thresher.api.interval import INTERVAL_PATTERN, IntervalError, parse_interval
from thresher.api.timing import TEMPLATE_SCHEDULE, CronJobTiming, ScheduleTimes

T = datetime(2026, 5, 10, 7, 20, tzinfo=UTC)


def test_cron_schedules_answer_exactly_as_the_cron_module():
    times = ScheduleTimes.of("0 6 * * *", "Europe/Berlin")
    assert not times.fired_by_operator
    assert times.cronjob() == CronJobTiming("0 6 * * *", "Europe/Berlin", suspend_for_template=False)
    assert times.next_run(T) == cron.next_run("0 6 * * *", "Europe/Berlin", T)
    assert times.previous_run(T) == cron.previous_run("0 6 * * *", "Europe/Berlin", T)
    assert times.expected_interval(T) == timedelta(days=1)
    assert times.missed_runs(T - timedelta(days=3), T, 10) == cron.missed_runs("0 6 * * *", "Europe/Berlin",
                                                                                T - timedelta(days=3), T, 10)
    assert times.is_stale(None, T - timedelta(days=2), timedelta(hours=1), T)


def test_an_interval_cron_can_repeat_goes_on_the_cronjob_in_utc():
    times = ScheduleTimes.of("@every 6h", "Europe/Berlin", "2026-01-01T07:30:00")
    assert not times.fired_by_operator
    assert times.cronjob() == CronJobTiming("30 0/6 * * *", "UTC", suspend_for_template=False)
    assert times.next_run(T) == datetime(2026, 5, 10, 12, 30, tzinfo=UTC)


def test_an_interval_the_operator_fires_keeps_a_suspended_template():
    times = ScheduleTimes.of("@every 90m", None, "2026-05-10T06:00:00Z")
    assert times.fired_by_operator
    assert times.cronjob() == CronJobTiming(TEMPLATE_SCHEDULE, "UTC", suspend_for_template=True)
    assert times.next_run(T) == datetime(2026, 5, 10, 7, 30, tzinfo=UTC)
    assert times.previous_run(T) == datetime(2026, 5, 10, 6, 0, tzinfo=UTC)
    assert times.expected_interval(T) == timedelta(minutes=90)
    assert times.missed_runs(T - timedelta(hours=3), T, 10) == [datetime(2026, 5, 10, 4, 30, tzinfo=UTC),
                                                                datetime(2026, 5, 10, 6, 0, tzinfo=UTC)]
    # Stale: no success by the next due time after the last one plus the grace.
    last = datetime(2026, 5, 10, 6, 5, tzinfo=UTC)
    assert not times.is_stale(last, last, timedelta(minutes=10), datetime(2026, 5, 10, 7, 40, tzinfo=UTC))
    assert times.is_stale(last, last, timedelta(minutes=10), datetime(2026, 5, 10, 7, 41, tzinfo=UTC))


def test_bad_schedules_raise_the_modules_own_errors():
    with pytest.raises(IntervalError):
        ScheduleTimes.of("@every 10s", None)
    with pytest.raises(cron.CronError):
        ScheduleTimes.of("61 * * * *", None)


@given(h=st.integers(0, 400), m=st.integers(0, 500), s=st.integers(0, 500),
       parts=st.sets(st.sampled_from("hms"), min_size=1), space=st.sampled_from([" ", "  ", "\t"]))
def test_the_cel_pattern_admits_every_syntax_the_parser_reads(h, m, s, parts, space):
    """Admission must not refuse an interval the operator accepts (the parser then judges the bounds)."""
    duration = "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if u in parts)
    expr = f"@every{space}{duration}"
    assert re.fullmatch(INTERVAL_PATTERN, expr)
    try:
        parse_interval(expr)
    except IntervalError as err:
        assert "not a duration" not in str(err) and "each unit once" not in str(err)


@pytest.mark.parametrize("expr", ["@every", "@every5m", "@every 1.5h", "@every 30m1h", "@every 5 m", "@every 2d"])
def test_the_cel_pattern_refuses_what_is_not_a_duration(expr):
    assert not re.fullmatch(INTERVAL_PATTERN, expr)
