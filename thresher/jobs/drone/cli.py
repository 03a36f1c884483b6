"""``thresher job drone ...``: the drone crop-health job.

``run --spec`` is what a CollectionSchedule's pod runs (the task comes from the spec);
``process``, ``report``, ``backup`` and ``cleanup`` are the same tasks with flags for
hand use. Every task command writes a RunResult and exits with its ExitCode (synthetic
sample fields are the demo's: ``python -m thresher.demo sample-fields``). Heavy modules (NumPy, Pillow, PyAV, torch) are
imported inside the commands so that ``thresher --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer

from thresher.api.names import ExitCode
from thresher.api.runresult import RunResult
from thresher.jobs.harness import ConfigError, JobError, configure_logging, read_spec, write_result

app = typer.Typer(help="Process drone images into crop-health indices.", no_args_is_help=True)
log = logging.getLogger("thresher.drone")

DATA_DIR_ENV = "THRESHER_DATA_DIR"
DEFAULT_DATA_DIR = "./thresher-data"

DataDir = typer.Option(None, "--data-dir", help=f"Data directory (default ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}).")
ResultPath = typer.Option(None, "--result-path", help="Where to write the RunResult JSON "
                                                     "(default $THRESHER_RESULT_PATH or /dev/termination-log).")
LogLevel = typer.Option("INFO", "--log-level", help="Log level.")


def data_dir_of(value: Optional[Path]) -> Path:
    return Path(value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def load_spec(text: str) -> Any:
    """A DroneJob from a JSON string, or @path to a JSON/YAML file; ConfigError says what is wrong."""
    from pydantic import ValidationError

    from thresher.api.drone import DroneJob

    source = f"spec file {text[1:]}" if text.startswith("@") else "--spec"
    data = read_spec(text)
    try:
        return DroneJob.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(f"{source}: {spec_error(err)}") from None


def spec_error(err: Any) -> str:
    """One line from a pydantic ValidationError: where, what, and how many errors there were."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" ({err.error_count()} errors)" if err.error_count() > 1 else ""
    return f"{where}: {message}{more}"


# --- results (pure) --------------------------------------------------------------------------

def exit_code_for(items: int, failed: int) -> ExitCode:
    """PARTIAL when any input was skipped as bad, else OK (nothing new to do is OK too)."""
    return ExitCode.PARTIAL if failed else ExitCode.OK


def process_result(items: list[dict], output: str | None, duration: float, warnings: list[str]) -> RunResult:
    """RunResult of process runs: items = inputs handled (image, multispectral capture or video),
    valid = processed, failed = skipped as bad, quality = valid / items (None when no inputs)."""
    failed = [i for i in items if not i["ok"]]
    code = exit_code_for(len(items), len(failed))
    notes = [f"skipped {i['key']}: {i['reason']}" for i in failed] + warnings
    return RunResult(
        job_type="drone", succeeded=len(items) == 0 or len(failed) < len(items),
        items=len(items), valid=len(items) - len(failed), failed=len(failed),
        quality=(len(items) - len(failed)) / len(items) if items else None,
        output=output, duration_seconds=round(duration, 3), warnings=notes, exit_code=int(code),
        error=f"{len(failed)} of {len(items)} inputs skipped as bad" if failed else None,
    )


def failure_result(err: BaseException, duration: float) -> RunResult:
    code = err.exit_code if isinstance(err, JobError) else ExitCode.INTERNAL
    text = str(err) if isinstance(err, JobError) else f"{type(err).__name__}: {err}"
    return RunResult(job_type="drone", succeeded=False, error=text, exit_code=int(code),
                     duration_seconds=round(duration, 3))


# --- tasks ------------------------------------------------------------------------------------

def execute(spec: Any, data_dir: Path, watch_seconds: float | None = None, settle_seconds: float = 2.0,
            stop: threading.Event | None = None) -> RunResult:
    """Run the spec's task and return its RunResult (never raises for job errors)."""
    from thresher.jobs.drone.pipeline import Paths

    started = time.monotonic()
    paths = Paths.resolve(spec, data_dir)
    try:
        return _execute(spec, paths, started, watch_seconds, settle_seconds, stop)
    except JobError as err:
        log.error("drone job failed", extra={"error": str(err)})
        return failure_result(err, time.monotonic() - started)
    except Exception as err:  # noqa: BLE001 - reported as INTERNAL with the traceback in the log
        log.exception("drone job crashed")
        return failure_result(err, time.monotonic() - started)


def _execute(spec, paths, started, watch_seconds, settle_seconds, stop) -> RunResult:
    from thresher.jobs.drone import maintenance as mt
    from thresher.jobs.drone.pipeline import run_process, select_engine

    now = time.time()
    if spec.task == "process":
        from thresher.jobs.drone.shards import from_env

        shard = from_env(spec.parallelism, os.environ)  # this pod's index of a fanned-out run, or None
        engine = select_engine(spec.backend)
        if watch_seconds is None:
            stats = run_process(spec, paths, engine, shard=shard)
            return process_result(stats.items, str(stats.summary_path) if stats.summary_path else None,
                                  time.monotonic() - started, stats.warnings)
        from thresher.jobs.drone.watch import watch

        if shard is not None:
            raise ConfigError("--watch runs one process; parallelism above 1 is for scheduled runs")
        items = watch(spec, paths, engine, stop or threading.Event(), watch_seconds, settle_seconds)
        return process_result(items, str(paths.output), time.monotonic() - started, [])
    if spec.task == "report":
        summary = mt.run_report(spec, paths, now)
        return RunResult(job_type="drone", succeeded=True, items=summary["items"], valid=summary["valid"],
                         failed=summary["failed"], quality=summary["quality"], output=summary["path"],
                         duration_seconds=round(time.monotonic() - started, 3), exit_code=0)
    if spec.task == "backup":
        backup = mt.run_backup(spec, paths, now)
        return RunResult(job_type="drone", succeeded=True, items=backup.rows, output=str(backup.path),
                         warnings=[f"deleted old backup {n}" for n in backup.deleted],
                         duration_seconds=round(time.monotonic() - started, 3), exit_code=0)
    plan = mt.run_cleanup(spec, paths, now)
    verb = "would delete" if spec.dry_run else "deleted"
    notes = ([f"{verb} output {p}" for p in plan.outputs] + [f"{verb} state row {k}" for k in plan.state_rows]
             + [f"{'would mark' if spec.dry_run else 'marked'} outputs expired for {k}" for k in plan.expire_rows])
    return RunResult(job_type="drone", succeeded=True, items=len(plan.outputs) + len(plan.state_rows),
                     output=str(paths.output), warnings=notes,
                     duration_seconds=round(time.monotonic() - started, 3), exit_code=0)


def finish(result: RunResult, result_path: Optional[str]) -> None:
    write_result(result, result_path)
    typer.echo(result.to_message())
    raise typer.Exit(result.exit_code or 0)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _run_spec(spec_obj, data_dir, result_path, log_level, watch_seconds=None, settle=2.0):
    configure_logging(log_level)
    stop = _stop_on_signals() if watch_seconds is not None else None
    finish(execute(spec_obj, data_dir_of(data_dir), watch_seconds, settle, stop), result_path)


def _spec_or_fail(build, result_path):
    try:
        return build()
    except ConfigError as err:
        finish(failure_result(err, 0.0), result_path)


# --- commands -----------------------------------------------------------------------------------

@app.command()
def run(
    spec: str = typer.Option(..., "--spec", help="DroneJob as a JSON string, or @path to a JSON/YAML file."),
    data_dir: Optional[Path] = DataDir, result_path: Optional[str] = ResultPath, log_level: str = LogLevel,
) -> None:
    """Run the task named in the spec (what a CollectionSchedule's pod runs)."""
    configure_logging(log_level)
    spec_obj = _spec_or_fail(lambda: load_spec(spec), result_path)
    _run_spec(spec_obj, data_dir, result_path, log_level)


def _with(overrides: dict, base: str | None) -> Any:
    from pydantic import ValidationError

    from thresher.api.drone import DroneJob

    spec = load_spec(base) if base else DroneJob()
    data = spec.model_dump(by_alias=True)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DroneJob.model_validate(data)
    except ValidationError as err:
        raise ConfigError(spec_error(err)) from None


@app.command()
def process(
    data_dir: Optional[Path] = DataDir, result_path: Optional[str] = ResultPath, log_level: str = LogLevel,
    spec: Optional[str] = typer.Option(None, "--spec", help="Start from this DroneJob (JSON or @path)."),
    input_path: Optional[str] = typer.Option(None, "--input", help="Input folder (relative to the data dir)."),
    output_path: Optional[str] = typer.Option(None, "--output", help="Output folder (relative to the data dir)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto, cpu or cuda."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per batch (1..256)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="CPU threads (0: one per CPU)."),
    indices: Optional[str] = typer.Option(None, "--indices", help="Comma-separated index names (default all)."),
    watch: bool = typer.Option(False, "--watch", help="Keep running and process files as they arrive."),
    watch_seconds: float = typer.Option(0.0, "--watch-seconds", help="With --watch: stop after this many "
                                                                      "seconds (0: until SIGTERM/SIGINT)."),
    settle: float = typer.Option(2.0, "--settle", help="With --watch: leave files modified in the last N s."),
) -> None:
    """Process new or changed images once (or keep watching with --watch)."""
    configure_logging(log_level)
    overrides = {"task": "process", "inputPath": input_path, "outputPath": output_path, "backend": backend,
                 "batchSize": batch_size, "workers": workers,
                 "indices": [s.strip() for s in indices.split(",") if s.strip()] if indices else None}
    spec_obj = _spec_or_fail(lambda: _with(overrides, spec), result_path)
    _run_spec(spec_obj, data_dir, result_path, log_level,
              (watch_seconds if watch_seconds > 0 else float("inf")) if watch else None, settle)


@app.command()
def report(
    data_dir: Optional[Path] = DataDir, result_path: Optional[str] = ResultPath, log_level: str = LogLevel,
    spec: Optional[str] = typer.Option(None, "--spec", help="Start from this DroneJob (JSON or @path)."),
    days: Optional[int] = typer.Option(None, "--days", help="Report period in days."),
) -> None:
    """Report (JSON, CSV, HTML) over inputs processed in the last N days."""
    configure_logging(log_level)
    spec_obj = _spec_or_fail(lambda: _with({"task": "report", "reportPeriodDays": days}, spec), result_path)
    _run_spec(spec_obj, data_dir, result_path, log_level)


@app.command()
def backup(
    data_dir: Optional[Path] = DataDir, result_path: Optional[str] = ResultPath, log_level: str = LogLevel,
    spec: Optional[str] = typer.Option(None, "--spec", help="Start from this DroneJob (JSON or @path)."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Snapshots to keep."),
) -> None:
    """Snapshot the state database (online, consistent) and keep the newest N snapshots."""
    configure_logging(log_level)
    spec_obj = _spec_or_fail(lambda: _with({"task": "backup", "backupKeep": keep}, spec), result_path)
    _run_spec(spec_obj, data_dir, result_path, log_level)


@app.command()
def cleanup(
    data_dir: Optional[Path] = DataDir, result_path: Optional[str] = ResultPath, log_level: str = LogLevel,
    spec: Optional[str] = typer.Option(None, "--spec", help="Start from this DroneJob (JSON or @path)."),
    retention_days: Optional[int] = typer.Option(None, "--retention-days", help="Delete what is older."),
    dry_run: bool = typer.Option(True, "--dry-run/--delete", help="Only list what would be deleted (default)."),
) -> None:
    """Delete outputs and state older than the retention (dry run unless --delete)."""
    configure_logging(log_level)
    spec_obj = _spec_or_fail(lambda: _with({"task": "cleanup", "retentionDays": retention_days,
                                            "dryRun": dry_run}, spec), result_path)
    _run_spec(spec_obj, data_dir, result_path, log_level)
