"""One-off runs (runAt) and backfill windows, as pure decisions (issue 17)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.api import oneoff
from thresher.api.backfill import MAX_BACKFILL_RUNS, BackfillError, fire_times, plan_backfill
from thresher.api.runnames import (
    LOGICAL_TIME_ENV,
    MAX_JOB_NAME,
    MAX_SCHEDULE_NAME,
    backfill_job_name,
    format_logical_time,
    parse_logical_time,
    retry_job_name,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


NOW = utc(2026, 5, 10, 12, 0)


# --- runAt --------------------------------------------------------------------------------------


def test_run_at_parses_rfc3339_with_an_offset_only():
    assert oneoff.parse_run_at("2026-05-10T14:00:00+02:00") == utc(2026, 5, 10, 12, 0)
    with pytest.raises(ValueError) as err:
        oneoff.parse_run_at("2026-05-10 14:00")
    assert str(err.value) == ("runAt '2026-05-10 14:00' is not an RFC 3339 time with an offset, such as "
                              "2026-05-01T06:00:00Z or 2026-05-01T08:00:00+02:00")


@pytest.mark.parametrize(("run_at", "deadline", "message"), [
    (utc(2026, 5, 10, 13, 0), None, None),
    (utc(2026, 5, 10, 11, 56), None, None),  # within the default 5 minutes
    (utc(2026, 5, 10, 11, 0), 3600, None),  # within the deadline
    (utc(2026, 5, 10, 11, 0), None,
     "runAt 2026-05-10T11:00:00Z is 1:00:00 in the past, beyond the default of 5 minutes (no "
     "startingDeadlineSeconds set): give a time after 2026-05-10T11:55:00Z, or use backfill for past runs"),
    (utc(2026, 5, 9, 12, 0), 600,
     "runAt 2026-05-09T12:00:00Z is 1 day, 0:00:00 in the past, beyond startingDeadlineSeconds: give a time "
     "after 2026-05-10T11:50:00Z, or use backfill for past runs"),
    (utc(2026, 5, 10, 13, 0, 30), None,
     "runAt 2026-05-10T13:00:30Z must be on a whole minute (runs start on whole minutes)"),
])
def test_run_at_in_the_past_beyond_the_deadline_is_refused(run_at, deadline, message):
    """Pins: a mistyped date in the past must not start a run at once."""
    assert oneoff.validate_run_at(run_at, NOW, deadline) == message


def test_a_one_off_fires_once_and_is_done_once_recorded():
    run_at = utc(2026, 5, 10, 12, 30)
    assert oneoff.one_off_state(run_at, [], NOW, None) == "Waiting"
    assert oneoff.one_off_state(run_at, [], run_at, None) == "Due"
    assert oneoff.one_off_state(run_at, [utc(2026, 5, 10, 12, 0)], run_at + timedelta(hours=3), None) == "Due"
    # Recorded (in any zone): done, however late it is now.
    recorded = [run_at.astimezone(ZoneInfo("Europe/Berlin"))]
    assert oneoff.one_off_state(run_at, recorded, run_at + timedelta(days=3), 60) == "Done"
    # The operator saw it only after the deadline: expired, never fired late.
    assert oneoff.one_off_state(run_at, [], run_at + timedelta(seconds=61), 60) == "Expired"
    assert oneoff.one_off_state(run_at, [], run_at + timedelta(seconds=60), 60) == "Due"


def test_ttl_deletes_a_finished_one_off_only_after_its_ttl():
    finished = utc(2026, 5, 10, 12, 40)
    assert oneoff.ttl_expiry(None, 3600, NOW) is None
    assert oneoff.ttl_expiry(finished, None, NOW) is None
    assert oneoff.ttl_expiry(finished, 3600, utc(2026, 5, 10, 13, 39)) == oneoff.Expiry(utc(2026, 5, 10, 13, 40),
                                                                                        due=False)
    assert oneoff.ttl_expiry(finished, 3600, utc(2026, 5, 10, 13, 40)).due
    assert oneoff.ttl_expiry(finished, 0, finished).due


# --- backfill -----------------------------------------------------------------------------------


def test_backfill_of_an_hour_of_every_ten_minutes_is_six_runs_then_none():
    """The issue's acceptance case, pure: 6 runs, and a second call (Jobs now exist) creates nothing."""
    start, end = utc(2026, 5, 10, 8, 0), utc(2026, 5, 10, 9, 0)
    first = plan_backfill("tmdb", "*/10 * * * *", None, None, start, end, NOW, existing_job_names=[])
    assert [r.logical_time for r in first.runs] == [start + timedelta(minutes=10 * i) for i in range(6)]
    assert first.new == first.runs
    assert first.runs[0].job_name == backfill_job_name("tmdb", start)
    assert first.runs[0].logical_time_value == "2026-05-10T08:00:00Z"
    second = plan_backfill("tmdb", "*/10 * * * *", None, None, start, end, NOW,
                           existing_job_names={r.job_name for r in first.runs})
    assert second.runs == first.runs and second.new == ()


def test_backfill_of_an_interval_and_a_partial_window():
    plan = plan_backfill("drone", "@every 90m", None, "2026-05-10T00:00:00Z", utc(2026, 5, 10, 0, 0),
                         utc(2026, 5, 10, 4, 30), NOW, existing_job_names=[backfill_job_name("drone", utc(2026, 5, 10, 0, 0))])
    assert [r.logical_time for r in plan.runs] == [utc(2026, 5, 10, 0, 0), utc(2026, 5, 10, 1, 30),
                                                   utc(2026, 5, 10, 3, 0)]  # 04:30 is the end: excluded
    assert [r.logical_time for r in plan.new] == [utc(2026, 5, 10, 1, 30), utc(2026, 5, 10, 3, 0)]


def test_backfill_follows_the_time_zone_of_a_cron_schedule():
    # 06:00 in Berlin is 04:00 UTC in summer.
    times = fire_times("0 6 * * *", "Europe/Berlin", None, utc(2026, 5, 1), utc(2026, 5, 4), limit=10)
    assert times == [utc(2026, 5, d, 4, 0) for d in (1, 2, 3)]


@pytest.mark.parametrize(("schedule", "start", "end", "message"), [
    ("*/10 * * * *", utc(2026, 5, 10, 9), utc(2026, 5, 10, 8),
     "--to 2026-05-10T08:00:00Z must be after --from 2026-05-10T09:00:00Z"),
    ("*/10 * * * *", utc(2026, 5, 10, 9), utc(2026, 5, 10, 13),
     "--to 2026-05-10T13:00:00Z is in the future; backfill covers past times only (up to 2026-05-10T12:00:00Z)"),
    ("* * * * *", utc(2026, 5, 10, 9), utc(2026, 5, 10, 11),
     "the window 2026-05-10T09:00:00Z to 2026-05-10T11:00:00Z holds more than 100 fire times; backfill at most "
     "100 runs per call (split the window)"),
    ("@every 30s", utc(2026, 5, 10, 9), utc(2026, 5, 10, 11),
     "schedule '@every 30s': @every 30s is shorter than the minimum of 1 minute"),
    ("61 * * * *", utc(2026, 5, 10, 9), utc(2026, 5, 10, 11),
     "schedule '61 * * * *': minute: '61' is outside 0-59"),
    ("* * * * *", datetime(2026, 5, 10, 9), utc(2026, 5, 10, 11),
     "--from needs a time zone offset, such as 2026-05-01T00:00:00Z"),
])
def test_backfill_refusals_say_what_is_allowed(schedule, start, end, message):
    with pytest.raises(BackfillError) as err:
        plan_backfill("s", schedule, None, None, start, end, NOW, existing_job_names=[])
    assert str(err.value) == message


def test_the_cap_is_exact():
    start = utc(2026, 5, 10, 9)
    plan = plan_backfill("s", "* * * * *", None, None, start, start + timedelta(minutes=MAX_BACKFILL_RUNS), NOW, [])
    assert len(plan.runs) == MAX_BACKFILL_RUNS


@settings(max_examples=100, deadline=None)
@given(minutes=st.integers(1, 600), offset=st.integers(0, 10_000), length=st.integers(1, 6000),
       split=st.floats(0, 1))
def test_adjacent_windows_cover_each_fire_time_once(minutes, offset, length, split):
    """[a, b) then [b, c) equals [a, c): backfilling day by day neither repeats nor skips a run."""
    schedule = f"@every {minutes}m"
    a = utc(2026, 1, 1) + timedelta(minutes=offset)
    c = a + timedelta(minutes=length)
    b = a + (c - a) * split
    whole = fire_times(schedule, None, None, a, c, limit=10_000)
    parts = fire_times(schedule, None, None, a, b, limit=10_000) + fire_times(schedule, None, None, b, c, limit=10_000)
    assert parts == whole


# --- names and the logical time -----------------------------------------------------------------


def test_names_fit_and_differ_by_kind():
    t = utc(2099, 12, 31, 23, 59)
    long = "x" * MAX_SCHEDULE_NAME
    for name in (backfill_job_name(long, t), retry_job_name(long, f"{long}-4102444740", 3)):
        assert len(name) <= MAX_JOB_NAME
    assert retry_job_name("s", "s-1", 2) != retry_job_name("s", "s-1", 3) != retry_job_name("s", "s-2", 3)
    with pytest.raises(ValueError):
        retry_job_name("s", "s-1", 1)


def test_logical_time_round_trips():
    assert LOGICAL_TIME_ENV == "THRESHER_LOGICAL_TIME"
    t = utc(2026, 5, 10, 8, 0)
    assert parse_logical_time(format_logical_time(t)) == t
    assert parse_logical_time("2026-05-10T10:00:00+02:00") == t


def test_the_backfill_request_round_trips_and_bad_values_say_what_is_expected():
    """Issue 17: the CLI asks the operator through an annotation; a hand-written one must not crash it."""
    from thresher.api.backfill import BackfillError, parse_request, request_value

    start, end = datetime(2026, 5, 1, 0, 0, tzinfo=UTC), datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    assert parse_request(request_value(start, end, "t1")) == (start, end)
    for bad in ("", "{}", '{"from": "yesterday", "to": "2026-05-01T00:00:00Z"}', "[1]"):
        with pytest.raises(BackfillError, match="must be JSON with RFC 3339 from and to"):
            parse_request(bad)


def test_a_spec_plans_with_its_resolved_schedule_and_a_one_off_has_nothing_to_backfill():
    from thresher.api.backfill import BackfillError, plan_for_spec
    from thresher.api.schedule import parse_schedule

    body = {"metadata": {"name": "s", "namespace": "ns"},
            "spec": {"schedule": "*/10 * * * *", "job": {"container": {"image": "a"}}}}
    start, end = datetime(2026, 5, 1, 0, 0, tzinfo=UTC), datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    plan = plan_for_spec(parse_schedule(body).spec, "ns", "s", start, end, end + timedelta(hours=1), set())
    assert len(plan.new) == 6
    body["spec"] = {"runAt": "2026-05-01T00:00:00Z", "job": {"container": {"image": "a"}}}
    with pytest.raises(BackfillError, match="no schedule"):
        plan_for_spec(parse_schedule(body).spec, "ns", "s", start, end, end + timedelta(hours=1), set())


# --- backfilled windows (status.backfilled) -----------------------------------------------------


def test_merge_windows_joins_overlapping_and_adjacent_windows_and_keeps_them_sorted():
    from thresher.api.backfill import merge_windows

    h = [utc(2026, 5, 10, i, 0) for i in range(10)]
    assert merge_windows([], h[2], h[3]) == [(h[2], h[3])]
    assert merge_windows([(h[5], h[7])], h[1], h[2]) == [(h[1], h[2]), (h[5], h[7])]  # apart: sorted
    assert merge_windows([(h[1], h[3])], h[2], h[5]) == [(h[1], h[5])]  # overlapping
    assert merge_windows([(h[1], h[3])], h[3], h[4]) == [(h[1], h[4])]  # adjacent ([a, b) + [b, c))
    assert merge_windows([(h[1], h[2]), (h[4], h[5])], h[2], h[4]) == [(h[1], h[5])]  # closes a gap
    assert merge_windows([(h[1], h[5])], h[2], h[3]) == [(h[1], h[5])]  # inside: unchanged
    # other offsets are the same instants; bounds go inwards to whole seconds, never outwards
    plus2 = ZoneInfo("Europe/Berlin")
    half = timedelta(milliseconds=500)
    assert merge_windows([], h[2].astimezone(plus2) + half, h[3] + half) == [(h[2] + timedelta(seconds=1), h[3])]


def test_merge_windows_keeps_the_newest_windows_beyond_the_cap():
    from thresher.api.backfill import MAX_BACKFILLED_WINDOWS, merge_windows

    days = [(utc(2026, 5, d, 0, 0), utc(2026, 5, d, 1, 0)) for d in range(1, 25)]
    merged = []
    for start, end in reversed(days):  # recorded newest first: the cap still keeps the newest by end
        merged = merge_windows(merged, start, end)
    assert len(merged) == MAX_BACKFILLED_WINDOWS == 20
    assert merged == days[-20:]
    assert merge_windows(days[-3:], *days[0], cap=2) == days[-2:]


def test_a_run_in_a_backfilled_window_is_not_new_even_without_its_job():
    """Issue 17: the Jobs of a backfilled window were cleaned up and fell out of recentRuns; a second
    call must create nothing for the recorded part, and only the runs outside it."""
    start, end = utc(2026, 5, 10, 8, 0), utc(2026, 5, 10, 9, 0)
    again = plan_backfill("tmdb", "*/10 * * * *", None, None, start, end, NOW, existing_job_names=[],
                          done=[(start, end)])
    assert len(again.runs) == 6 and again.new == ()
    wider = plan_backfill("tmdb", "*/10 * * * *", None, None, start, end + timedelta(minutes=30), NOW,
                          existing_job_names=[], done=[(start, end)])
    assert len(wider.runs) == 9
    assert [r.logical_time for r in wider.new] == [end + timedelta(minutes=10 * i) for i in range(3)]
    # half-open: the run at a done window's end is new, the one at its start is not
    first_done = plan_backfill("tmdb", "*/10 * * * *", None, None, start, end, NOW, [],
                               done=[(start, start + timedelta(minutes=10))])
    assert first_done.new == first_done.runs[1:]
