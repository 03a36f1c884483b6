"""Pure retry decisions: backoff delays, Retry-After parsing, which failures are worth retrying.

Kept free of I/O so the client's retry loop can be tested with a fake clock and
a seeded random generator, in microseconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

# Statuses where trying again later can succeed: rate limited, and TMDB's/the CDN's 5xx
# (24/504 backend timeout, 43/502, 9 and 46/503 maintenance).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one request."""

    max_retries: int = 5
    base_delay: float = 0.5  # seconds; the first retry waits up to this much
    max_delay: float = 30.0  # cap of one backoff delay
    max_retry_after: float = 120.0  # never wait longer than this for a server-given Retry-After


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    ``attempt`` counts from 0 (the delay before the first retry). Full jitter
    spreads the retries of many workers that failed at the same moment (a 429
    burst) instead of having them come back together.
    """
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** max(0, attempt)))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if seconds == seconds else None  # NaN guard
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def retry_delay(attempt: int, policy: RetryPolicy, rng: random.Random, retry_after: float | None) -> float:
    """The wait before retry ``attempt``: the server's Retry-After (capped) when given, else our backoff."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    return backoff_delay(attempt, policy, rng)
