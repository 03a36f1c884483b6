"""Validation, de-duplication, the quality score, thresholds, and the weekly/monthly report."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.jobs.tmdb.quality import (
    Observation, Thresholds, assess, completeness, dedupe, split_valid, threshold_findings, validate_movie,
)
from thresher.jobs.tmdb.report import build_report, rating_band, render_html

GOOD = {"id": 5, "title": "Heat", "popularity": 12.5, "vote_average": 7.9, "vote_count": 4000,
        "release_date": "1995-12-15", "genre_ids": [28, 80], "adult": False, "overview": "LA.",
        "poster_path": "/p.jpg", "backdrop_path": "/b.jpg", "original_language": "en"}


def test_a_complete_movie_is_valid_and_complete():
    assert validate_movie(GOOD) == []
    assert completeness(GOOD) == 1.0


@pytest.mark.parametrize(("change", "problem"), [
    ({"id": None}, "id: missing"), ({"id": -3}, "id: not a positive integer"), ({"id": True}, "id:"),
    ({"title": "  "}, "title: empty"), ({"vote_average": 10.5}, "vote_average"), ({"vote_average": "7"}, "vote_average"),
    ({"vote_count": 1.5}, "vote_count"), ({"popularity": -1}, "popularity"), ({"popularity": float("nan")}, "popularity"),
    ({"release_date": "2021-13-40"}, "release_date"), ({"release_date": "15/12/1995"}, "release_date"),
    ({"genre_ids": ["28"]}, "genre_ids"), ({"adult": "no"}, "adult"), ({"genres": [{"name": "x"}]}, "genres"),
])
def test_each_rule_catches_its_problem(change, problem):
    problems = validate_movie({**GOOD, **change})
    assert any(p.startswith(problem) for p in problems), problems


def test_missing_required_fields_are_listed_and_empty_release_date_is_allowed():
    assert set(validate_movie({"id": 1})) >= {"title: missing", "vote_average: missing", "release_date: missing"}
    assert validate_movie({**GOOD, "release_date": ""}) == []
    assert validate_movie("not a movie") == ["record: not an object (str)"]


def test_dedupe_keeps_the_best_record_and_every_source():
    poor = {**GOOD, "overview": "", "poster_path": None}
    detail = {**GOOD, "runtime": 170}
    deduped = dedupe([
        Observation(poor, "popular:1", 1.0),
        Observation({**GOOD, "id": 6, "title": "Ronin"}, "popular:1", 1.0),
        Observation(GOOD, "trending_day:1", 2.0),
        Observation(detail, "details", 0.5, detail=True),
        Observation({"title": "no id"}, "popular:2", 1.0),
    ])
    assert [m["id"] for m in deduped.movies] == [5, 6]
    assert deduped.movies[0]["runtime"] == 170  # detail beats list records
    assert deduped.movies[0]["_sources"] == ["popular:1", "trending_day:1", "details"]
    assert deduped.duplicates == 2 and len(deduped.unkeyed) == 1


def test_dedupe_prefers_valid_then_complete_then_recent():
    invalid_newer = {**GOOD, "vote_average": 99}
    older = {**GOOD, "popularity": 1.0}
    newer = {**GOOD, "popularity": 2.0}
    assert dedupe([Observation(older, "a", 1), Observation(invalid_newer, "b", 9)]).movies[0]["popularity"] == 1.0
    assert dedupe([Observation(older, "a", 1), Observation(newer, "b", 2)]).movies[0]["popularity"] == 2.0


_movies = st.lists(st.fixed_dictionaries({"id": st.integers(1, 30), "title": st.sampled_from(["A", "", "C"]),
                                          "popularity": st.floats(0, 100), "vote_average": st.floats(-1, 11),
                                          "vote_count": st.integers(0, 10), "release_date": st.just("2020-01-01")}),
                   max_size=60)


@given(_movies)
def test_dedupe_and_split_account_for_every_record(movies):
    observations = [Observation(m, f"s:{i}", float(i)) for i, m in enumerate(movies)]
    deduped = dedupe(observations)
    valid, rejected = split_valid(deduped)
    ids = [m["id"] for m in deduped.movies]
    assert len(ids) == len(set(ids)) == len({m["id"] for m in movies})
    assert len(valid) + len(rejected) == len(ids)
    assert deduped.duplicates == len(movies) - len(ids)
    report = assess(len(movies), deduped, valid, rejected)
    assert report.quality == (round(len(valid) / len(ids), 4) if ids else 0.0)
    assert all(r["_problems"] for r in rejected)


def test_thresholds_fail_only_when_given_and_always_explain():
    deduped = dedupe([Observation(GOOD, "a", 1), Observation({**GOOD, "id": 9, "vote_average": 12}, "a", 1)])
    valid, rejected = split_valid(deduped)
    report = assess(2, deduped, valid, rejected)
    assert report.quality == 0.5 and report.problems == {"vote_average: not a number in 0-10": 1}
    warnings, failed = threshold_findings(report, Thresholds())
    assert not failed and any("quality 0.500" in w for w in warnings)
    warnings, failed = threshold_findings(report, Thresholds(min_quality_rate=0.9))
    assert failed and any("below the minimum 0.900" in w for w in warnings)
    warnings, failed = threshold_findings(report, Thresholds(min_items=3))
    assert failed and any("below the minimum 3" in w for w in warnings)
    ok_report = assess(1, dedupe([Observation(GOOD, "a", 1)]), [GOOD], [])
    assert threshold_findings(ok_report, Thresholds(min_quality_rate=1.0, min_items=1)) == ([], False)


@pytest.mark.parametrize(("avg", "count", "band"), [
    (10.0, 5, "9-10"), (9.0, 5, "9-10"), (8.95, 5, "8-8.9"), (8.0, 5, "8-8.9"), (7.99, 5, "7-7.9"),
    (6.0, 5, "6-6.9"), (5.5, 5, "5-5.9"), (4.99, 5, "0-4.9"), (0.0, 5, "0-4.9"), (0.0, 0, "unrated"),
])
def test_rating_bands(avg, count, band):
    assert rating_band(avg, count) == band


def _movie(i: int, pop: float, avg: float, genres: list[int]) -> dict:
    return {**GOOD, "id": i, "title": f"Movie <{i}>", "popularity": pop, "vote_average": avg, "genre_ids": genres}


def test_report_top10_genres_bands_and_html():
    movies = [_movie(i, float(i), (i % 10) + 0.5, [28] if i % 2 else [35, 18]) for i in range(1, 31)]
    report = build_report(movies, "weekly", "2025-06-01T00:00:00Z", {35: "Comedy!"})
    assert [m["id"] for m in report["topByPopularity"]] == list(range(30, 20, -1))
    assert report["genreDistribution"] == {"Action": 15, "Comedy!": 15, "Drama": 15}
    assert sum(report["ratingBands"].values()) == 30 and report["ratingBands"]["9-10"] == 3
    page = render_html(report)
    assert page.count("<svg") == 4 and "Movie &lt;30&gt;" in page
    assert not re.search(r"<script|<link|src=|https?://(?!www\.w3\.org/2000/svg)", page)  # self-contained
