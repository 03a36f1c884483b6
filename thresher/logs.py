"""Logging set-up shared by the operator and the jobs: one JSON object a line, secrets redacted.

Outside both ``thresher/operator`` and ``thresher/jobs`` so neither imports the other for it.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact ``value`` from every log line from now on (API keys, tokens)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


_PLAIN = (str, int, float, bool, list, dict, tuple, type(None))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    _RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            # Plain values only: frameworks (kopf) attach whole settings objects to records.
            if key not in self._RESERVED and not key.startswith("_") and isinstance(value, _PLAIN):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Log to stderr at ``level``; an unknown level is a ValueError naming the allowed ones."""
    if level.upper() not in LOG_LEVELS:
        raise ValueError(f"--log-level {level!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
