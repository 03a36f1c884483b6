"""Leader election on a coordination.k8s.io Lease: the decisions, without I/O or a clock.

The rules are client-go's (k8s.io/client-go/tools/leaderelection, what kube-controller-manager
and kube-scheduler use), so a cluster operator reads the Lease the way they read theirs:

* no Lease: create it, holding it;
* a Lease held by someone else counts as valid for ``lease_duration`` after *this process saw it
  change* (local monotonic time, not the holder's ``renewTime``: clocks of two nodes may
  disagree, a duration measured on one clock may not);
* an expired Lease, or one released (empty holder), is taken over (a "steal" when it had a
  holder): ``leaseTransitions`` + 1, ``acquireTime`` now;
* the holder renews every ``retry_period``; when it has not managed to renew for
  ``renew_deadline`` it has lost leadership and must stop at once (client-go exits). Since
  ``renew_deadline < lease_duration``, it stops before any standby may take over;
* stepping down (SIGTERM) writes an empty holder and a 1 s duration, so a standby takes over
  at its next attempt instead of waiting out the lease.

``Election`` holds the observation state; the adapter (thresher/operator/lease.py) reads and
writes the Lease and passes ``now`` (monotonic seconds) and ``wall`` (UTC datetime) in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

# client-go's JitterFactor: the retry period is stretched by up to this factor, and the renew
# deadline must leave room for one stretched retry.
JITTER_FACTOR = 1.2


@dataclass(frozen=True)
class ElectionConfig:
    """Timings in seconds; the defaults are kube-controller-manager's."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(f"the renew deadline must be longer than {JITTER_FACTOR} x the retry period")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, as the API holds it (holder None: released or never held)."""

    holder: str | None
    duration_seconds: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do now: ``create`` or ``update`` the Lease with ``record``, or ``wait``."""

    action: Literal["create", "update", "wait"]
    record: LeaseRecord | None
    reason: str  # created, renewed, acquired (released lease), stole (expired lease), held


class Election:
    """One candidate's view of one Lease."""

    def __init__(self, identity: str, config: ElectionConfig | None = None) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.identity = identity
        self.config = config or ElectionConfig()
        self.observed: LeaseRecord | None = None
        self.observed_at: float | None = None  # monotonic time the observed record last changed
        self.renewed_at: float | None = None  # monotonic time of this candidate's last successful write

    def decide(self, current: LeaseRecord | None, *, now: float, wall: datetime) -> Decision:
        """The step for the Lease as just read (None: it does not exist)."""
        duration = int(self.config.lease_duration)
        if current is None:
            return Decision("create", LeaseRecord(self.identity, duration, wall, wall, 0), "created")
        if current != self.observed:
            self.observed, self.observed_at = current, now
        if current.holder == self.identity:
            return Decision("update", replace(current, duration_seconds=duration, renew_time=wall), "renewed")
        if current.holder and not self._expired(current, now):
            return Decision("wait", None, "held")
        taken = LeaseRecord(self.identity, duration, wall, wall, current.transitions + 1)
        return Decision("update", taken, "stole" if current.holder else "acquired")

    def _expired(self, current: LeaseRecord, now: float) -> bool:
        assert self.observed_at is not None
        return now >= self.observed_at + current.duration_seconds

    def wrote(self, record: LeaseRecord, *, now: float) -> None:
        """The adapter wrote ``record`` (this candidate holds the Lease until ``renew_deadline``)."""
        self.observed, self.observed_at = record, now
        if record.holder == self.identity:
            self.renewed_at = now

    def leading(self, now: float) -> bool:
        """True while the last successful write is younger than the renew deadline."""
        return self.renewed_at is not None and now - self.renewed_at < self.config.renew_deadline

    def lost(self, now: float) -> bool:
        """Was leading and has failed to renew for the renew deadline: stop now."""
        return self.renewed_at is not None and not self.leading(now)

    def release(self, current: LeaseRecord | None, wall: datetime) -> LeaseRecord | None:
        """The record that steps down from ``current``, or None when this candidate does not
        hold it (nothing of its own to release)."""
        if current is None or current.holder != self.identity:
            return None
        self.renewed_at = None
        return LeaseRecord(None, 1, None, wall, current.transitions)


def standby_alive(last_attempt: float | None, now: float, config: ElectionConfig, request_timeout: float) -> bool:
    """The standby's liveness: its election loop made an attempt recently (an attempt that
    failed on an unreachable API counts: restarting would not help). Three missed rounds of
    (stretched retry period + a read and a write at their timeout) mean the loop is stuck.
    Before the first attempt it is starting, and alive."""
    if last_attempt is None:
        return True
    return now - last_attempt < 3 * (JITTER_FACTOR * config.retry_period + 2 * request_timeout)
