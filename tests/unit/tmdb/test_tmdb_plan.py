"""Planning: preset parity with the old scheduler, custom sources, operating hours, changes windows."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.jobs.tmdb.plan import (
    changes_range, changes_windows, plan_pages, source_labels, sources_for, within_operating_hours,
)

from .support import job


def _pages_by_source(spec):
    return Counter(task.source for task in plan_pages(spec))


def test_daily_weekly_hourly_monthly_match_the_old_scheduler():
    assert _pages_by_source(job(collection="daily")) == {"popular": 5, "trending_day": 1, "now_playing": 3}
    weekly = _pages_by_source(job(collection="weekly"))
    assert weekly == {"genre-action": 15, "genre-comedy": 15, "genre-drama": 15, "genre-horror": 15,
                      "genre-romance": 15, "top-rated-7.5": 20, "trending_week": 1}
    assert _pages_by_source(job(collection="hourly")) == {"trending_day": 1}
    assert _pages_by_source(job(collection="monthly")) == {"popular": 50}
    assert plan_pages(job(collection="changes")) == []


def test_weekly_genres_and_top_rated_filters():
    tasks = {t.source: dict(t.params) for t in plan_pages(job(collection="weekly"))}
    assert {tasks[f"genre-{g}"]["with_genres"] for g in ("action", "comedy", "drama", "horror", "romance")} == {
        "28", "35", "18", "27", "10749"}
    assert tasks["top-rated-7.5"]["vote_average.gte"] == "7.5"
    assert tasks["top-rated-7.5"]["sort_by"] == "vote_average.desc"


def test_custom_sources_get_unique_labels_region_only_where_it_applies_and_no_page_override():
    spec = job(collection="custom", region="DE", sources=[
        {"endpoint": "popular", "pages": 2}, {"endpoint": "popular", "pages": 1},
        {"endpoint": "trending_day"}, {"endpoint": "discover", "params": {"page": "9", "with_genres": "28"}},
    ])
    assert source_labels(sources_for(spec)) == ["popular", "popular-2", "trending_day", "discover"]
    tasks = plan_pages(spec)
    assert [t.key for t in tasks] == ["popular:1", "popular:2", "popular-2:1", "trending_day:1", "discover:1"]
    assert dict(tasks[0].params)["region"] == "DE" and "region" not in dict(tasks[3].params)
    assert tasks[4].query() == {"with_genres": "28", "page": 1}


def test_pages_never_exceed_500():
    spec = job(collection="custom", sources=[{"endpoint": "popular", "pages": 500}])
    assert max(t.page for t in plan_pages(spec)) == 500


@pytest.mark.parametrize(("hours", "hour", "inside"), [
    ("08-22", 7, False), ("08-22", 8, True), ("08-22", 22, True), ("08-22", 23, False),
    ("22-06", 23, True), ("22-06", 3, True), ("22-06", 6, True), ("22-06", 12, False), (None, 3, True),
])
def test_operating_hours_are_inclusive_and_wrap_midnight(hours, hour, inside):
    assert within_operating_hours(hours, datetime(2025, 1, 1, hour, 59)) is inside


@given(start=st.dates(date(2000, 1, 1), date(2030, 1, 1)), length=st.integers(0, 200),
       max_days=st.integers(1, 14))
def test_changes_windows_cover_the_range_without_gaps_or_overlap(start, length, max_days):
    end = start + timedelta(days=length)
    windows = changes_windows(start, end, max_days)
    assert windows[0][0] == start and windows[-1][1] == end
    for (a_start, a_end), (b_start, _) in zip(windows, windows[1:]):
        assert b_start == a_end + timedelta(days=1)
    assert all(0 <= (last - first).days < max_days for first, last in windows)


def test_changes_range_covers_full_days_back_plus_today():
    start, end = changes_range(datetime(2025, 6, 10, 0, 5, tzinfo=timezone.utc), 1)
    assert (start, end) == (date(2025, 6, 9), date(2025, 6, 10))
    start, end = changes_range(datetime(2025, 6, 10, tzinfo=timezone.utc), 14)
    assert len(changes_windows(start, end)) == 2  # 15 calendar days: two TMDB windows
