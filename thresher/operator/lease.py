"""The Lease adapter of leader election: reads and writes a coordination.k8s.io Lease, and
runs the acquire/renew loops of thresher/operator/leaderelection.py's decisions.

Permissions (charts/thresher/files/rbac-rules.yaml, ``leaderElection``): get, create and update
on leases in the operator's own namespace, nothing else. Updates carry the resourceVersion
that was read, so two candidates writing at once cannot both win: the API server refuses the
second with 409 Conflict.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from kubernetes import client
from kubernetes.client.rest import ApiException

from thresher.operator.leaderelection import Election, LeaseRecord, standby_alive

log = logging.getLogger("thresher.operator.lease")


@dataclass(frozen=True)
class ReadLease:
    record: LeaseRecord | None
    resource_version: str | None


class LeaseLock:
    """One Lease in one namespace, through the kubernetes client (synchronous calls)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, *, timeout: float) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.timeout = namespace, name, timeout

    def get(self) -> ReadLease:
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                            _request_timeout=self.timeout)
        except ApiException as err:
            if err.status == 404:
                return ReadLease(None, None)
            raise
        spec = lease.spec
        return ReadLease(LeaseRecord(
            holder=spec.holder_identity or None, duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=spec.acquire_time, renew_time=spec.renew_time,
            transitions=spec.lease_transitions or 0), lease.metadata.resource_version)

    def create(self, record: LeaseRecord) -> None:
        self.coordination.create_namespaced_lease(self.namespace, self._body(record, None),
                                                  _request_timeout=self.timeout)

    def update(self, record: LeaseRecord, resource_version: str | None) -> None:
        self.coordination.replace_namespaced_lease(self.name, self.namespace, self._body(record, resource_version),
                                                   _request_timeout=self.timeout)

    def _body(self, record: LeaseRecord, resource_version: str | None) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                         resource_version=resource_version),
            spec=client.V1LeaseSpec(
                holder_identity=record.holder or "", lease_duration_seconds=record.duration_seconds,
                acquire_time=record.acquire_time, renew_time=record.renew_time,
                lease_transitions=record.transitions))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LeaderElector:
    """Drives one ``Election`` against one ``LeaseLock``.

    API calls run on a thread of their own: the handlers' pool may be saturated by a storm, and
    a renewal that waits behind it would lose the lease. ``last_attempt`` (monotonic) feeds the
    standby's liveness endpoint.
    """

    def __init__(self, lock: LeaseLock, election: Election, *,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = utcnow) -> None:
        self.lock, self.election = lock, election
        self.monotonic, self.wall = monotonic, wall
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self.last_attempt: float | None = None
        self.holder: str | None = None

    def try_acquire_or_renew(self) -> bool:
        """One attempt (blocking): True when this candidate holds the Lease afterwards."""
        self.last_attempt = self.monotonic()
        read = self.lock.get()
        decision = self.election.decide(read.record, now=self.monotonic(), wall=self.wall())
        self.holder = read.record.holder if read.record else None
        if decision.action == "wait":
            return False
        assert decision.record is not None
        if decision.action == "create":
            self.lock.create(decision.record)
        else:
            self.lock.update(decision.record, read.resource_version)
        self.election.wrote(decision.record, now=self.monotonic())
        self.holder = decision.record.holder
        if decision.reason != "renewed":
            log.info("leader election: %s the lease %s/%s", decision.reason, self.lock.namespace, self.lock.name,
                     extra={"identity": self.election.identity, "previous": read.record.holder if read.record else None})
        return True

    async def _attempt(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.try_acquire_or_renew)
        except (ApiException, OSError, ValueError) as err:  # conflict, outage, timeout: try again
            status = getattr(err, "status", None)
            if status == 409:
                log.info("leader election: the lease changed under us (409); retrying")
            else:
                log.warning("leader election: %s", _short(err))
            return False

    def _pause(self) -> float:
        period = self.election.config.retry_period
        return period * (1 + random.uniform(0, 0.2))  # client-go's JitterFactor 1.2

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Try until this candidate leads (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if await self._attempt():
                return True
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._pause())
            except asyncio.TimeoutError:
                pass
        return False

    async def keep_leading(self) -> None:
        """Renew every retry period; return when leadership is lost (the caller must stop)."""
        while True:
            await asyncio.sleep(self.election.config.retry_period)
            renewed = await self._attempt()
            if not renewed and (self.election.lost(self.monotonic())
                                or self.holder not in (None, self.election.identity)):
                return  # the deadline passed, or another candidate holds the Lease now

    async def release(self) -> None:
        """Step down: an empty holder, so that a standby takes over at its next attempt."""
        loop = asyncio.get_running_loop()

        def write() -> None:
            read = self.lock.get()
            record = self.election.release(read.record, self.wall())
            if record is not None:  # None: someone else holds it already, nothing of ours to release
                self.lock.update(record, read.resource_version)
                log.info("leader election: released the lease %s/%s", self.lock.namespace, self.lock.name)

        try:
            await loop.run_in_executor(self.executor, write)
        except (ApiException, OSError, ValueError) as err:  # it expires by itself
            log.warning("leader election: could not release the lease: %s", _short(err))


def _short(err: Exception) -> str:
    if isinstance(err, ApiException):
        return f"{err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"


class StandbyHealth:
    """The liveness endpoint while this process waits for the Lease (kopf serves it while
    leading, on the same port): 200 while the election loop runs, 500 when it is stuck."""

    def __init__(self, elector: LeaderElector, port: int, request_timeout: float) -> None:
        self.elector, self.port, self.request_timeout = elector, port, request_timeout
        self.runner = None

    async def start(self) -> None:
        from aiohttp import web

        async def healthz(_request):
            alive = standby_alive(self.elector.last_attempt, self.elector.monotonic(),
                                  self.elector.election.config, self.request_timeout)
            return web.json_response({"role": "standby", "leader": self.elector.holder},
                                     status=200 if alive else 500)

        app = web.Application()
        app.add_routes([web.get("/healthz", healthz)])
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "0.0.0.0", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def run_elected(elector: LeaderElector, health: StandbyHealth,
                      lead: Callable[[], Awaitable[None]], on_lost: Callable[[], None],
                      set_leader: Callable[[bool], None]) -> None:
    """Standby until the Lease is ours, then ``lead()`` (kopf) while renewing it.

    SIGTERM as a standby: return. SIGTERM while leading: kopf stops its handlers, then the
    Lease is released so the standby takes over at once. Renewal lost: ``on_lost()`` (the
    operator exits at once, as client-go's users do: a new leader may start within seconds).
    """
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    set_leader(False)
    await health.start()
    try:
        leading = await elector.acquire(stop)
    finally:
        await health.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # kopf installs its own while leading
    if not leading:
        return
    set_leader(True)
    renewing = asyncio.create_task(elector.keep_leading(), name="lease renewal")
    renewing.add_done_callback(lambda task: task.cancelled() or on_lost())
    try:
        await lead()
    finally:
        renewing.cancel()
        await elector.release()
