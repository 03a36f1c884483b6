"""Backoff, Retry-After and the shared rate limiter: pure or clock-injected, so instant."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from thresher.jobs.tmdb.ratelimit import RateLimiter
from thresher.jobs.tmdb.retry import RetryPolicy, backoff_delay, parse_retry_after, retry_delay


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@given(attempt=st.integers(0, 40), seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_an_exponential_cap(attempt, seed):
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    delay = backoff_delay(attempt, policy, random.Random(seed))
    assert 0.0 <= delay <= min(30.0, 0.5 * 2**attempt)


def test_backoff_spreads_retries_and_grows():
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0)
    rng = random.Random(3)
    early = [backoff_delay(0, policy, rng) for _ in range(200)]
    late = [backoff_delay(5, policy, rng) for _ in range(200)]
    assert len(set(early)) == 200  # jittered, not synchronized
    assert sum(late) / 200 > 5 * sum(early) / 200


def test_retry_after_seconds_and_http_date():
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    for junk in (None, "", "soon", "Thu, 99 Foo"):
        assert parse_retry_after(junk, now) is None


def test_retry_after_wins_over_backoff_but_is_capped():
    policy = RetryPolicy(max_retry_after=60.0)
    assert retry_delay(0, policy, random.Random(1), 4.0) == 4.0
    assert retry_delay(0, policy, random.Random(1), 3600.0) == 60.0
    assert retry_delay(3, policy, random.Random(1), None) <= 4.0


def test_limiter_spaces_requests_at_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(20.0, burst=1, clock=clock, sleep=clock.sleep)
    start = clock()
    for _ in range(41):
        limiter.acquire()
    assert abs((clock() - start) - 2.0) < 1e-6  # 40 intervals of 50 ms


def test_limiter_burst_lets_an_idle_limiter_send_a_few_at_once():
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=3, clock=clock, sleep=clock.sleep)
    clock.sleep(5.0)  # idle
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] > 0


def test_limiter_slots_are_distinct_across_threads():
    """Many workers share one limiter: no two get the same send slot (no burst beyond the rate)."""
    clock = FakeClock()
    limiter = RateLimiter(50.0, burst=1, clock=clock, sleep=lambda s: None)
    slots: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(100):
            wait = limiter.reserve()
            with lock:
                slots.append(clock() + wait)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert len(slots) == 800 and min(gaps) >= 1 / 50.0 - 1e-9


def test_429_slows_and_pauses_then_successes_recover():
    clock = FakeClock()
    limiter = RateLimiter(40.0, burst=1, clock=clock, sleep=clock.sleep, decrease=0.5, recovery=0.05)
    limiter.on_throttled(retry_after=3.0)
    assert limiter.rate == 20.0
    assert limiter.reserve() >= 3.0  # everybody waits out the Retry-After
    limiter.on_throttled()
    assert limiter.rate == 10.0 and limiter.slowdowns == 2
    for _ in range(100):
        limiter.on_success()
    assert limiter.rate == 40.0  # back to the target, never above
