"""Helpers shared by the TMDB job tests."""

from __future__ import annotations

import threading

from thresher.api.tmdb import TmdbJob

API_KEY = "fake-api-key-0123456789"
TOKEN = "fake-read-token-abcdef"


class RecordingSleep:
    """A sleep that returns at once and remembers what it was asked for (backoff tests)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.calls.append(seconds)


def job(**fields) -> TmdbJob:
    """A TmdbJob with the required secret ref filled in."""
    return TmdbJob.model_validate({"apiKeySecretRef": {"name": "tmdb"}, **fields})
