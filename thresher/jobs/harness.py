"""What every Thresher job shares: exit codes, structured logs, atomic output and the run result.

A job is a plain command line first (``thresher job tmdb ...``); the harness makes
it behave the same in a container, in a test and by hand:

* ``ExitCode`` values (``thresher/api/names.py``) mean something to the operator and to people;
* ``configure_logging`` (``thresher/logs.py``, shared with the operator) prints one JSON object
  a line to stderr and redacts registered secrets from every message;
* ``atomic_write_bytes`` writes to a temporary file, fsyncs, renames and
  fsyncs the directory, so a reader never sees half a file;
* ``write_result`` writes the run-result JSON to the termination message path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from pathlib import Path

from thresher import logs
from thresher.api.names import RESULT_PATH as DEFAULT_RESULT_PATH
from thresher.api.names import RESULT_PATH_ENV, ExitCode
from thresher.api.runresult import RunResult
from thresher.logs import redact, register_secret  # noqa: F401 - the jobs' entry points


class JobError(Exception):
    """An error with the exit code it should end the process with."""

    exit_code = ExitCode.INTERNAL


class ConfigError(JobError):
    exit_code = ExitCode.CONFIG


class UpstreamError(JobError):
    exit_code = ExitCode.UPSTREAM


# --- job spec -------------------------------------------------------------------

def read_spec(text: str | None) -> dict:
    """A job's ``--spec``: inline JSON, or ``@path`` to a JSON or YAML file; {} when absent.
    Anything unreadable or not an object is a ConfigError naming where it came from."""
    if text is None or not text.strip():
        return {}
    source = "--spec"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read spec file {path}: {err.strerror}") from None
        source = f"spec file {path}"
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"{source} is not valid YAML: {err}") from None
            return _spec_object(data, source)
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source} is not valid JSON: {err.msg} at line {err.lineno} "
                          f"column {err.colno}") from None
    return _spec_object(data, source)


def _spec_object(data: object, source: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object, got {type(data).__name__}")
    return data


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """``logs.configure_logging`` for a job: an unknown level is a ConfigError (exit 2), not a traceback."""
    try:
        logs.configure_logging(level, json_logs)
    except ValueError as err:
        raise ConfigError(str(err)) from None


# --- atomic output ------------------------------------------------------------

def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary name next to ``path`` for writers that need a file name (GDAL): renamed onto ``path``
    when the block ends, removed if it fails, so readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb+") as tmp:
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --- run result -------------------------------------------------------------

def result_path(explicit: str | None = None) -> Path | None:
    """Where to write the run result: an explicit path, ``$THRESHER_RESULT_PATH``, or the
    Kubernetes default when it exists (inside a container). None by hand outside one."""
    chosen = explicit or os.environ.get(RESULT_PATH_ENV)
    if chosen:
        return Path(chosen)
    default = Path(DEFAULT_RESULT_PATH)
    return default if default.exists() and os.access(default, os.W_OK) else None


# Paths that name the process's own streams: never a file to replace, whatever stat says
# (with stdout redirected to a file, /dev/stdout resolves to that file).
_STREAM_PATHS = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def writes_in_place(path: str, mode: int | None) -> bool:
    """Whether the run result goes straight into ``path`` rather than through a temporary file
    and a rename. ``mode`` is ``os.stat(path).st_mode`` (links followed), None when absent.

    A rename replaces the directory entry: over a character device, a FIFO or a stream it
    would swap the device for a regular file (as root, ``--result-path /dev/null`` once
    replaced the host's /dev/null). So only a regular file, or a path not there yet, gets the
    atomic rename; the kubelet's /dev/termination-log is a bind-mounted file that cannot be
    renamed over, so it is written in place too."""
    if path == DEFAULT_RESULT_PATH or path.startswith(_STREAM_PATHS):
        return True
    return mode is not None and not stat.S_ISREG(mode)


def write_result(result: RunResult, explicit_path: str | None = None) -> str:
    """Write the run result where the operator will read it; return the message written."""
    message = redact(result.to_message())
    path = result_path(explicit_path)
    if path is not None:
        try:
            mode: int | None = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        if writes_in_place(str(path), mode):
            with open(path, "w", encoding="utf-8") as out:
                out.write(message)
        else:
            # Through a symlink, replace the file it points to, not the link itself.
            atomic_write_text(Path(os.path.realpath(path)), message)
    logging.getLogger("thresher.result").info("run result", extra={"result": json.loads(message)})
    return message
