"""``thresher job tmdb ...``: the TMDB collection job (its fake server is the demo's:
``python -m thresher.demo fake-tmdb``).

Heavy imports (pydantic models, requests, sqlite) live inside the commands so
that ``thresher --help`` stays instant.
"""

from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(help="Collect movie data from TMDB.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Collect movie data from TMDB."""
    # A callback keeps `tmdb` a command group with its one command (`collect`), as the job's
    # pods and users call it; Typer would otherwise make a lone command the app itself.


@app.command()
def collect(
    spec: Optional[str] = typer.Option(None, "--spec", help="The TmdbJob as camelCase JSON, or @path to a JSON/YAML file."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Where snapshots and the catalog go. Default: $THRESHER_DATA_DIR, else ./thresher-data."),
    min_quality_rate: Optional[float] = typer.Option(None, "--min-quality-rate", min=0.0, max=1.0, help="Fail (exit 4) when the share of valid movies is below this."),
    min_items: Optional[int] = typer.Option(None, "--min-items", min=0, help="Fail (exit 4) when fewer movies were collected."),
    result_path: Optional[str] = typer.Option(None, "--result-path", help="Where to write the run result. Default: $THRESHER_RESULT_PATH, else /dev/termination-log when writable."),
    collection: Optional[str] = typer.Option(None, "--collection", help="Override: daily, weekly, hourly, monthly, changes, sweep or custom."),
    source: Optional[list[str]] = typer.Option(None, "--source", help="Override (repeatable, implies custom): endpoint[:pages[:k=v&k=v]]."),
    api_base_url: Optional[str] = typer.Option(None, "--api-base-url", help="Override the API base URL (else spec.apiBaseUrl, $TMDB_API_BASE_URL, TMDB's)."),
    export_base_url: Optional[str] = typer.Option(None, "--export-base-url", help="Override where daily ID exports come from (else spec.exportBaseUrl, $TMDB_EXPORT_BASE_URL, TMDB's)."),
    max_detail_requests: Optional[int] = typer.Option(None, "--max-detail-requests", help="Override: at most this many /movie/{id} requests a run."),
    min_popularity: Optional[float] = typer.Option(None, "--min-popularity", help="Override (sweep): keep export ids with popularity >= this."),
    language: Optional[str] = typer.Option(None, "--language", help="Override the language, e.g. en-US."),
    region: Optional[str] = typer.Option(None, "--region", help="Override the region, e.g. US."),
    enrich: Optional[bool] = typer.Option(None, "--enrich/--no-enrich", help="Override: fetch /movie/{id} details."),
    append: Optional[list[str]] = typer.Option(None, "--append", help="Override (repeatable): append_to_response entries."),
    changes_window_days: Optional[int] = typer.Option(None, "--changes-window-days", help="Override: days back for the changes collection (1-14)."),
    operating_hours: Optional[str] = typer.Option(None, "--operating-hours", help="Override: HH-HH local hours to run in."),
    time_zone: Optional[str] = typer.Option(None, "--time-zone", help="Override: IANA zone for the operating hours."),
    requests_per_second: Optional[float] = typer.Option(None, "--requests-per-second", help="Override the shared request rate (<= 40)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Override the number of concurrent requests (1-32)."),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help="Override the per-request timeout in seconds."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Override the retries per request (0-10)."),
    now: Optional[str] = typer.Option(None, "--now", hidden=True, help="Pretend it is this ISO time (demos of operating hours)."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run one collection; write a snapshot, update the catalog, and write the run result."""
    import logging
    import os
    import time
    from datetime import datetime, timezone

    from thresher.api.names import ExitCode
    from thresher.api.runresult import RunResult
    from thresher.jobs.harness import ConfigError, JobError, configure_logging, write_result

    configure_logging(log_level)
    log = logging.getLogger("thresher.tmdb")
    started = time.monotonic()
    try:
        from thresher.jobs.tmdb import config as cfg

        overrides = {
            "collection": collection, "apiBaseUrl": None, "language": language, "region": region,
            "enrich": enrich, "appendToResponse": append or None, "changesWindowDays": changes_window_days,
            "operatingHours": operating_hours, "timeZone": time_zone, "requestsPerSecond": requests_per_second,
            "workers": workers, "requestTimeoutSeconds": request_timeout, "maxRetries": max_retries,
            "maxDetailRequests": max_detail_requests, "minPopularity": min_popularity,
            "sources": [cfg.parse_source(s) for s in source] if source else None,
        }
        job = cfg.build_job(spec, overrides)
        credentials = cfg.credentials_from_env(os.environ)
        base_url = cfg.resolve_base_url(api_base_url, job, os.environ)
        export_url = cfg.resolve_export_base_url(export_base_url, job, os.environ)
        directory = cfg.resolve_data_dir(data_dir, os.environ)
        try:
            at = datetime.fromisoformat(now).astimezone(timezone.utc) if now else None
        except ValueError:
            raise ConfigError(f"--now {now!r} is not an ISO date-time") from None
        logical_time = cfg.logical_time_from_env(os.environ)
        result, code = _run(job, credentials, base_url, export_url, directory, min_quality_rate, min_items, at,
                            logical_time)
    except JobError as err:
        result = RunResult(job_type="tmdb", succeeded=False, error=str(err), exit_code=int(err.exit_code))
        code = err.exit_code
        log.error("run failed", extra={"error": str(err), "exitCode": int(code)})
    except Exception as err:  # a bug: still tell the operator what happened
        log.exception("internal error")
        result = RunResult(job_type="tmdb", succeeded=False, error=f"internal error: {type(err).__name__}: {err}",
                           exit_code=int(ExitCode.INTERNAL))
        code = ExitCode.INTERNAL
    if result.duration_seconds is None:
        result.duration_seconds = round(time.monotonic() - started, 3)
    write_result(result, result_path)
    raise typer.Exit(int(code))


def _run(job, credentials, base_url, export_base_url, data_dir, min_quality_rate, min_items, now, logical_time):
    from thresher.jobs.tmdb.client import TmdbClient
    from thresher.jobs.tmdb.collect import run_collection
    from thresher.jobs.tmdb.quality import Thresholds
    from thresher.jobs.tmdb.ratelimit import RateLimiter
    from thresher.jobs.tmdb.retry import RetryPolicy

    # A burst of 2: an idle limiter may send two at once, never a worker-sized wave.
    limiter = RateLimiter(job.requests_per_second, burst=2)
    with TmdbClient(credentials, base_url, limiter=limiter, policy=RetryPolicy(max_retries=job.max_retries),
                    timeout=job.request_timeout_seconds, pool_size=job.workers, language=job.language) as client:
        outcome = run_collection(job, client, data_dir, Thresholds(min_quality_rate, min_items), now=now,
                                 export_base_url=export_base_url, logical_time=logical_time)
    return outcome.result, outcome.exit_code


@app.command()
def export(
    fmt: Optional[str] = typer.Option(None, "--format", help="parquet, csv or jsonl (required)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="File to write (replaced atomically). Omitted or '-': stdout (csv and jsonl only)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="The collection's data dir. Default: $THRESHER_DATA_DIR, else ./thresher-data."),
    date: Optional[str] = typer.Option(None, "--date", help="Export the newest snapshot started on this UTC date (YYYY-MM-DD), not the catalog."),
    collection: Optional[str] = typer.Option(None, "--collection", help="With --date: only snapshots of this collection (daily, weekly, ...)."),
) -> None:
    """Export movies: the catalog's latest version of each movie, or one day's snapshot.

    Parquet and CSV use the typed, versioned schema tmdb-movies (docs/tmdb.md); jsonl is the records as
    collected. Bad input ends with exit 2 and one line on stderr.
    """
    import os
    from datetime import date as date_type
    from pathlib import Path

    from thresher.jobs.tmdb import config as cfg
    from thresher.jobs.tmdb import tabular

    def fail(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    if fmt is None:
        fail(f"give --format: one of {', '.join(tabular.FORMATS)}")
    fmt = fmt.strip().lower()
    if fmt not in tabular.FORMATS:
        fail(f"--format {fmt!r}: use one of {', '.join(tabular.FORMATS)}")
    out = None if output in (None, "-") else Path(output)
    if fmt == "parquet" and out is None:
        fail("--format parquet writes a binary file: give --output FILE")
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        fail(f"--output {output}: " + ("is a directory" if out.is_dir() else f"no such directory {out.parent}"))
    if collection and not date:
        fail("--collection picks among one day's snapshots: give --date too")
    directory = cfg.resolve_data_dir(data_dir, os.environ)
    if not directory.is_dir():
        fail(f"no data dir at {directory} (--data-dir, $THRESHER_DATA_DIR)")
    if fmt in ("parquet", "csv"):
        try:
            tabular.require_pyarrow()
        except ImportError as err:
            fail(str(err))
    try:
        if date:
            try:
                day = date_type.fromisoformat(date).isoformat()
            except ValueError:
                fail(f"--date {date!r} is not a date (YYYY-MM-DD)")
            from thresher.jobs.tmdb.storage import MOVIES, read_jsonl, snapshot_of_day

            snapshot = snapshot_of_day(directory, day, collection)
            records, what = read_jsonl(snapshot / MOVIES), f"snapshot {snapshot.name}"
            rows = tabular.write_table(records, fmt, out)
        else:
            from thresher.jobs.tmdb.storage import CATALOG, Catalog

            if not (directory / CATALOG).is_file():
                fail(f"no catalog at {directory / CATALOG}: run a collection first")
            with Catalog(directory / CATALOG) as catalog:
                rows = tabular.write_table(catalog.iter_movies(), fmt, out)
            what = "catalog, latest version of each movie"
    except (ValueError, OSError) as err:
        fail(str(err))
    schema = f", schema {tabular.SCHEMA_NAME} v{tabular.SCHEMA_VERSION}" if fmt != "jsonl" else ""
    typer.echo(f"exported {rows} movies ({what}) as {fmt}{schema} to {out or 'stdout'}", err=True)
