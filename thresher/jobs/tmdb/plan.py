"""Pure planning: which pages a collection fetches, operating hours, /movie/changes windows.

The presets keep parity with the old in-process scheduler (see docs/tmdb.md):

* daily: popular 1-5, trending (day) 1, now_playing 1-3;
* weekly: discover for Action 28, Comedy 35, Drama 18, Horror 27, Romance 10749
  (pages 1-15 each, by popularity), "top rated >= 7.5" pages 1-20, trending (week) 1;
* hourly: trending (day) 1;
* monthly: popular 1-50.

"Top rated >= 7.5" is /discover/movie with vote_average.gte=7.5,
sort_by=vote_average.desc and vote_count.gte=300. /movie/top_rated cannot be
filtered server-side, and discover without a vote-count floor is topped by
movies with one 10/10 vote; 300 is about the floor TMDB's own top-rated list uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from thresher.api.tmdb import MAX_CHANGES_WINDOW_DAYS, MAX_PAGE, TmdbJob, TmdbSource

ENDPOINT_PATHS = {
    "popular": "movie/popular",
    "top_rated": "movie/top_rated",
    "now_playing": "movie/now_playing",
    "upcoming": "movie/upcoming",
    "trending_day": "trending/movie/day",
    "trending_week": "trending/movie/week",
    "discover": "discover/movie",
}

# Endpoints that accept a region filter (TMDB ignores it elsewhere; we do not send it there).
_REGION_ENDPOINTS = {"popular", "top_rated", "now_playing", "upcoming"}

WEEKLY_GENRES = {"action": 28, "comedy": 35, "drama": 18, "horror": 27, "romance": 10749}
TOP_RATED_PARAMS = {"vote_average.gte": "7.5", "vote_count.gte": "300", "sort_by": "vote_average.desc"}

PRESETS: dict[str, list[TmdbSource]] = {
    "daily": [
        TmdbSource(endpoint="popular", pages=5),
        TmdbSource(endpoint="trending_day", pages=1),
        TmdbSource(endpoint="now_playing", pages=3),
    ],
    "weekly": [
        *[
            TmdbSource(endpoint="discover", pages=15, label=f"genre-{name}",
                       params={"with_genres": str(gid), "sort_by": "popularity.desc"})
            for name, gid in WEEKLY_GENRES.items()
        ],
        TmdbSource(endpoint="discover", pages=20, label="top-rated-7.5", params=dict(TOP_RATED_PARAMS)),
        TmdbSource(endpoint="trending_week", pages=1),
    ],
    "hourly": [TmdbSource(endpoint="trending_day", pages=1)],
    "monthly": [TmdbSource(endpoint="popular", pages=50)],
}

# Collections that end with a report (top movies, genre and rating distributions).
REPORT_COLLECTIONS = {"weekly", "monthly"}


@dataclass(frozen=True)
class PageTask:
    """One list page to fetch."""

    source: str  # the source label, e.g. popular or genre-action
    endpoint: str
    path: str
    page: int
    params: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.source}:{self.page}"

    def query(self) -> dict[str, str | int]:
        return {**dict(self.params), "page": self.page}


def sources_for(job: TmdbJob) -> list[TmdbSource]:
    """The list sources a collection fetches (none for changes: it has its own plan)."""
    if job.collection == "custom":
        return list(job.sources)
    if job.collection == "changes":
        return []
    return list(PRESETS[job.collection])


def source_labels(sources: list[TmdbSource]) -> list[str]:
    """Unique labels: the explicit label, else the endpoint, numbered when an endpoint repeats."""
    labels: list[str] = []
    seen: dict[str, int] = {}
    for src in sources:
        base = src.label or src.endpoint
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return labels


def plan_pages(job: TmdbJob) -> list[PageTask]:
    """Every list page the run must fetch, in a stable order, capped at TMDB's page 500."""
    sources = sources_for(job)
    tasks: list[PageTask] = []
    for label, src in zip(source_labels(sources), sources):
        params = {k: v for k, v in src.params.items() if k not in ("page", "api_key")}
        if job.region and src.endpoint in _REGION_ENDPOINTS and "region" not in params:
            params["region"] = job.region
        frozen = tuple(sorted(params.items()))
        for page in range(1, min(src.pages, MAX_PAGE) + 1):
            tasks.append(PageTask(label, src.endpoint, ENDPOINT_PATHS[src.endpoint], page, frozen))
    return tasks


# --- operating hours ------------------------------------------------------------

def parse_hours(spec: str) -> tuple[int, int]:
    start, _, end = spec.partition("-")
    first, last = int(start), int(end)
    if not (0 <= first <= 23 and 0 <= last <= 23):
        raise ValueError(f"operating hours out of range: {spec!r}")
    return first, last


def within_operating_hours(spec: str | None, local_now: datetime) -> bool:
    """Whether ``local_now`` falls in START-END (hours, both inclusive; END < START wraps midnight).

    "08-22" runs from 08:00 to 22:59, matching a cron hour field ``8-22``.
    """
    if spec is None:
        return True
    first, last = parse_hours(spec)
    hour = local_now.hour
    if first <= last:
        return first <= hour <= last
    return hour >= first or hour <= last


# --- /movie/changes windows ----------------------------------------------------

def changes_windows(start: date, end: date, max_days: int = MAX_CHANGES_WINDOW_DAYS) -> list[tuple[date, date]]:
    """Split [start, end] (dates, inclusive) into consecutive windows of at most ``max_days`` days.

    TMDB refuses windows over 14 days with 422; a longer range (a catch-up after
    an outage) becomes several requests, oldest first, with no gap or overlap.
    """
    if end < start:
        raise ValueError("end before start")
    if max_days < 1:
        raise ValueError("max_days must be >= 1")
    windows = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + timedelta(days=max_days - 1))
        windows.append((cursor, last))
        cursor = last + timedelta(days=1)
    return windows


def changes_range(now_utc: datetime, window_days: int) -> tuple[date, date]:
    """The date range for a changes run: ``window_days`` full days back, plus today so far (UTC).

    A daily run just after midnight thus still sees all of yesterday. The range
    may be one day longer than a TMDB window; ``changes_windows`` splits it.
    """
    today = now_utc.date()
    return today - timedelta(days=window_days), today
