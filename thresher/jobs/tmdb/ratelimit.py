"""A thread-safe rate limiter shared by all workers, that slows down when the server says 429.

It hands out send times (a reservation scheme, like GCRA): each ``acquire``
takes the next free slot under a lock and sleeps outside it, so workers are
spaced ``1/rate`` apart without busy-waiting and without a thundering herd
after a pause. A small burst lets an idle limiter send a few requests at once.

On a 429 the rate is cut multiplicatively (and all workers pause for the
Retry-After when the server gave one); every success then adds back a little,
up to the configured rate: AIMD, as TCP does it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_rate: float = 0.5,
        decrease: float = 0.5,
        recovery: float = 0.02,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.target_rate = float(rate)
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.min_rate = min(min_rate, rate)
        self.decrease = decrease
        self.recovery = recovery  # fraction of the target rate regained per success
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()  # the earliest time the next request may go out
        self.slowdowns = 0

    def reserve(self) -> float:
        """Take the next slot; return how long the caller must wait before sending."""
        with self._lock:
            now = self._clock()
            interval = 1.0 / self.rate
            # An idle limiter may have fallen behind "now"; allow at most `burst` slots of credit.
            slot = max(self._next, now - (self.burst - 1) * interval)
            self._next = slot + interval
            return max(0.0, slot - now)

    def acquire(self) -> float:
        """Block until this caller may send; return the time waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def on_throttled(self, retry_after: float | None = None) -> None:
        """The server answered 429: slow down, and pause everybody for Retry-After when given."""
        with self._lock:
            self.slowdowns += 1
            self.rate = max(self.min_rate, self.rate * self.decrease)
            now = self._clock()
            pause_until = now + (retry_after if retry_after is not None else 1.0 / self.rate)
            self._next = max(self._next, pause_until)

    def on_success(self) -> None:
        """A request went through: regain a little of the rate lost to 429s."""
        if self.rate < self.target_rate:
            with self._lock:
                self.rate = min(self.target_rate, self.rate + self.recovery * self.target_rate)
