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


def test_limiter_acquire_spaces_sends_and_returns_their_time():
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=clock.sleep)
    sends = [limiter.acquire().sent_at for _ in range(5)]
    assert [round(b - a, 6) for a, b in zip(sends, sends[1:])] == [0.1] * 4


def test_a_burst_of_429s_is_one_congestion_event():
    """Bug (issue 15): every 429 of one burst halved the rate again (30 -> 0.5 req/s after a burst of 7).
    Now 429s for requests sent before the cut count once, like TCP's one decrease per window."""
    clock = FakeClock()
    limiter = RateLimiter(30.0, clock=clock, sleep=clock.sleep, decrease=0.7)
    burst = [limiter.acquire() for _ in range(7)]  # seven requests out at 30/s
    clock.sleep(0.05)
    events = [limiter.on_throttled(None, t.sent_at) for t in burst]  # ... all answered 429
    assert events == [True] + [False] * 6
    assert limiter.slowdowns == 1 and limiter.throttled == 7
    assert 0.7 * 30 - 1e-9 <= limiter.rate <= 0.95 * 30
    # A request sent after the cut that is throttled again is a new event: the rate goes on down.
    later = limiter.acquire()
    assert limiter.on_throttled(None, later.sent_at) and limiter.slowdowns == 2 and limiter.rate < 0.7 * 30


def test_the_cut_lands_near_the_delivered_rate_not_far_below():
    """Bug (issue 15): at a 10/s server limit the rate collapsed far below 10. The cut goes to
    max(decrease * rate, 95% of what the server delivered over the last second)."""
    clock = FakeClock()
    limiter = RateLimiter(12.0, clock=clock, sleep=clock.sleep, decrease=0.5)
    for _ in range(12):  # a second at 12/s, 10 of them answered
        ticket = limiter.acquire()
    for _ in range(10):
        limiter.on_success(0.0)
    clock.sleep(0.01)
    assert limiter.on_throttled(None, ticket.sent_at)
    assert abs(limiter.rate - 9.5) < 1e-9  # not 6.0 (the plain halving)


def test_retry_after_pauses_even_a_worker_that_had_booked_its_slot():
    """Bug (issue 15): after a 429 with Retry-After: 1, six more requests went out inside that second:
    workers already holding a slot still sent. A booked slot is re-planned when a pause begins."""
    clock = FakeClock()
    limiter = RateLimiter(5.0, clock=clock, sleep=lambda s: None)
    first = limiter.acquire()  # slot now
    # The second worker books the next slot (200 ms ahead); while it sleeps, another worker's 429 arrives.
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == 1:
            clock.sleep(0.05)
            limiter.on_throttled(retry_after=2.0, sent_at=first.sent_at)
        else:
            clock.sleep(seconds)

    limiter._sleep = sleep
    second = limiter.acquire()
    assert second.sent_at >= first.sent_at + 0.05 + 2.0 - 1e-9  # waited out the whole pause
    assert limiter.paused_seconds == 2.0


def test_after_a_pause_workers_leave_one_interval_apart_not_as_a_herd():
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=clock.sleep)
    limiter.on_throttled(retry_after=1.0)
    waits = [limiter.reserve() for _ in range(3)]
    gaps = [round(b - a, 6) for a, b in zip(waits, waits[1:])]
    assert waits[0] >= 1.0 and gaps == [round(1 / limiter.rate, 6)] * 2


def test_no_slot_is_booked_far_ahead_at_a_collapsed_rate():
    """Bug (issue 15): slots booked at 0.5-1 req/s were kept when the rate recovered (~9 s at ~1 req/s).
    A slot further than the horizon is not booked: the worker plans again nearer the time, at the
    rate in force then."""
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep, min_rate=0.5, horizon=0.1)
    limiter.rate = 0.5  # collapsed: one request every 2 s
    limiter.acquire()
    plans = []

    def sleep(seconds):
        plans.append(seconds)
        clock.sleep(seconds)
        limiter.rate = 10.0  # meanwhile successes brought the rate back

    limiter._sleep = sleep
    before = clock()
    limiter.acquire()
    # It slept up to the horizon before the old slot (2 s ahead) and re-planned at 10/s: sent then.
    assert plans[0] <= 2.0 - 0.1 + 1e-9 and clock() - before < 2.0


def test_429_without_retry_after_pauses_one_interval_then_probes_carefully():
    """TMDB's CDN sends no Retry-After: after the cut everyone waits one interval at the new rate, and
    the climb back near the rate of the last 429 is slow (probe), far below it fast."""
    clock = FakeClock()
    limiter = RateLimiter(40.0, clock=clock, sleep=clock.sleep, decrease=0.5, fast_increase=0.25,
                          probe_increase=0.01)
    ticket = limiter.acquire()
    clock.sleep(0.01)
    assert limiter.on_throttled(None, ticket.sent_at)
    assert limiter.rate == 20.0 and limiter.reserve() >= 1 / 20.0 - 1e-9
    # Successes of requests sent before the cut do not raise the rate.
    limiter.on_success(ticket.sent_at)
    assert limiter.rate == 20.0
    # Far below the rate of the 429 (40): +10/s a second (25% of the target); 20 successes ~ 1 s at 20/s.
    for _ in range(20):
        limiter.on_success(clock())
    assert 27.5 < limiter.rate < 30.5
    # Near it (>= 80% of 40): +0.4/s a second.
    limiter.rate = 33.0
    for _ in range(33):
        limiter.on_success(clock())
    assert 33.3 < limiter.rate < 33.5
    for _ in range(20000):
        limiter.on_success(clock())
    assert limiter.rate == 40.0  # back to the configured rate, never above


def test_the_rate_never_drops_below_the_floor():
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep, min_rate=0.5)
    for _ in range(30):
        ticket = limiter.acquire()
        clock.sleep(0.001)
        limiter.on_throttled(None, ticket.sent_at)
    assert limiter.rate == 0.5 and limiter.slowdowns == 30


def test_a_429_met_while_probing_slows_the_next_probe():
    """A limit found twice at the same rate is right there: each 429 met while probing near the last
    one halves the probing speed (down to 1/8), and reaching the configured rate restores it."""
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep, probe_increase=0.1, decrease=0.9)
    ticket = limiter.acquire()
    clock.sleep(0.01)
    limiter.on_throttled(None, ticket.sent_at)  # first cut: from the full rate, not while probing
    assert limiter._probe_scale == 1.0
    for expected in (0.5, 0.25, 0.125, 0.125):
        ticket = limiter.acquire()
        clock.sleep(0.01)
        limiter.on_throttled(None, ticket.sent_at)  # near the last 429: probing
        assert limiter._probe_scale == expected
    before = limiter.rate
    limiter.on_success(clock())
    assert abs((limiter.rate - before) - 0.125 * 1.0 / before) < 1e-9  # 1/8 of the 1.0/s-a-second probe
    for _ in range(100000):
        limiter.on_success(clock())
        if limiter.rate >= 10.0:
            break
    assert limiter.rate == 10.0 and limiter._probe_scale == 1.0
