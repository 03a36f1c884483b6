"""A fake TMDB API v3 on a real loopback HTTP server, for tests, demos and the benchmark.

It serves deterministic data (``tmdb_data``) for every endpoint the collector
uses: the movie lists, trending, /discover/movie with its filters, /movie/changes,
/movie/{id} with append_to_response, /genre/movie/list, and the daily ID export
``/p/exports/movie_ids_MM_DD_YYYY.json.gz`` (gzipped JSON lines built from the
catalog; public, like files.tmdb.org); it answers 401 to a wrong or missing
credential the way TMDB does. And it misbehaves on request:

* ``latency_ms``: every response waits this long first;
* faults by rate (``fault_rates={"503": 0.1}``), decided by a hash of the request
  and how often it was seen, so the same run gets the same faults whatever the
  thread interleaving; or by schedule (``FaultRule("500", "movie/popular?page=2", times=2)``);
* fault kinds: ``429`` (no Retry-After, like TMDB's CDN), ``429-retry-after``,
  ``500``/``502``/``503``/``504``, ``timeout`` (sleeps past the client's timeout),
  ``malformed`` (200 with a body that is not the JSON promised), ``html`` (200 with
  an HTML page as ``text/html``: a captive portal or a proxy's page), ``truncated``
  (Content-Length promises more than is sent), ``reset`` (connection closed, no answer),
  ``404`` (e.g. today's export not published yet), and for export files only
  ``gzip-corrupt`` (bytes flipped mid-file) and ``gzip-truncated`` (the file cut in half,
  with an honest Content-Length);
* ``export_bad_line_rate``: that share of the export's lines are broken;
  ``export_extra_ids`` adds ids beyond the catalog (a big export at little cost);
* ``rate_limit``: a token bucket of that many requests a second, holding
  ``rate_limit_burst`` tokens (default: one second's worth); beyond, 429, with
  ``Retry-After: rate_limit_retry_after`` when set (TMDB's CDN sends none).

Counters (requests by status, route and fault; peak concurrency; ``early``:
requests that came while a Retry-After the server had sent was still running)
are at ``stats()`` and ``GET /__stats``.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from thresher.demo.fakes import tmdb_data as fakedata

FAULT_KINDS = ("429", "429-retry-after", "500", "502", "503", "504", "timeout", "malformed", "truncated", "reset",
               "404", "gzip-corrupt", "gzip-truncated", "html")
# Faults that retrying does not cure (a missing or broken file); the others are transient.
PERMANENT_FAULT_KINDS = ("404", "gzip-corrupt", "gzip-truncated")
EXPORT_PREFIX = "p/exports/"
_EXPORT_NAME = re.compile(r"^movie_ids_(\d{2})_(\d{2})_(\d{4})\.json\.gz$")
PAGE_SIZE = 20
CHANGES_PAGE_SIZE = 100
_TMDB_5XX = {500: (11, "Internal error: Something went wrong, contact TMDB."),
             502: (43, "Couldn't connect to the backend server."),
             503: (46, "The API is undergoing maintenance. Try again later."),
             504: (24, "Your request to the backend server timed out. Try again.")}


@dataclass
class FaultRule:
    """Inject ``kind`` into requests whose path contains ``match``'s path and whose query has its
    ``k=v`` pairs; the first ``times`` such requests (None: all of them)."""

    kind: str
    match: str
    times: int | None = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")

    def matches(self, path: str, query: dict[str, str]) -> bool:
        want_path, _, want_query = self.match.partition("?")
        if want_path and want_path.strip("/") not in path:
            return False
        for pair in filter(None, want_query.split("&")):
            key, _, value = pair.partition("=")
            if query.get(key) != value:
                return False
        return True


@dataclass
class FakeConfig:
    seed: int = 7
    movies: int = 15000
    reference_date: date = date(2025, 6, 1)
    api_key: str = "fake-api-key"
    bearer_token: str = "fake-read-token"
    latency_ms: float = 0.0
    fault_rates: dict[str, float] = field(default_factory=dict)
    fault_schedule: list[FaultRule] = field(default_factory=list)
    rate_limit: float | None = None  # requests a second, then 429
    rate_limit_burst: float | None = None  # the bucket's size; None: rate_limit (one second's worth)
    retry_after: str = "1"  # the Retry-After value sent with 429-retry-after faults
    rate_limit_retry_after: str | None = None  # Retry-After on rate-limit 429s (None: none, like the CDN)
    timeout_sleep_s: float = 3.0
    bad_data_rate: float = 0.0
    changes_per_day: int = 150
    export_extra_ids: int = 0
    export_bad_line_rate: float = 0.0

    def __post_init__(self) -> None:
        for kind in self.fault_rates:
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate limit must be > 0: {self.rate_limit}")
        if self.rate_limit_burst is not None and self.rate_limit_burst < 1:
            raise ValueError(f"rate-limit burst must be >= 1: {self.rate_limit_burst}")


def parse_fault(text: str) -> tuple[str, float] | FaultRule:
    """CLI fault syntax: ``KIND:RATE`` (e.g. ``503:0.1``) or ``KIND@MATCH[*N]`` (e.g.
    ``500@movie/popular?page=2*3``; ``*all`` for every matching request; default once)."""
    if "@" in text:
        kind, _, rest = text.partition("@")
        match, star, times = rest.rpartition("*") if "*" in rest else (rest, "", "")
        count = None if times == "all" else int(times) if star else 1
        return FaultRule(kind, match, count)
    kind, _, rate = text.rpartition(":")
    if not kind or kind not in FAULT_KINDS:
        raise ValueError(f"bad fault {text!r}: use KIND:RATE or KIND@MATCH[*N]; kinds: {', '.join(FAULT_KINDS)}")
    value = float(rate)
    if not 0 <= value <= 1:
        raise ValueError(f"fault rate must be in [0, 1]: {text!r}")
    return kind, value


class _Bucket:
    def __init__(self, rate: float, size: float | None = None) -> None:
        self.rate = rate
        self.size = size or rate
        self.tokens = self.size
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class FakeTmdb:
    """The fake's state and routing, independent of the HTTP plumbing."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        cfg = self.config
        self.catalog = fakedata.generate(cfg.seed, cfg.movies, cfg.reference_date, cfg.bad_data_rate)
        self.lock = threading.Lock()
        self.counters: Counter = Counter()
        self.by_status: Counter = Counter()
        self.by_route: Counter = Counter()
        self.faults: Counter = Counter()
        self.seen: Counter = Counter()  # how often each request (minus credentials) was seen
        self.in_flight = 0
        self.peak_in_flight = 0
        self.quiet_until = 0.0  # monotonic time until which the last Retry-After asked clients to wait
        self.bucket = _Bucket(cfg.rate_limit, cfg.rate_limit_burst) if cfg.rate_limit else None
        self._remaining = {id(rule): rule.times for rule in cfg.fault_schedule}
        self.stopping = threading.Event()
        ref = self.catalog.reference
        movies = self.catalog.movies
        by_pop = sorted(movies, key=lambda m: (-_num(m["popularity"]), m["id"]))
        self.lists = {
            "movie/popular": by_pop,
            "movie/top_rated": sorted((m for m in movies if _int(m["vote_count"]) >= 300),
                                      key=lambda m: (-_num(m["vote_average"]), m["id"])),
            "movie/now_playing": [m for m in by_pop
                                  if ref - timedelta(days=45) <= (_date(m["release_date"]) or date.min) <= ref],
            "movie/upcoming": [m for m in by_pop if (_date(m["release_date"]) or date.min) > ref],
            "trending/movie/day": self._trending(by_pop[:3000], "day"),
            "trending/movie/week": self._trending(by_pop[:3000], "week"),
        }
        self._discover_cache: dict[tuple, list[dict]] = {}
        self._export: bytes | None = None

    def export_entries(self):
        """The export's entries (dicts for good lines, bytes for broken ones): what every export file holds."""
        cfg = self.config
        return fakedata.export_entries(self.catalog, cfg.seed, cfg.export_extra_ids, cfg.export_bad_line_rate)

    def export_bytes(self) -> bytes:
        """The gzipped export, built once (every day's file has the same content)."""
        with self.lock:
            if self._export is None:
                lines = (e if isinstance(e, bytes) else json.dumps(e, separators=(",", ":")).encode()
                         for e in self.export_entries())
                # mtime=0: the same bytes on every start
                self._export = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
            return self._export

    def _trending(self, pool: list[dict], window: str) -> list[dict]:
        seed = self.config.seed
        return sorted(pool, key=lambda m: (-_num(m["popularity"]) * (0.3 + 1.4 * fakedata.unit(seed, window, m["id"])),
                                           m["id"]))

    # --- bookkeeping ---------------------------------------------------------

    def note(self, counter: str, key) -> None:
        with self.lock:
            getattr(self, counter)[key] += 1

    def stats(self) -> dict:
        with self.lock:
            return {
                "requests": self.counters["requests"],
                "byStatus": {str(k): v for k, v in sorted(self.by_status.items())},
                "byRoute": dict(sorted(self.by_route.items())),
                "faults": dict(sorted(self.faults.items())),
                "rateLimited": self.counters["rate_limited"],
                "early": self.counters["early"],
                "peakInFlight": self.peak_in_flight,
            }

    def reset_stats(self) -> None:
        with self.lock:
            # `seen` too: the rate-based faults of a run then do not depend on what ran before it.
            for c in (self.counters, self.by_status, self.by_route, self.faults, self.seen):
                c.clear()
            self.peak_in_flight = 0
            self.quiet_until = 0.0

    def asked_to_wait(self, retry_after: str) -> None:
        """Remember a Retry-After sent (delta-seconds only), to count requests that ignore it."""
        try:
            seconds = float(retry_after)
        except ValueError:
            return
        with self.lock:
            self.quiet_until = max(self.quiet_until, time.monotonic() + seconds)

    def set_rate_limit(self, rate: float | None, burst: float | None = None, retry_after: str | None = None) -> None:
        """Change the rate limit of a running server (between benchmark runs); the bucket starts full."""
        with self.lock:
            self.config.rate_limit, self.config.rate_limit_burst = rate, burst
            self.config.rate_limit_retry_after = retry_after
            self.bucket = _Bucket(rate, burst) if rate else None

    def set_faults(self, rates: dict[str, float] | None = None, schedule: list[FaultRule] | None = None) -> None:
        """Change the faults of a running server (between runs of a test)."""
        with self.lock:
            self.config.fault_rates = dict(rates or {})
            self.config.fault_schedule = list(schedule or [])
            self._remaining = {id(rule): rule.times for rule in self.config.fault_schedule}

    def choose_fault(self, path: str, query: dict[str, str]) -> str | None:
        """The fault for this request, if any: the schedule first, then the rates."""
        ident = path + "?" + "&".join(f"{k}={v}" for k, v in sorted(query.items()))
        with self.lock:
            self.seen[ident] += 1
            nth = self.seen[ident]
            for rule in self.config.fault_schedule:
                left = self._remaining.get(id(rule))
                if rule.matches(path, query) and (left is None or left > 0):
                    if left is not None:
                        self._remaining[id(rule)] = left - 1
                    return rule.kind
            rates = dict(self.config.fault_rates)
        cumulative = 0.0
        draw = fakedata.unit(self.config.seed, "fault", ident, nth)
        for kind in FAULT_KINDS:  # fixed order: the same draw maps to the same fault
            cumulative += rates.get(kind, 0.0)
            if draw < cumulative:
                return kind
        return None

    def authorized(self, query: dict[str, str], headers) -> bool:
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] == self.config.bearer_token:
            return True
        return query.get("api_key") == self.config.api_key

    # --- routes ----------------------------------------------------------------

    def route(self, path: str, query: dict[str, str]) -> tuple[int, dict]:
        """(status, body) for an authorized request."""
        path = path.strip("/")
        if path.startswith("3/"):
            path = path[2:]
        if path == "genre/movie/list":
            return 200, {"genres": [{"id": g, "name": n} for g, n in fakedata.GENRES.items()]}
        if path in self.lists:
            return self._page(self.lists[path], query, dates=path in ("movie/now_playing", "movie/upcoming"))
        if path == "discover/movie":
            try:
                movies = self._discover(query)
            except ValueError as err:
                return 400, _error(22, f"Invalid parameters: {err}")
            return self._page(movies, query)
        if path == "movie/changes":
            return self._changes(query)
        if path.startswith("movie/"):
            tail = path[len("movie/"):]
            if tail.isdigit():
                return self._details(int(tail), query)
        return 404, _error(34, "The resource you requested could not be found.")

    def _page(self, movies: list[dict], query: dict[str, str], dates: bool = False) -> tuple[int, dict]:
        page = _page_number(query.get("page", "1"))
        if page is None:
            return 400, _error(22, "Invalid page: Pages start at 1 and max at 500. They are expected to be an integer.")
        start = (page - 1) * PAGE_SIZE
        body = {"page": page, "results": movies[start:start + PAGE_SIZE],
                "total_pages": math.ceil(len(movies) / PAGE_SIZE), "total_results": len(movies)}
        if dates:
            ref = self.catalog.reference
            body["dates"] = {"minimum": (ref - timedelta(days=45)).isoformat(), "maximum": ref.isoformat()}
        return 200, body

    def _discover(self, query: dict[str, str]) -> list[dict]:
        keys = ("with_genres", "vote_average.gte", "vote_average.lte", "vote_count.gte", "vote_count.lte",
                "primary_release_date.gte", "primary_release_date.lte", "release_date.gte", "release_date.lte",
                "sort_by")
        cache_key = tuple(query.get(k) for k in keys)
        with self.lock:
            cached = self._discover_cache.get(cache_key)
        if cached is not None:
            return cached
        result = list(self.catalog.movies)
        genres = query.get("with_genres")
        if genres:
            if "|" in genres:
                wanted = {int(g) for g in genres.split("|")}
                result = [m for m in result if wanted & set(_ids(m))]
            else:
                wanted = {int(g) for g in genres.split(",")}
                result = [m for m in result if wanted <= set(_ids(m))]
        for key, field_name, cast in (("vote_average", "vote_average", float), ("vote_count", "vote_count", int)):
            if f"{key}.gte" in query:
                low = cast(query[f"{key}.gte"])
                result = [m for m in result if _num(m[field_name]) >= low]
            if f"{key}.lte" in query:
                high = cast(query[f"{key}.lte"])
                result = [m for m in result if _num(m[field_name]) <= high]
        for key in ("primary_release_date", "release_date"):
            if f"{key}.gte" in query:
                low = date.fromisoformat(query[f"{key}.gte"])
                result = [m for m in result if _date(m["release_date"]) and _date(m["release_date"]) >= low]
            if f"{key}.lte" in query:
                high = date.fromisoformat(query[f"{key}.lte"])
                result = [m for m in result if _date(m["release_date"]) and _date(m["release_date"]) <= high]
        sort_by = query.get("sort_by", "popularity.desc")
        field_name, _, order = sort_by.partition(".")
        field_name = {"primary_release_date": "release_date", "revenue": "popularity"}.get(field_name, field_name)
        if field_name not in ("popularity", "vote_average", "vote_count", "release_date", "title", "original_title"):
            raise ValueError(f"sort_by {sort_by!r}")
        reverse = order != "asc"
        result.sort(key=lambda m: (_sort_value(m.get(field_name)), -m["id"] if reverse else m["id"]), reverse=reverse)
        with self.lock:
            self._discover_cache[cache_key] = result
        return result

    def _changes(self, query: dict[str, str]) -> tuple[int, dict]:
        ref = date.today()
        try:
            end = date.fromisoformat(query["end_date"]) if "end_date" in query else ref
            start = date.fromisoformat(query["start_date"]) if "start_date" in query else end - timedelta(days=1)
        except ValueError:
            return 400, _error(22, "Invalid date format: dates must be YYYY-MM-DD.")
        if end < start or (end - start).days > 14:
            return 422, _error(20, "Invalid date range: Should be a range no longer than 14 days.")
        page = _page_number(query.get("page", "1"))
        if page is None:
            return 400, _error(22, "Invalid page: Pages start at 1 and max at 500. They are expected to be an integer.")
        seen: dict[int, bool] = {}
        day = start
        while day <= end:
            for mid, adult in fakedata.changed_ids(self.config.seed, day, self.catalog, self.config.changes_per_day):
                seen.setdefault(mid, adult)
            day += timedelta(days=1)
        entries = [{"id": mid, "adult": adult} for mid, adult in sorted(seen.items())]
        begin = (page - 1) * CHANGES_PAGE_SIZE
        return 200, {"results": entries[begin:begin + CHANGES_PAGE_SIZE], "page": page,
                     "total_pages": max(1, math.ceil(len(entries) / CHANGES_PAGE_SIZE)),
                     "total_results": len(entries)}

    def _details(self, movie_id: int, query: dict[str, str]) -> tuple[int, dict]:
        movie = self.catalog.by_id.get(movie_id)
        if movie is None:
            return 404, _error(34, "The resource you requested could not be found.")
        append = [a for a in query.get("append_to_response", "").split(",") if a]
        if len(append) > 20:
            return 400, _error(27, "Too many append to response objects: The maximum number of remote calls is 20.")
        return 200, fakedata.details(movie, append, self.config.seed)


def _error(code: int, message: str) -> dict:
    return {"success": False, "status_code": code, "status_message": message}


def _page_number(text: str) -> int | None:
    if not text.isdigit():
        return None
    page = int(text)
    return page if 1 <= page <= 500 else None


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ids(movie: dict) -> list[int]:
    return movie.get("genre_ids") or []


def _date(text) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None


def _sort_value(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value or ""))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's pooled connections are reused
    server_version = "FakeTMDB/1.0"
    fake: FakeTmdb  # set on the subclass made per server

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the counters are the record; per-request lines would drown test output

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path == "/__stats":
            self._send(200, fake.stats())
            return
        with fake.lock:
            fake.counters["requests"] += 1
            if time.monotonic() < fake.quiet_until:
                fake.counters["early"] += 1
            fake.in_flight += 1
            fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
        try:
            self._serve(fake, url.path, query)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _serve(self, fake: FakeTmdb, path: str, query: dict[str, str]) -> None:
        cfg = fake.config
        route = _route_name(path)
        fake.note("by_route", route)
        if fake.bucket is not None and not fake.bucket.take():
            with fake.lock:
                fake.counters["rate_limited"] += 1
            headers = {"Retry-After": cfg.rate_limit_retry_after} if cfg.rate_limit_retry_after else {}
            if cfg.rate_limit_retry_after:
                fake.asked_to_wait(cfg.rate_limit_retry_after)
            self._send(429, _error(25, f"Your request count is over the allowed limit of {cfg.rate_limit:g}."),
                       headers)
            return
        if cfg.latency_ms:
            fake.stopping.wait(cfg.latency_ms / 1000.0)
        visible_query = {k: v for k, v in query.items() if k != "api_key"}
        fault = fake.choose_fault(path.strip("/").removeprefix("3/"), visible_query)
        if fault:
            fake.note("faults", fault)
            if self._inject(fault, fake):
                return
        if path.strip("/").startswith(EXPORT_PREFIX):  # public files: no credential
            self._serve_export(fake, path.strip("/")[len(EXPORT_PREFIX):], fault)
            return
        if not fake.authorized(query, self.headers):
            self._send(401, _error(7, "Invalid API key: You must be granted a valid key."))
            return
        status, body = fake.route(path, visible_query)
        self._send(status, body)

    def _serve_export(self, fake: FakeTmdb, name: str, fault: str | None) -> None:
        match = _EXPORT_NAME.match(name)
        try:
            valid = bool(match) and date(int(match[3]), int(match[1]), int(match[2])) is not None
        except ValueError:
            valid = False
        if not valid:
            self._send(404, _error(34, "The resource you requested could not be found."))
            return
        data = fake.export_bytes()
        if fault == "gzip-corrupt":
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]
        elif fault == "gzip-truncated":
            data = data[: len(data) // 2]
        self._raw(200, data, content_type="application/gzip")

    def _inject(self, fault: str, fake: FakeTmdb) -> bool:
        """Misbehave; True when the response is done (or the connection dropped)."""
        if fault in ("gzip-corrupt", "gzip-truncated"):
            return False  # export files only: applied by _serve_export
        if fault == "404":
            self._send(404, _error(34, "The resource you requested could not be found."))
        elif fault == "429":
            self._send(429, _error(25, "Your request count is over the allowed limit."))
        elif fault == "429-retry-after":
            fake.asked_to_wait(fake.config.retry_after)
            self._send(429, _error(25, "Your request count is over the allowed limit."),
                       {"Retry-After": fake.config.retry_after})
        elif fault in ("500", "502", "503", "504"):
            code, message = _TMDB_5XX[int(fault)]
            self._send(int(fault), _error(code, message))
        elif fault == "timeout":
            fake.stopping.wait(fake.config.timeout_sleep_s)
            self.close_connection = True
            return False  # answer late: by now the client has given up
        elif fault == "malformed":
            variant = fake.counters["requests"] % 3
            body = [b'{"page": 1, "results": [{"id": 1, "title": ', b"<html><body>502 Bad Gateway</body></html>",
                    b'{"unexpected": true}'][variant]
            self._raw(200, body)
        elif fault == "html":
            self._raw(200, b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
                           b"<body><p>Please accept the terms to continue.</p></body></html>",
                      content_type="text/html; charset=utf-8")
        elif fault == "truncated":
            body = b'{"page": 1, "results": [' + b'{"id": 1, "title": "x"},' * 40 + b'{"id": 2}], "total_pages": 1}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif fault == "reset":
            self.close_connection = True
        return True

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(body, separators=(",", ":")).encode(), headers)

    def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None,
             content_type: str = "application/json;charset=utf-8") -> None:
        self.fake.note("by_status", status)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout fault): nothing to answer


def _route_name(path: str) -> str:
    """A bounded route label for the counters (movie ids folded)."""
    path = path.strip("/").removeprefix("3/")
    if path.startswith(EXPORT_PREFIX):
        return "exports"
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "movie" and parts[1].isdigit():
        return "movie/{id}"
    return path


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in a timeout fault must not block the process exit
    request_queue_size = 128  # the default 5 refuses connects when 32 workers open at once


class FakeTmdbServer:
    """The fake on a ThreadingHTTPServer, started in a background thread."""

    def __init__(self, config: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = FakeTmdb(config)
        handler = type("FakeTmdbHandler", (_Handler,), {"fake": self.fake})
        self.httpd = _HttpServer((host, port), handler)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/3"

    @property
    def export_base_url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/{EXPORT_PREFIX.rstrip('/')}"

    @property
    def config(self) -> FakeConfig:
        return self.fake.config

    def stats(self) -> dict:
        return self.fake.stats()

    def start(self) -> FakeTmdbServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-tmdb", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.fake.stopping.set()  # wakes handlers sleeping in latency or timeout faults
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join(timeout=5)


@contextmanager
def running_fake_server(config: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0):
    """Start a fake TMDB on a free loopback port in a thread; yield the server; stop it after."""
    server = FakeTmdbServer(config, host, port).start()
    try:
        yield server
    finally:
        server.stop()
