"""One collection run: plan, fetch concurrently, validate, de-duplicate, store, report.

The decisions are the pure functions of ``plan``, ``quality`` and ``report``
(and ``decide_exit`` below); this module wires them to the client and the
storage, and accounts for every planned request: each page ends up fetched or
in the failed list of the manifest and the run result, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from thresher.api.names import ExitCode
from thresher.api.runresult import RunResult
from thresher.api.tmdb import DEFAULT_EXPORT_BASE_URL, TmdbJob
from thresher.jobs.harness import ConfigError, JobError, UpstreamError
from thresher.jobs.tmdb import plan as planning
from thresher.jobs.tmdb import tabular
from thresher.jobs.tmdb.client import AuthError, NotFound, TmdbClient, TmdbError, Unreachable
from thresher.jobs.tmdb.export import (
    DetailPicker, ExportUnavailable, cap_ids, check_line, export_dates, export_name, export_url,
    gunzip_lines, response_chunks, sweep_filter,
)
from thresher.jobs.tmdb.quality import (
    Observation, QualityReport, Thresholds, assess, dedupe, genre_ids_of, split_valid, threshold_findings,
)
from thresher.jobs.tmdb.report import build_report, render_html
from thresher.jobs.tmdb.storage import (
    CATALOG, EXPORT_IDS, REJECTS, SNAPSHOTS_DIR, TMP_PREFIX, Catalog, data_dir_lock, failed_run_id, read_jsonl,
    read_manifest, remove_stale_tmp, snapshot_name, write_snapshot,
)

log = logging.getLogger("thresher.tmdb")

T = TypeVar("T")
R = TypeVar("R")

SKIPPED_OUTSIDE_HOURS = "skipped: outside operating hours"


class _Aborted(Exception):
    pass


def run_concurrently(items: list[T], key: Callable[[T], str], fn: Callable[[T], R], workers: int,
                     label: str) -> tuple[dict[str, R], dict[str, str]]:
    """Run ``fn`` over ``items`` on a bounded thread pool; return (results, failures) by key.

    A ``TmdbError`` fails only its item. An ``AuthError`` (the key was revoked
    mid-run) stops the rest from being sent and is re-raised: every other
    request would get the same 401. Anything else is a bug and propagates.
    """
    results: dict[str, R] = {}
    failures: dict[str, str] = {}
    if not items:
        return results, failures
    abort = threading.Event()
    fatal: list[AuthError] = []

    def guarded(item: T) -> R:
        if abort.is_set():
            raise _Aborted()
        try:
            return fn(item)
        except AuthError:
            abort.set()
            raise

    step = max(1, len(items) // 10)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"tmdb-{label}") as pool:
        futures = {pool.submit(guarded, item): key(item) for item in items}
        for done, future in enumerate(as_completed(futures), 1):
            name = futures[future]
            try:
                results[name] = future.result()
            except AuthError as err:
                fatal.append(err)
                failures[name] = str(err)
            except _Aborted:
                failures[name] = "not sent: the credential was rejected by an earlier request"
            except TmdbError as err:
                failures[name] = str(err)
            if done % step == 0 or done == len(items):
                log.info("progress", extra={"phase": label, "done": done, "total": len(items),
                                            "failed": len(failures),
                                            "elapsedSeconds": round(time.monotonic() - started, 2)})
    if fatal:
        raise fatal[0]
    return results, failures


# --- phases ------------------------------------------------------------------------

@dataclass
class PagePhase:
    planned: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    total_pages: dict[str, int] = field(default_factory=dict)  # what each fetched page said
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"planned": len(self.planned), "fetched": len(self.fetched), "empty": len(self.empty),
                "failed": [{"page": k, "error": v} for k, v in sorted(self.failed.items())],
                "seconds": round(self.seconds, 3)}


@dataclass
class DetailPhase:
    requested: int = 0
    fetched: dict[int, dict] = field(default_factory=dict)
    not_found: list[int] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0  # left out by maxDetailRequests
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"requested": self.requested, "fetched": len(self.fetched), "notFound": sorted(self.not_found),
                "failed": [{"movie": k, "error": v} for k, v in sorted(self.failed.items())],
                "skipped": self.skipped, "seconds": round(self.seconds, 3)}


@dataclass
class ExportPhase:
    """What a sweep read from the daily ID export."""

    tried: list[str] = field(default_factory=list)  # file names, newest first
    used: str | None = None
    day: str | None = None  # ISO date of the export used
    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    problems: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # adult, video, popularity
    known: int = 0  # accepted ids the catalog already has details for
    new: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"tried": self.tried, "file": self.used, "date": self.day, "lines": self.lines,
                "accepted": self.accepted, "rejected": self.rejected, "problems": dict(self.problems.most_common(20)),
                "skipped": dict(sorted(self.skipped.items())), "known": self.known, "new": self.new,
                "seconds": round(self.seconds, 3)}


def fetch_pages(client: TmdbClient, tasks: list[planning.PageTask], workers: int, label: str,
                clock: Callable[[], float] = time.time, phase: PagePhase | None = None) -> PagePhase:
    """Fetch list pages concurrently; every task ends in ``fetched`` or ``failed``."""
    phase = phase or PagePhase()
    started = time.monotonic()

    def one(task: planning.PageTask) -> dict:
        data = client.get(task.path, task.query(), expect=("results",))
        if not isinstance(data["results"], list):
            raise TmdbError(f"GET /{task.path} page {task.page}: results is not a list")
        return data

    pages, failed = run_concurrently(tasks, lambda t: t.key, one, workers, label)
    for task in tasks:  # plan order keeps observations (and so de-dup ties) deterministic
        phase.planned.append(task.key)
        if task.key in failed:
            phase.failed[task.key] = failed[task.key]
            continue
        data = pages[task.key]
        phase.fetched.append(task.key)
        if not data["results"]:
            phase.empty.append(task.key)
        if isinstance(data.get("total_pages"), int):
            phase.total_pages[task.key] = data["total_pages"]
        fetched_at = clock()
        phase.observations.extend(Observation(movie, task.key, fetched_at) for movie in data["results"])
    phase.seconds += time.monotonic() - started
    return phase


def fetch_details(client: TmdbClient, ids: list[int], append: list[str], workers: int,
                  skipped: int = 0) -> DetailPhase:
    """GET /movie/{id} (with append_to_response) for each id; 404s are movies TMDB no longer has.

    ``skipped`` is how many more ids the caller left out for ``maxDetailRequests``, for the record.
    """
    phase = DetailPhase(requested=len(ids), skipped=skipped)
    started = time.monotonic()
    params = {"append_to_response": ",".join(append)} if append else {}

    def one(movie_id: int) -> dict | None:
        try:
            return client.get(f"movie/{movie_id}", params, expect=("id",))
        except NotFound:
            return None

    results, failed = run_concurrently(ids, str, one, workers, "details")
    for movie_id in ids:
        if str(movie_id) in failed:
            phase.failed[str(movie_id)] = failed[str(movie_id)]
        elif results[str(movie_id)] is None:
            phase.not_found.append(movie_id)
        else:
            phase.fetched[movie_id] = results[str(movie_id)]
    phase.seconds = time.monotonic() - started
    return phase


def merge_detail(movie: dict, detail: dict, fetched_at: float) -> dict:
    """A list record enriched with its detail record (detail wins; genre_ids kept in list form)."""
    merged = {**movie, **{k: v for k, v in detail.items() if not k.startswith("_")}}
    if "genres" in detail:
        merged["genre_ids"] = genre_ids_of(detail)
    merged["_enriched"] = True
    merged["_fetched_at"] = fetched_at
    return merged


def changes_tasks(job: TmdbJob, now_utc: datetime) -> list[planning.PageTask]:
    """Page 1 of every /movie/changes window of the run's date range."""
    start, end = planning.changes_range(now_utc, job.changes_window_days)
    return [
        planning.PageTask(f"changes-{first.isoformat()}", "changes", "movie/changes", 1,
                          (("end_date", last.isoformat()), ("start_date", first.isoformat())))
        for first, last in planning.changes_windows(start, end)
    ]


def fetch_changes(client: TmdbClient, job: TmdbJob, now_utc: datetime, workers: int,
                  clock: Callable[[], float] = time.time) -> PagePhase:
    """Page 1 of each window tells total_pages; the other pages then go concurrently (capped at 500)."""
    firsts = changes_tasks(job, now_utc)
    phase = fetch_pages(client, firsts, workers, "changes", clock)
    # Changes pages list {id, adult}; the movies themselves come from the details phase.
    rest = []
    for task in firsts:
        if task.key in phase.failed:
            continue
        total = phase.total_pages.get(task.key, 1)
        rest.extend(planning.PageTask(task.source, task.endpoint, task.path, page, task.params)
                    for page in range(2, min(total, planning.MAX_PAGE) + 1))
    if rest:
        fetch_pages(client, rest, workers, "changes", clock, phase)
    return phase


def fetch_export(client: TmdbClient, base_url: str, job: TmdbJob, now_utc: datetime, catalog: Catalog,
                 spool: Path) -> tuple[ExportPhase, DetailPicker]:
    """Stream the newest published daily ID export into ``spool`` (ids.jsonl, rejects.jsonl).

    Today's file may not be out yet (published ~07:00-08:00 UTC): a 404 moves
    on to the day before, a few days at most (``ExportUnavailable`` then). A
    corrupt or truncated file raises ``ExportCorrupt``. Returns the counts and
    the picker holding the new ids to fetch details for.
    """
    phase = ExportPhase()
    picker = DetailPicker(job.max_detail_requests)
    started = time.monotonic()
    for day in export_dates(now_utc):
        phase.tried.append(export_name(day))
        try:
            with client.stream(export_url(base_url, day)) as response:
                phase.used, phase.day = export_name(day), day.isoformat()
                _read_export(gunzip_lines(response_chunks(response)), job, catalog, spool,
                             phase, picker)
        except NotFound:
            continue
        phase.seconds = time.monotonic() - started
        return phase, picker
    raise ExportUnavailable(f"no daily ID export published: {', '.join(phase.tried)} all answered 404")


def _read_export(lines: Iterable[bytes], job: TmdbJob, catalog: Catalog, spool: Path, phase: ExportPhase,
                 picker: DetailPicker, batch_size: int = 500) -> None:
    """Check, filter and spool each line as it comes; look ids up in the catalog a batch at a time."""
    batch: list[dict] = []

    def offer(records: list[dict]) -> None:
        known = catalog.known_movie_ids([r["id"] for r in records])
        for record in records:
            if record["id"] in known:
                phase.known += 1
            else:
                phase.new += 1
                picker.offer(record["id"], record["popularity"])

    with open(spool / EXPORT_IDS, "w", encoding="utf-8") as ids_out, \
            open(spool / REJECTS, "w", encoding="utf-8") as rejects_out:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            phase.lines += 1
            record, problems = check_line(raw)
            if record is None:
                phase.rejected += 1
                phase.problems.update(problems)
                rejects_out.write(json.dumps({"_line": number, "_raw": raw[:200].decode("utf-8", "replace"),
                                              "_problems": problems}, ensure_ascii=False) + "\n")
                continue
            reason = sweep_filter(record, job.include_adult, job.include_video, job.min_popularity)
            if reason:
                phase.skipped[reason] += 1
                continue
            phase.accepted += 1
            ids_out.write(json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n")
            batch.append(record)
            if len(batch) >= batch_size:
                offer(batch)
                batch = []
            if phase.lines % 100_000 == 0:
                log.info("progress", extra={"phase": "export", "lines": phase.lines, "accepted": phase.accepted,
                                            "rejected": phase.rejected})
        offer(batch)



# --- the run -------------------------------------------------------------------------

def decide_exit(planned: int, fetched: int, failed_requests: int, threshold_failed: bool) -> ExitCode:
    """The run's exit code from its counts (precedence: nothing fetched > partial > quality).

    A run that fetched nothing is an upstream failure (retrying later may help);
    one that lost some requests after retries is PARTIAL, even if its quality
    passed, because its data has holes; otherwise the quality thresholds decide.
    """
    if planned and not fetched:
        return ExitCode.UPSTREAM
    if failed_requests:
        return ExitCode.PARTIAL
    if threshold_failed:
        return ExitCode.QUALITY
    return ExitCode.OK


def local_time(now_utc: datetime, zone: str | None) -> datetime:
    """``now_utc`` in the job's time zone, or in the process's local zone (TZ) when none is set."""
    if zone:
        try:
            return now_utc.astimezone(ZoneInfo(zone))
        except (KeyError, ValueError) as err:  # ZoneInfoNotFoundError is a KeyError
            raise ConfigError(f"unknown timeZone {zone!r}: {err}") from None
    return now_utc.astimezone()


@dataclass
class RunOutcome:
    result: RunResult
    exit_code: ExitCode
    snapshot: Path | None = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summarize_failures(kind: str, failed: dict[str, str], total: int, limit: int = 3) -> str:
    """'2 of 30 pages failed: popular:2: ...; ...': each failure's own message says whether it was
    retried (and how often) or why not."""
    shown = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())[:limit])
    more = f" (+{len(failed) - limit} more in the manifest)" if len(failed) > limit else ""
    return f"{len(failed)} of {total} {kind} failed: {shown}{more}"


def throttle_note(stats: dict, max_retries: int) -> str | None:
    """What the 429s of a run came to, truthfully: how many were retried, how many ended a request."""
    throttled = stats.get("throttled", 0)
    if not throttled:
        return None
    retried = stats.get("retried", {}).get("http_429", 0)
    gave_up = stats.get("gaveUp", {}).get("http_429", 0)
    note = f"TMDB throttled {throttled} requests (429): {retried} retried"
    if gave_up:
        why = "maxRetries is 0" if max_retries == 0 else "retries used up"
        note += f", {gave_up} not retried ({why}): those requests failed"
    return note


def missing_parts(pages: PagePhase | None, details: DetailPhase | None) -> dict[str, list]:
    """The holes of a snapshot: pages and detail requests that failed (empty when complete)."""
    missing: dict[str, list] = {}
    if pages is not None and pages.failed:
        missing["pages"] = sorted(pages.failed)
    if details is not None and details.failed:
        missing["details"] = sorted(int(k) for k in details.failed)
    return missing


def skipped_outcome(job: TmdbJob, local_now: datetime) -> RunOutcome:
    hours = job.effective_operating_hours()
    note = f"{SKIPPED_OUTSIDE_HOURS} ({hours}, local time {local_now.strftime('%H:%M %Z')})"
    log.info(note)
    return RunOutcome(RunResult(job_type="tmdb", succeeded=True, items=0, valid=0, failed=0,
                                warnings=[note], exit_code=int(ExitCode.OK)), ExitCode.OK)


def run_collection(job: TmdbJob, client: TmdbClient, data_dir: Path, thresholds: Thresholds | None = None,
                   now: datetime | None = None, clock: Callable[[], float] = time.time,
                   export_base_url: str | None = None, logical_time: datetime | None = None) -> RunOutcome:
    """Run one collection end to end and return its outcome (the caller writes the run result).

    ``export_base_url`` (sweep only) defaults to the spec's, else TMDB's file host.
    ``logical_time`` (THRESHER_LOGICAL_TIME: the schedule time the run stands for, e.g. a
    backfilled one) ends the ``changes`` window instead of ``now``, so a backfilled week
    collects that week's changes; operating hours and timestamps stay on ``now``.

    Raises ``ConfigError`` when the credential is rejected and ``UpstreamError``
    when the data dir is locked by another run.
    """
    thresholds = thresholds or Thresholds()
    now = now or datetime.now(timezone.utc)
    try:
        tabular.require_pyarrow()  # before any request: the snapshot could not be written without it
    except ImportError as err:
        raise ConfigError(str(err)) from None
    local_now = local_time(now, job.time_zone)
    if not planning.within_operating_hours(job.effective_operating_hours(), local_now):
        return skipped_outcome(job, local_now)
    started_mono = time.monotonic()
    data_dir = Path(data_dir)
    warnings: list[str] = []
    with data_dir_lock(data_dir):
        removed = remove_stale_tmp(data_dir)
        if removed:
            log.warning("removed leftovers of interrupted runs", extra={"dirs": removed})
        with Catalog(data_dir / CATALOG) as catalog:
            recovered = catalog.sync(data_dir, _iso(now))
            if recovered:
                warnings.append(f"catalog: applied {len(recovered)} snapshot(s) an interrupted run left unapplied")
            run_id = failed_run_id(snapshot_name(job.collection, now))
            try:
                if job.collection == "sweep":
                    base_url = export_base_url or job.export_base_url or DEFAULT_EXPORT_BASE_URL
                    outcome = _sweep(job, client, base_url, data_dir, catalog, thresholds, now, clock, warnings)
                else:
                    outcome = _collect(job, client, data_dir, catalog, thresholds, now, clock, warnings,
                                       window_end=logical_time or now)
            except JobError as err:  # preflight failed, key rejected: the run is on record all the same
                catalog.record_run(run_id, job.collection, _iso(now), err.exit_code, _iso(datetime.now(timezone.utc)))
                raise
            if outcome.snapshot is None:
                catalog.record_run(run_id, job.collection, _iso(now), outcome.exit_code,
                                   _iso(datetime.now(timezone.utc)))
    if outcome.result.duration_seconds is None:
        outcome.result.duration_seconds = round(time.monotonic() - started_mono, 3)
    return outcome


def _preflight(client: TmdbClient, warnings: list[str]) -> dict[int, str]:
    """One cheap request that checks the credential (401 -> ConfigError) and gets the genre names.

    Fail fast: when nothing answers at the base URL (connection refused, DNS, TLS, connect timeout)
    or what answers is not a JSON API (an HTML page), the run ends here with exit 3, after one
    request, instead of sending the whole plan into the void. Transient trouble (5xx, 429, timeouts
    once connected) is retried as usual, and if it persists the run goes on with built-in genre names.
    """
    try:
        data = client.get("genre/movie/list", expect=("genres",), fail_fast=True)
    except AuthError as err:
        raise ConfigError(f"TMDB rejected the credential: {err}") from None
    except Unreachable as err:
        raise UpstreamError(f"no TMDB API answered the preflight, nothing collected: GET {err}") from None
    except TmdbError as err:
        warnings.append(f"genre list unavailable, using built-in names: {err}")
        return {}
    return {g["id"]: g["name"] for g in data.get("genres", []) if isinstance(g, dict) and "id" in g and "name" in g}


def _collect(job: TmdbJob, client: TmdbClient, data_dir: Path, catalog: Catalog, thresholds: Thresholds,
             now: datetime, clock: Callable[[], float], warnings: list[str], window_end: datetime) -> RunOutcome:
    started_mono = time.monotonic()
    genre_names = _preflight(client, warnings)
    details: DetailPhase | None = None
    try:
        if job.collection == "changes":
            pages = fetch_changes(client, job, window_end, job.workers, clock)
            ids = list(dict.fromkeys(
                obs.movie["id"] for obs in pages.observations
                if isinstance(obs.movie, dict) and isinstance(obs.movie.get("id"), int)
                and (job.include_adult or not obs.movie.get("adult"))
            ))
            ids, skipped = cap_ids(ids, job.max_detail_requests)
            details = fetch_details(client, ids, job.append_to_response, job.workers, skipped)
            observations = [Observation(d, "changes", clock(), detail=True) for d in details.fetched.values()]
            deduped = dedupe(observations)
        else:
            pages = fetch_pages(client, planning.plan_pages(job), job.workers, "lists", clock)
            observations = pages.observations
            deduped = dedupe(observations)
            if job.enrich and deduped.movies:
                ids, skipped = cap_ids([m["id"] for m in deduped.movies], job.max_detail_requests)
                details = fetch_details(client, ids, job.append_to_response, job.workers, skipped)
                deduped.movies = [
                    merge_detail(m, details.fetched[m["id"]], clock()) if m["id"] in details.fetched else m
                    for m in deduped.movies
                ]
    except AuthError as err:
        raise ConfigError(f"TMDB rejected the credential during the run: {err}") from None

    # Invariant of the accounting: every planned page was either fetched or reported as failed.
    if set(pages.planned) != set(pages.fetched) | set(pages.failed):
        raise RuntimeError("page accounting broken: a planned page was neither fetched nor failed")
    valid, rejected = split_valid(deduped)
    quality = assess(len(observations), deduped, valid, rejected)
    quality_warnings, threshold_failed = threshold_findings(quality, thresholds)
    failed_requests = len(pages.failed) + (len(details.failed) if details else 0)
    if pages.failed:
        warnings.append(_summarize_failures("pages", pages.failed, len(pages.planned)))
    warnings.extend(_detail_warnings(details, job))
    warnings.extend(quality_warnings)
    exit_code = decide_exit(len(pages.planned), len(pages.fetched), failed_requests, threshold_failed)
    stats = client.stats.as_dict()
    note = throttle_note(stats, client.policy.max_retries)
    if note:
        warnings.append(note)

    base = RunResult(job_type="tmdb", succeeded=exit_code == ExitCode.OK, items=quality.items,
                     valid=quality.valid, quality=quality.quality, failed=failed_requests,
                     warnings=warnings, exit_code=int(exit_code))
    if exit_code == ExitCode.UPSTREAM:
        base.error = _summarize_failures("pages", pages.failed, len(pages.planned))
        base.duration_seconds = round(time.monotonic() - started_mono, 3)
        return RunOutcome(base, exit_code)
    missing = missing_parts(pages, details)
    if exit_code == ExitCode.PARTIAL:
        base.error = (f"{failed_requests} requests failed; the snapshot has holes (manifest: complete false, "
                      "missing lists them)")
    elif exit_code == ExitCode.QUALITY:
        base.error = "data quality below the thresholds: " + "; ".join(quality_warnings[:2])

    extra: dict[str, bytes] = {}
    report = None
    if job.collection in planning.REPORT_COLLECTIONS:
        report = build_report(valid, job.collection, _iso(now), genre_names)
        extra["report.json"] = (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode()
        extra["report.html"] = render_html(report).encode()
    finished = datetime.now(timezone.utc)
    manifest = {
        "jobType": "tmdb",
        "collection": job.collection,
        "startedAt": _iso(now),
        "finishedAt": _iso(finished),
        "durationSeconds": round(time.monotonic() - started_mono, 3),
        "spec": job.model_dump(mode="json", by_alias=True),
        "apiBaseUrl": client.base_url,
        "sources": _sources_manifest(job),
        "pages": pages.as_dict(),
        "details": details.as_dict() if details else None,
        "quality": quality.as_dict(),
        "thresholds": {"minQualityRate": thresholds.min_quality_rate, "minItems": thresholds.min_items},
        "requests": stats,
        "exitCode": int(exit_code),
        "complete": not missing,
        "missing": missing,
        "warnings": warnings,
    }
    snapshot = _commit(data_dir, catalog, snapshot_name(job.collection, now), valid, rejected, manifest, extra)
    base.output = str(snapshot)
    base.duration_seconds = round(time.monotonic() - started_mono, 3)
    return RunOutcome(base, exit_code, snapshot)


def _detail_warnings(details: DetailPhase | None, job: TmdbJob) -> list[str]:
    if details is None:
        return []
    warnings = []
    if details.failed:
        warnings.append(_summarize_failures("detail requests", details.failed, details.requested))
    if details.not_found:
        warnings.append(f"{len(details.not_found)} movies no longer exist on TMDB (404)")
    if details.skipped:
        warnings.append(f"maxDetailRequests ({job.max_detail_requests}) reached: {details.skipped} of "
                        f"{details.requested + details.skipped} detail requests skipped")
    return warnings


def _commit(data_dir: Path, catalog: Catalog, name: str, valid: list[dict], rejected: Iterable[dict],
            manifest: dict, extra: dict[str, bytes] | None = None,
            spooled_jsonl: dict[str, Path] | None = None) -> Path:
    """Write the snapshot (movies.jsonl and the same rows as typed movies.parquet) atomically, then
    apply it to the catalog (``Catalog.sync`` redoes the second step if the process dies in between)."""
    parquet, rows = tabular.parquet_bytes(valid)
    extra = {**(extra or {}), tabular.PARQUET_FILE: parquet}
    manifest = {**manifest, "schemas": {tabular.PARQUET_FILE: {"name": tabular.SCHEMA_NAME,
                                                               "version": tabular.SCHEMA_VERSION, "rows": rows}}}
    snapshot = write_snapshot(data_dir, name, valid, rejected, manifest, extra, spooled_jsonl)
    files = (read_manifest(snapshot) or {}).get("files", {})
    log.info("snapshot committed", extra={"snapshot": str(snapshot),
                                           "lines": {f: i["lines"] for f, i in files.items() if "lines" in i}})
    catalog.apply_snapshot(snapshot, _iso(datetime.now(timezone.utc)))
    return snapshot


def sweep_quality(export: ExportPhase, detailed: QualityReport) -> QualityReport:
    """A sweep's quality: its items are the export's ids (valid or not); details only complete some."""
    items = export.accepted + export.rejected
    return QualityReport(
        observed=export.lines, items=items, valid=export.accepted, invalid=export.rejected, duplicates=0,
        quality=round(export.accepted / items, 4) if items else 0.0,
        # ids carry no optional fields: completeness speaks of the detailed movies only
        completeness=detailed.completeness if detailed.valid else 1.0,
        problems=dict((export.problems + Counter(detailed.problems)).most_common(20)),
    )


def _sweep(job: TmdbJob, client: TmdbClient, base_url: str, data_dir: Path, catalog: Catalog,
           thresholds: Thresholds, now: datetime, clock: Callable[[], float], warnings: list[str]) -> RunOutcome:
    """Stream the daily ID export into a snapshot and the catalog; details for new ids only, capped.

    Memory stays bounded whatever the export's size: lines go to a spool
    file as they are read (the spool is a ``.tmp-`` directory, so a crashed
    run's is removed by the next), the catalog is asked a batch of ids at a
    time, and only the ``maxDetailRequests`` most popular new ids are kept.
    """
    started_mono = time.monotonic()
    _preflight(client, warnings)
    name = snapshot_name(job.collection, now)
    spool = Path(data_dir) / SNAPSHOTS_DIR / f"{TMP_PREFIX}spool-{name}-{uuid.uuid4().hex[:8]}"
    spool.mkdir(parents=True)
    try:
        try:
            export, picker = fetch_export(client, base_url, job, now, catalog, spool)
            details = fetch_details(client, picker.chosen(), job.append_to_response, job.workers, picker.skipped)
        except AuthError as err:
            raise ConfigError(f"TMDB rejected the credential during the run: {err}") from None
        except TmdbError as err:  # no export, or an unreadable one: nothing to commit
            error = f"{type(err).__name__}: {err}"
            log.error("sweep failed", extra={"error": error})
            return RunOutcome(RunResult(job_type="tmdb", succeeded=False, items=0, valid=0, failed=1,
                                        warnings=warnings, error=error, exit_code=int(ExitCode.UPSTREAM),
                                        duration_seconds=round(time.monotonic() - started_mono, 3)),
                              ExitCode.UPSTREAM)
        if export.used != export.tried[0]:
            warnings.append(f"{export.tried[0]} is not published yet; used {export.used}")
        if export.rejected:
            warnings.append(f"{export.rejected} of {export.lines} export lines invalid (in rejects.jsonl)")
        observations = [Observation(d, "sweep", clock(), detail=True) for d in details.fetched.values()]
        deduped = dedupe(observations)
        valid, rejected = split_valid(deduped)
        detailed = assess(len(observations), deduped, valid, rejected)
        quality = sweep_quality(export, detailed)
        items = quality.items
        quality_warnings, threshold_failed = threshold_findings(quality, thresholds)
        warnings.extend(_detail_warnings(details, job))
        warnings.extend(quality_warnings)
        exit_code = decide_exit(1, 1, len(details.failed), threshold_failed)
        stats = client.stats.as_dict()
        note = throttle_note(stats, client.policy.max_retries)
        if note:
            warnings.append(note)
        result = RunResult(job_type="tmdb", succeeded=exit_code == ExitCode.OK, items=items, valid=export.accepted,
                           quality=quality.quality, failed=len(details.failed), warnings=warnings,
                           exit_code=int(exit_code))
        if exit_code == ExitCode.PARTIAL:
            result.error = (f"{len(details.failed)} detail requests failed; the snapshot has holes (manifest: "
                            "complete false, missing lists them)")
        elif exit_code == ExitCode.QUALITY:
            result.error = "data quality below the thresholds: " + "; ".join(quality_warnings[:2])
        manifest = {
            "jobType": "tmdb",
            "collection": job.collection,
            "startedAt": _iso(now),
            "finishedAt": _iso(datetime.now(timezone.utc)),
            "durationSeconds": round(time.monotonic() - started_mono, 3),
            "spec": job.model_dump(mode="json", by_alias=True),
            "apiBaseUrl": client.base_url,
            "exportBaseUrl": base_url,
            "export": export.as_dict(),
            "details": details.as_dict(),
            "quality": quality.as_dict(),
            "detailQuality": detailed.as_dict(),
            "thresholds": {"minQualityRate": thresholds.min_quality_rate, "minItems": thresholds.min_items},
            "requests": stats,
            "exitCode": int(exit_code),
            "complete": not details.failed,
            "missing": missing_parts(None, details),
            "warnings": warnings,
        }
        snapshot = _commit(data_dir, catalog, name, valid, chain(rejected, read_jsonl(spool / REJECTS)),
                           manifest, spooled_jsonl={EXPORT_IDS: spool / EXPORT_IDS})
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    result.output = str(snapshot)
    result.duration_seconds = round(time.monotonic() - started_mono, 3)
    return RunOutcome(result, exit_code, snapshot)


def _sources_manifest(job: TmdbJob) -> list[dict[str, Any]]:
    sources = planning.sources_for(job)
    return [{"label": label, "endpoint": src.endpoint, "pages": src.pages, "params": src.params}
            for label, src in zip(planning.source_labels(sources), sources)]

