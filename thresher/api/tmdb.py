"""The ``tmdb`` job block of a CollectionSchedule: what the TMDB collector fetches and how.

The operator renders this model, as camelCase JSON, into the job's ``--spec``
argument; the CRD's ``kubectl explain`` text comes from the field descriptions
below. Everything here is plain JSON-schema material (Literal, ranges,
patterns), so the CRD generator can express every constraint; the one
cross-field rule (``custom`` needs ``sources``) is also simple enough to
write as CEL: ``self.collection != 'custom' || size(self.sources) > 0``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Collection = Literal["daily", "weekly", "hourly", "monthly", "changes", "sweep", "custom"]
Endpoint = Literal["popular", "top_rated", "now_playing", "upcoming", "trending_day", "trending_week", "discover"]

# TMDB refuses page > 500 (HTTP 400, status_code 22) and more than 20 appended responses (code 27).
MAX_PAGE = 500
MAX_APPEND = 20
# /movie/changes accepts windows of at most 14 days (HTTP 422, status_code 20 beyond).
MAX_CHANGES_WINDOW_DAYS = 14
# TMDB's daily ID exports (movie_ids_MM_DD_YYYY.json.gz), published around 07:00-08:00 UTC.
DEFAULT_EXPORT_BASE_URL = "https://files.tmdb.org/p/exports"
# One /movie/{id} request a movie: 10000 is about 4.5 minutes at the default 38 requests/s.
DEFAULT_MAX_DETAIL_REQUESTS = 10000
# TMDB's limit is "somewhere in the 40 requests per second range" per IP: 5% below it. The limiter
# backs off on 429s by itself, so the default need not leave more (benchmarks: docs/benchmarks.md).
DEFAULT_REQUESTS_PER_SECOND = 38.0
# Cross-field rule, as CEL for the CRD generator.
CUSTOM_NEEDS_SOURCES_CEL = "self.collection != 'custom' || (has(self.sources) && size(self.sources) > 0)"

_HOURS_PATTERN = r"^([01][0-9]|2[0-3])-([01][0-9]|2[0-3])$"


class SecretKeyRef(BaseModel):
    """A key of a Secret in the schedule's namespace."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the Secret, in the same namespace as the CollectionSchedule.",
    )
    key: str = Field(
        default="api-key", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret that holds the TMDB v3 API key or v4 read access token.",
    )


class TmdbSource(BaseModel):
    """One TMDB list to fetch, pages 1..pages, for the ``custom`` collection."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    endpoint: Endpoint = Field(
        description="TMDB list: popular, top_rated, now_playing, upcoming (/movie/...), trending_day, "
        "trending_week (/trending/movie/...) or discover (/discover/movie, filtered by params).",
    )
    pages: int = Field(
        default=1, ge=1, le=MAX_PAGE,
        description="Fetch pages 1..pages (20 movies a page). TMDB serves at most 500 pages.",
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Extra query parameters, e.g. with_genres=28, vote_average.gte=7.5, "
        "primary_release_date.gte=2024-01-01, sort_by=vote_average.desc. "
        "page, api_key and language are set by the job.",
    )
    label: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-z0-9][-a-z0-9_.]*$",
        description="Name of this source in manifests and reports; defaults to the endpoint name "
        "(plus the index for repeated endpoints).",
    )


class TmdbJob(BaseModel):
    """A TMDB movie-data collection: a preset (daily, weekly, hourly, monthly, changes, sweep) or custom sources."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    collection: Collection = Field(
        default="daily",
        description="What to collect. daily: popular p1-5 + trending day + now playing p1-3. weekly: "
        "discover for Action, Comedy, Drama, Horror, Romance p1-15 each + top rated (vote average >= 7.5) "
        "p1-20 + trending week, with a report. hourly: trending day, within operatingHours only. "
        "monthly: popular p1-50 with a report. changes: movies changed in the last changesWindowDays "
        "(/movie/changes), with details. sweep: every movie id of TMDB's daily ID export (streamed), "
        "with details for the ids the catalog has no record of yet. custom: the lists in sources.",
    )
    sources: list[TmdbSource] = Field(
        default_factory=list, max_length=50,
        description="The lists to fetch when collection is custom (required then, ignored otherwise).",
    )
    language: str = Field(
        default="en-US", pattern=r"^[a-z]{2}(-[A-Z]{2})?$",
        description="ISO 639-1 language (optionally with ISO 3166-1 region) for titles and overviews.",
    )
    region: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$",
        description="ISO 3166-1 country code that filters now_playing/upcoming release dates; unset: TMDB's default.",
    )
    enrich: bool = Field(
        default=False,
        description="Fetch /movie/{id} for every movie collected (runtime, budget, genres, appended data). "
        "One extra request a movie.",
    )
    append_to_response: list[str] = Field(
        default_factory=list, alias="appendToResponse", max_length=MAX_APPEND,
        description="Sub-requests appended to each detail request when enrich is on or collection is "
        "changes, e.g. credits, keywords, release_dates, external_ids (TMDB allows at most 20).",
    )
    changes_window_days: int = Field(
        default=1, alias="changesWindowDays", ge=1, le=MAX_CHANGES_WINDOW_DAYS,
        description="For collection changes: how many days back from now to ask /movie/changes for "
        "(TMDB allows at most 14).",
    )
    max_detail_requests: int = Field(
        default=DEFAULT_MAX_DETAIL_REQUESTS, alias="maxDetailRequests", ge=0, le=1_000_000,
        description="At most this many /movie/{id} requests a run (changes, sweep, enrich). The rest are "
        "skipped and counted in a warning; the run still succeeds. 0: no detail requests.",
    )
    export_base_url: str | None = Field(
        default=None, alias="exportBaseUrl", pattern=r"^https?://[^\s]+$",
        description="Override of where the daily ID exports are downloaded from (a mirror or a fake "
        f"server), for collection sweep; default {DEFAULT_EXPORT_BASE_URL}.",
    )
    min_popularity: float = Field(
        default=0.0, alias="minPopularity", ge=0,
        description="For collection sweep: keep only export ids whose popularity is at least this "
        "(0 keeps all; about 1.2 million ids).",
    )
    include_adult: bool = Field(
        default=False, alias="includeAdult",
        description="Keep adult entries of the ID export (sweep) and of /movie/changes (changes).",
    )
    include_video: bool = Field(
        default=False, alias="includeVideo",
        description="For collection sweep: keep export entries flagged video (not feature films).",
    )
    operating_hours: str | None = Field(
        default=None, alias="operatingHours", pattern=_HOURS_PATTERN,
        description="Only collect when the local hour is within START-END, both inclusive, e.g. 08-22 "
        "(22-06 wraps midnight); outside them the run succeeds with a skipped result. Default: 08-22 "
        "for hourly, always for the others.",
    )
    time_zone: str | None = Field(
        default=None, alias="timeZone", max_length=64, pattern=r"^[A-Za-z_+\-0-9/]+$",
        description="IANA time zone for operatingHours, e.g. Europe/Berlin; unset: the container's local "
        "time (TZ).",
    )
    api_key_secret_ref: SecretKeyRef = Field(
        alias="apiKeySecretRef",
        description="Secret key holding the TMDB credential (v3 API key, or v4 read access token). It is "
        "mounted into the job as the TMDB_API_KEY environment variable, never written inline.",
    )
    api_base_url: str | None = Field(
        default=None, alias="apiBaseUrl", pattern=r"^https?://[^\s]+$",
        description="Override of the TMDB API base URL (a proxy or a fake server); default "
        "https://api.themoviedb.org/3.",
    )
    requests_per_second: float = Field(
        default=DEFAULT_REQUESTS_PER_SECOND, alias="requestsPerSecond", gt=0, le=40,
        description="The most requests a second, shared by all workers. TMDB allows about 40/s per IP; the "
        "default (38) keeps 5% below. On 429s the job slows down on its own (cut once per burst, paused "
        "for Retry-After) and climbs back to this rate; lower it when other clients share the IP.",
    )
    workers: int = Field(
        default=8, ge=1, le=32,
        description="Concurrent requests (threads and pooled connections).",
    )
    request_timeout_seconds: float = Field(
        default=10.0, alias="requestTimeoutSeconds", gt=0, le=120,
        description="Timeout of one HTTP request (connect and read); a timeout is retried.",
    )
    max_retries: int = Field(
        default=5, alias="maxRetries", ge=0, le=10,
        description="Retries of one request on 429, 5xx, timeouts, connection errors and malformed "
        "responses, with exponential backoff and full jitter (Retry-After honoured).",
    )

    @model_validator(mode="after")
    def _custom_needs_sources(self) -> TmdbJob:
        # Same rule as CUSTOM_NEEDS_SOURCES_CEL, for when the spec is checked outside the API server.
        if self.collection == "custom" and not self.sources:
            raise ValueError("collection 'custom' needs at least one entry in sources")
        return self

    def effective_operating_hours(self) -> str | None:
        """The operating hours in force: the explicit ones, else 08-22 for hourly, else none."""
        if self.operating_hours is not None:
            return self.operating_hours
        return "08-22" if self.collection == "hourly" else None


def tmdb_job_schema() -> dict:
    """JSON schema of the tmdb block (by alias), for the CRD generator and docs."""
    return TmdbJob.model_json_schema(by_alias=True)
