"""The Lease adapter's loops (thresher/operator/lease.py) against an in-memory Lease that
behaves like the API server's: optimistic concurrency on resourceVersion (409 Conflict),
404 when absent, and injectable outages. Time is a fake monotonic clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from kubernetes.client.rest import ApiException

from thresher.operator.lease import LeaderElector, ReadLease
from thresher.operator.leaderelection import Election, ElectionConfig, LeaseRecord

CONFIG = ElectionConfig(lease_duration=15, renew_deadline=10, retry_period=2)
WALL = datetime(2026, 12, 1, tzinfo=timezone.utc)


class MemoryLease:
    namespace, name = "ns", "thresher"

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.down = False
        self.writes: list[LeaseRecord] = []

    def _check(self) -> None:
        if self.down:
            raise ApiException(status=503, reason="Service Unavailable")

    def get(self) -> ReadLease:
        self._check()
        return ReadLease(self.record, str(self.version) if self.record else None)

    def create(self, record: LeaseRecord) -> None:
        self._check()
        if self.record is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        self._store(record)

    def update(self, record: LeaseRecord, resource_version: str | None) -> None:
        self._check()
        if resource_version != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self._store(record)

    def _store(self, record: LeaseRecord) -> None:
        self.record, self.version = record, self.version + 1
        self.writes.append(record)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(lock: MemoryLease, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(lock, Election(identity, CONFIG), monotonic=clock, wall=lambda: WALL)  # type: ignore[arg-type]


def test_one_of_two_candidates_leads_and_the_other_takes_over_after_expiry():
    lock, clock = MemoryLease(), Clock()
    a, b = elector(lock, "a", clock), elector(lock, "b", clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False and b.holder == "a"
    clock.t += 14
    assert b.try_acquire_or_renew() is False
    clock.t += 1  # a never renewed: 15 s since b saw the record change
    assert b.try_acquire_or_renew() is True
    assert lock.record.holder == "b" and lock.record.transitions == 1
    assert a.try_acquire_or_renew() is False  # a sees b's lease, valid from now on its clock


def test_a_stale_write_loses_on_conflict():
    """Both candidates find the lease expired; b writes between a's read and a's write. a's
    update carries the old resourceVersion, is refused (409), and a does not lead."""
    lock, clock = MemoryLease(), Clock()
    lock._store(LeaseRecord("old", 15, WALL, WALL, 0))
    a, b = elector(lock, "a", clock), elector(lock, "b", clock)
    a.try_acquire_or_renew(), b.try_acquire_or_renew()  # both observe "old"
    clock.t += 15
    real_get = lock.get

    def racing_get() -> ReadLease:
        read = real_get()
        lock.get = real_get
        assert b.try_acquire_or_renew()  # b steals in between
        return read

    lock.get = racing_get
    assert asyncio.run(a._attempt()) is False
    assert lock.record.holder == "b" and lock.record.transitions == 1
    assert not a.election.leading(clock.t)


def test_release_hands_over_at_the_next_attempt():
    lock, clock = MemoryLease(), Clock()
    a, b = elector(lock, "a", clock), elector(lock, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    asyncio.run(a.release())
    assert lock.record.holder is None and lock.record.duration_seconds == 1
    assert b.try_acquire_or_renew() and lock.record.holder == "b"  # no 15 s wait
    asyncio.run(a.release())  # a no longer holds it: nothing written
    assert lock.record.holder == "b"


def test_keep_leading_returns_when_renewals_fail_past_the_deadline():
    lock, clock = MemoryLease(), Clock()
    a = elector(lock, "a", clock)
    a.election = Election("a", ElectionConfig(lease_duration=0.5, renew_deadline=0.3, retry_period=0.05))
    a.monotonic = __import__("time").monotonic
    assert a.try_acquire_or_renew()

    async def scenario() -> float:
        task = asyncio.create_task(a.keep_leading())
        await asyncio.sleep(0.2)
        assert not task.done() and len(lock.writes) >= 3  # renewing
        lock.down = True
        start = asyncio.get_running_loop().time()
        await asyncio.wait_for(task, timeout=5)
        return asyncio.get_running_loop().time() - start

    assert scenario_time(scenario) <= 0.3 + 0.1


def test_keep_leading_returns_at_once_when_another_holds_the_lease():
    lock, clock = MemoryLease(), Clock()
    a = elector(lock, "a", clock)
    a.election = Election("a", ElectionConfig(lease_duration=5, renew_deadline=3, retry_period=0.05))
    assert a.try_acquire_or_renew()
    lock._store(LeaseRecord("intruder", 15, WALL, WALL, 1))  # e.g. edited by hand

    async def scenario() -> None:
        await asyncio.wait_for(a.keep_leading(), timeout=1)

    asyncio.run(scenario())
    assert a.holder == "intruder"


def test_acquire_waits_until_stopped_when_the_lease_is_held():
    lock, clock = MemoryLease(), Clock()
    elector(lock, "a", clock).try_acquire_or_renew()
    b = elector(lock, "b", clock)
    b.election = Election("b", ElectionConfig(lease_duration=15, renew_deadline=10, retry_period=0.02))

    async def scenario() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return await b.acquire(stop)

    assert asyncio.run(scenario()) is False
    assert b.last_attempt is not None and lock.record.holder == "a"


def scenario_time(coro_fn) -> float:
    return asyncio.run(coro_fn())
