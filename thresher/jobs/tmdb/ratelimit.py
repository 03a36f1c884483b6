"""The rate limiter all workers share: paced slots, and AIMD congestion control on 429s.

Pacing. ``acquire`` hands out send times spaced ``1/rate`` apart (GCRA-like),
sleeping outside the lock. A slot is booked only when it is at most
``horizon`` seconds away; a worker whose slot would be further out sleeps
and plans again. So nobody holds a slot booked seconds ahead at a rate that
has since changed, and a booked slot is re-planned when a congestion event
happens before it comes (``epoch``): a Retry-After pause holds everyone,
including workers that had already booked a slot.

Congestion control (like TCP's AIMD, with TCP's "one decrease per window"):

* A 429 for a request sent *before* the last decrease belongs to the burst that
  decrease already answered: it does not cut the rate again. Only a 429 for a
  request sent after it is a new congestion event.
* On an event the rate drops to ``max(decrease * rate, 0.95 * delivered)``
  (never above 0.95 * rate, never below ``min_rate``), where ``delivered`` is
  the rate of successes over the last second: what the server actually took
  is the best estimate of its limit, so the cut does not fall far below it.
* Retry-After given: everyone pauses until then. Not given (TMDB's CDN sends
  none): everyone pauses one interval at the new rate, and probing is careful.
* Increase: only successes of requests sent after the last decrease count
  (the old window's answers say nothing about the new rate). Below 80% of the
  rate where the last 429 came, the rate climbs ``fast_increase`` (a fraction of
  the target) per second; nearer, it probes ``probe_increase`` per second, and
  half as fast after each 429 met while probing (down to 1/8: the limit is
  right there). Never above the configured rate.

The clock and sleep are injected: the unit tests run on a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Time window of the delivery-rate estimate, and of "the same burst" for callers without a send time.
WINDOW_S = 1.0


@dataclass(frozen=True)
class Ticket:
    """A granted send: when it was allowed out (``sent_at``, limiter clock)."""

    sent_at: float


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_rate: float = 0.5,
        decrease: float = 0.7,
        fast_increase: float = 0.25,
        probe_increase: float = 0.01,
        horizon: float = 0.1,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.target_rate = float(rate)
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.min_rate = min(min_rate, rate)
        self.decrease = decrease
        self.fast_increase = fast_increase * self.target_rate  # requests/s gained per second, far below
        self.probe_increase = max(0.05, probe_increase * self.target_rate)  # ... and near the last 429
        self.horizon = horizon
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._last = float("-inf")  # the last slot booked: the next is one interval (at today's rate) on
        self._pause_until = now
        self._epoch = 0  # bumped by every congestion event: bookings of an older epoch are re-planned
        self._last_event = float("-inf")  # when the rate was last cut
        self._congestion_rate: float | None = None  # the rate at which the last 429 came
        self._probe_scale = 1.0  # halved by every 429 met while probing, back to 1 at the target
        self._delivered: deque[float] = deque()  # success times within WINDOW_S
        self.slowdowns = 0  # congestion events (rate cuts)
        self.throttled = 0  # 429s reported, every one
        self.paused_seconds = 0.0  # total Retry-After pause ordered

    # --- pacing -------------------------------------------------------------------

    def _next_slot(self, now: float) -> float:
        interval = 1.0 / self.rate
        # An idle limiter has fallen behind "now": at most `burst` slots of credit.
        return max(self._last + interval, self._pause_until, now - (self.burst - 1) * interval)

    def _plan(self, now: float) -> tuple[float | None, float]:
        """Book the next slot if it is within the horizon: (slot or None, seconds to sleep)."""
        start = self._next_slot(now)
        if start - now <= self.horizon:
            self._last = start
            return start, max(0.0, start - now)
        # Too far ahead: plan again nearer the time, when the rate or a pause may have changed.
        return None, start - now - self.horizon

    def acquire(self) -> Ticket:
        """Block until this caller may send; return the ticket to report the answer with."""
        slot: float | None = None
        epoch = -1
        while True:
            with self._lock:
                now = self._clock()
                if slot is not None and epoch == self._epoch and now >= slot - 1e-9:
                    return Ticket(now)
                if slot is None or epoch != self._epoch:
                    slot, wait = self._plan(now)
                    epoch = self._epoch
                    if slot is not None and wait <= 0:
                        return Ticket(now)
                else:
                    wait = slot - now
            self._sleep(max(wait, 1e-4))

    def reserve(self) -> float:
        """Book the next slot now, however far: seconds until it (for tests of the spacing)."""
        with self._lock:
            now = self._clock()
            start = self._next_slot(now)
            self._last = start
            return max(0.0, start - now)

    # --- feedback -----------------------------------------------------------------

    def _delivered_rate(self, now: float) -> float:
        while self._delivered and self._delivered[0] < now - WINDOW_S:
            self._delivered.popleft()
        return len(self._delivered) / WINDOW_S

    def on_throttled(self, retry_after: float | None = None, sent_at: float | None = None) -> bool:
        """The server answered 429 to a request sent at ``sent_at``. Returns whether it was a new
        congestion event (and so cut the rate)."""
        with self._lock:
            now = self._clock()
            self.throttled += 1
            if retry_after is not None and retry_after > 0:
                # The server's word holds whatever burst the 429 belongs to.
                until = now + retry_after
                if until > self._pause_until:
                    self.paused_seconds += until - max(now, self._pause_until)
                    self._pause_until = until
                    self._epoch += 1  # booked slots fall inside the pause: re-plan them
                    self._last = float("-inf")
            same_burst = (sent_at < self._last_event) if sent_at is not None else (now - self._last_event < WINDOW_S)
            if same_burst:
                return False
            self.slowdowns += 1
            probing = self._congestion_rate is not None and self.rate >= 0.8 * self._congestion_rate
            # A 429 met while probing near the last one: the limit is right there, probe slower next time.
            self._probe_scale = max(0.125, self._probe_scale / 2) if probing else 1.0
            self._congestion_rate = self.rate
            cut = max(self.rate * self.decrease, 0.95 * self._delivered_rate(now))
            self.rate = max(self.min_rate, min(cut, 0.95 * self.rate))
            self._last_event = now
            self._epoch += 1
            if retry_after is None:
                # No word from the server: one interval at the new rate lets its bucket refill a token.
                self._pause_until = max(self._pause_until, now + 1.0 / self.rate)
            self._last = float("-inf")  # bookings are void; the pause spaces the restart
            return True

    def on_success(self, sent_at: float | None = None) -> None:
        """A request went through: count it, and climb back towards the configured rate."""
        with self._lock:
            now = self._clock()
            self._delivered.append(now)
            self._delivered_rate(now)  # prune
            if self.rate >= self.target_rate:
                return
            if sent_at is not None and sent_at < self._last_event:
                return  # an answer of the window before the cut: says nothing about the new rate
            near = self._congestion_rate is not None and self.rate >= 0.8 * self._congestion_rate
            per_second = self.probe_increase * self._probe_scale if near else self.fast_increase
            # Per success, so that it is `per_second` a second at the current rate (TCP's per-ACK step).
            self.rate = min(self.target_rate, self.rate + per_second / self.rate)
            if self.rate >= self.target_rate:
                self._probe_scale = 1.0
