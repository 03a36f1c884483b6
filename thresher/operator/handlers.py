"""kopf wiring: each handler reads its event and calls one Reconciler method.

Handlers are registered into an explicit registry by ``register`` (no import-time side
effects), so the operator, the tests and the benchmarks each build their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager
from datetime import timedelta

import kopf

from thresher.api.names import (
    BACKFILL_ANNOTATION,
    GROUP,
    KOPF_PREFIX,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    PLURAL,
    RUN_NOW_ANNOTATION,
    SCHEDULE_LABEL,
    VERSION,
)
from thresher.operator.diffbase import ScheduleDiffBase
from thresher.operator.reconciler import Reconciler

MANAGED = {MANAGED_BY: MANAGED_BY_VALUE}
RESYNC_SECONDS = 60.0
RESYNC_LANES = 4
RECHECK_TICK_SECONDS = 2.0  # how often due rechecks of active runs are looked for
log = logging.getLogger("thresher.operator")


# API outages: kopf retries its own requests (watches included) with these pauses before it
# gives up and the process exits; about 5 minutes, so a restarting API server is ridden out.
ERROR_BACKOFFS = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30)


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, *,
             watch_timeout: float = 300, max_workers: int = 16) -> None:
    metrics = reconciler.metrics
    diffbase = ScheduleDiffBase()

    @contextmanager
    def measured(handler: str):
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            metrics.observe_reconcile(handler=handler, ok=ok, seconds=time.monotonic() - start)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        # kopf's bookkeeping goes into annotations, so status holds only Thresher's schema. Its
        # own prefix: kopf ignores annotations under it when diffing, and the user-facing
        # thresher.dev/run-now annotation must stay visible to the run-now handler.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        # The diff base: no PATCH of its own per new schedule or spec change (operator/diffbase.py).
        settings.persistence.diffbase_storage = diffbase
        # Thresher posts its own Events; kopf's per-handler chatter only when something is wrong.
        settings.posting.level = logging.WARNING
        # ... and logs it only then: kopf logs every handler call at INFO ("Handler ... succeeded.",
        # 4 JSON lines per new schedule, 7 with its deletion); failures and retries are WARNING+.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # Watches end on the server side and are re-established regularly, so a stream that
        # silently stalls cannot leave the operator deaf for long (nolar/kopf#1276).
        settings.watching.server_timeout = int(watch_timeout)  # the API wants whole seconds
        settings.watching.client_timeout = watch_timeout + 30
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        settings.networking.error_backoffs = ERROR_BACKOFFS
        # Sync handlers run in this pool; API calls are I/O, so more threads than cores is right.
        settings.execution.max_workers = max_workers

    # backoff: a failed attempt is an API error (outage, conflict storm), worth retrying soon;
    # the periodic resync converges whatever still fails after the timeout.
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, timeout=120, backoff=5)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry, timeout=120, backoff=5)
    def reconcile_schedule(body, **_):
        with measured("schedule"):
            reconciler.reconcile(dict(body))

    # One resume handler, not two: with several, kopf's default lifecycle runs one per cycle and
    # records their progress in annotations, two PATCHes per schedule on every start-up, all at
    # once and each on a new TLS connection (peak RSS 443-471 -> 187 MiB restarting into 1,000
    # schedules, docs/benchmarks.md). A single handler that succeeds writes nothing.
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, timeout=120, backoff=5)
    def resume_schedule(body, **_):
        """Converge after a restart, then report runs that should have happened meanwhile."""
        with measured("schedule"):
            reconciler.reconcile(dict(body))
        missed = reconciler.missed_runs(dict(body))
        if missed:
            fmt = "%Y-%m-%dT%H:%M:%SZ"
            times = ", ".join(t.strftime(fmt) for t in missed[:5])
            # The window is half-open: one minute past the last missed time includes it.
            again = (f"thresher backfill {body['metadata']['name']} -n {body['metadata']['namespace']} --from "
                     f"{missed[0].strftime(fmt)} --to {(missed[-1] + timedelta(minutes=1)).strftime(fmt)}")
            reconciler.kube.post_event(dict(body), "Warning", "RunMissed",
                                       f"{len(missed)} scheduled run(s) did not start: {times}; run them with `{again}`")

    @kopf.on.field(GROUP, VERSION, PLURAL, field=("metadata", "annotations", RUN_NOW_ANNOTATION),
                   registry=registry, timeout=60)
    def run_now(body, new, **_):
        if new:
            with measured("run_now"):
                if reconciler.run_now(dict(body), str(new)) is None:
                    raise kopf.TemporaryError("the CronJob does not exist yet", delay=5)

    @kopf.on.field(GROUP, VERSION, PLURAL, field=("metadata", "annotations", BACKFILL_ANNOTATION),
                   registry=registry, timeout=120, backoff=5)
    def backfill(body, new, **_):
        if new:
            with measured("backfill"):
                if reconciler.backfill(dict(body), str(new)) is None:
                    raise kopf.TemporaryError("the CronJob does not exist yet", delay=5)

    # Level-based refresh of every schedule once a minute, by one loop over the schedules the
    # watch showed (slim copies) instead of a kopf timer per schedule: a timer is an asyncio
    # task holding the full last body, and makes kopf put a finalizer on every schedule (so
    # deleting a namespace waits for the operator).
    # Async, as the CronJob one below: each schedule and CronJob event (a new schedule makes
    # three, its own status write one of them) costs a slim copy, not a hop into the thread pool.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def schedule_seen(event, body, **_):
        meta = body["metadata"]
        if event.get("type") == "DELETED":
            reconciler.forget(meta["namespace"], meta["name"])
            diffbase.forget(meta.get("uid"))
        else:
            reconciler.observe_schedule(dict(body))

    def resync_one(key: tuple[str, str]) -> None:
        try:
            with measured("resync"):
                reconciler.resync(*key)
        except Exception:  # counted as an error above; the next pass tries again
            log.exception("resync failed", extra={"schedule": "/".join(key)})

    async def resync_loop(executor) -> None:
        loop = asyncio.get_running_loop()
        known: set[tuple[str, str]] = set()
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            # Only schedules known for a whole interval, as the timer's initial delay had it: a
            # new one was just reconciled by its create handler, and a storm needs no second pass.
            due = [key for key in list(reconciler.caches.schedules) if key in known]
            known = set(reconciler.caches.schedules)
            pending = iter(due)

            async def lane():  # a few refreshes at a time: the pool stays free for events
                for key in pending:
                    await loop.run_in_executor(executor, resync_one, key)

            await asyncio.gather(*(lane() for _ in range(RESYNC_LANES)))

    def recheck_one(key: tuple[str, str]) -> None:
        try:
            with measured("recheck"):
                reconciler.refresh_active(*key)
        except Exception:  # counted as an error above; the resync tries again
            log.exception("recheck failed", extra={"schedule": "/".join(key)})

    async def recheck_loop(executor) -> None:
        """Active runs that are not running are looked at again when due (events worth reading,
        a startup timeout running out), not only once a minute."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RECHECK_TICK_SECONDS)
            for key in reconciler.due_rechecks():
                await loop.run_in_executor(executor, recheck_one, key)

    @kopf.on.startup(registry=registry)
    async def start_resync(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
        memo.resync = asyncio.create_task(resync_loop(settings.execution.executor), name="resync")
        memo.recheck = asyncio.create_task(recheck_loop(settings.execution.executor), name="recheck")

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(memo: kopf.Memo, **_):
        memo.resync.cancel()
        memo.recheck.cancel()

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    def job_changed(event, body, **_):
        if event.get("type") == "DELETED":
            reconciler.job_deleted(dict(body))
        else:
            with measured("job"):
                reconciler.record_job_or_defer(dict(body))

    # The runs' pods, by the managed-by label (never every pod of the cluster): a pod that
    # starts, waits on a pull or a Secret, or loses its node changes its run's status.active.
    @kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)
    def pod_changed(event, body, **_):
        with measured("pod"):
            reconciler.pod_changed(dict(body), deleted=event.get("type") == "DELETED")

    @kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED, registry=registry)
    async def cronjob_changed(event, body, **_):
        """A CronJob edited or deleted by hand is put back as its schedule wants it."""
        meta = body["metadata"]
        owner = meta.get("labels", {}).get(SCHEDULE_LABEL)
        deleted = event.get("type") == "DELETED"
        cronjob = dict(body)
        reconciler.observe_cronjob(cronjob, deleted=deleted)
        if not owner or meta.get("deletionTimestamp") and not deleted:
            return
        # Status updates and our own applies echo back here: only a changed generation or
        # label (or a deletion) is worth reading the schedule for (in the thread pool).
        if not reconciler.cronjob_event_needs_check(event.get("type"), cronjob):
            return
        await asyncio.get_running_loop().run_in_executor(None, put_back, meta["namespace"], owner, cronjob, deleted)

    def put_back(namespace: str, owner: str, cronjob: dict, deleted: bool) -> None:
        schedule = reconciler.kube.get_schedule(namespace, owner)
        if schedule is None or schedule["metadata"].get("deletionTimestamp"):
            return
        with measured("cronjob"):
            if deleted or reconciler.cronjob_drifted(schedule, cronjob):
                reconciler.reconcile(schedule)
