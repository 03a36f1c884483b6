"""Fixtures for the TMDB job tests: a real fake-TMDB HTTP server and fast, deterministic clients."""

from __future__ import annotations

import random

import pytest

from thresher.jobs.tmdb.client import Credentials, TmdbClient
from thresher.demo.fakes.tmdb_server import FakeConfig, running_fake_server
from thresher.jobs.tmdb.ratelimit import RateLimiter
from thresher.jobs.tmdb.retry import RetryPolicy

from .support import API_KEY, TOKEN, RecordingSleep


@pytest.fixture(scope="session")
def fake_server():
    """One fake TMDB for the session; tests that change faults reset them (see ``server``)."""
    config = FakeConfig(movies=3000, api_key=API_KEY, bearer_token=TOKEN, changes_per_day=20,
                        timeout_sleep_s=0.6)
    with running_fake_server(config) as server:
        yield server


@pytest.fixture
def server(fake_server):
    """The session's fake server with no faults and zeroed counters, restored afterwards."""
    fake_server.fake.set_faults({}, [])
    fake_server.fake.reset_stats()
    fake_server.config.latency_ms = 0.0
    yield fake_server
    fake_server.fake.set_faults({}, [])
    fake_server.config.latency_ms = 0.0


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def make_client(server, sleep):
    """Build clients against the fake: a generous limiter, no real backoff waits, seeded jitter."""
    made: list[TmdbClient] = []

    def build(credentials: Credentials | None = None, max_retries: int = 4, timeout: float = 2.0,
              limiter: RateLimiter | None = None, base_url: str | None = None, workers: int = 8) -> TmdbClient:
        client = TmdbClient(
            credentials or Credentials(api_key=API_KEY), base_url or server.base_url,
            limiter=limiter or RateLimiter(2000.0, burst=50, sleep=lambda s: None),
            policy=RetryPolicy(max_retries=max_retries), timeout=timeout, pool_size=workers,
            sleep=sleep, rng=random.Random(1),
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()

