"""Polling helpers: tests wait for conditions, never for the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.25,
               message: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; return that. Fail after ``timeout``.

    Exceptions from ``probe`` count as "not yet" (the object may not exist yet), and the last
    one is reported if time runs out.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    last_value = None
    while True:
        try:
            last_value = probe()
            if last_value:
                return last_value
        except Exception as err:  # noqa: BLE001 - reported below when time runs out
            last_error = err
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else f"; last value: {last_value!r}"
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}{detail}")
        time.sleep(interval)


def consistently(probe: Callable[[], object], duration: float = 3.0, interval: float = 0.25,
                 message: str = "condition") -> None:
    """Assert ``probe`` stays truthy for ``duration`` seconds (for "nothing happens" checks)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        value = probe()
        assert value, f"{message} stopped holding: {value!r}"
        time.sleep(interval)
