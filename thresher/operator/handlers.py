"""kopf wiring: each handler reads its event and calls one Reconciler method.

Handlers are registered into an explicit registry by ``register`` (no import-time side
effects), so the operator, the tests and the benchmarks each build their own.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import kopf

from thresher.operator import builders
from thresher.operator.kube import GROUP, PLURAL, VERSION
from thresher.operator.reconciler import Reconciler

MANAGED = {builders.MANAGED_BY: "thresher"}
RESYNC_SECONDS = 60.0
KOPF_PREFIX = "kopf.thresher.dev"


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    metrics = reconciler.metrics

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
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration")
        # Thresher posts its own Events; kopf's per-handler chatter only when something is wrong.
        settings.posting.level = logging.WARNING
        # Watches end on the server side and are re-established regularly, so a stream that
        # silently stalls cannot leave the operator deaf for long (nolar/kopf#1276).
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        # Sync handlers run in this pool; API calls are I/O, so more threads than cores is right.
        settings.execution.max_workers = 16

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, timeout=120)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, timeout=120)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry, timeout=120)
    def reconcile_schedule(body, **_):
        with measured("schedule"):
            reconciler.reconcile(dict(body))

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, timeout=60)
    def report_missed_runs(body, **_):
        """Runs that should have happened while the operator was away."""
        missed = reconciler.missed_runs(dict(body))
        if missed:
            times = ", ".join(t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in missed[:5])
            reconciler.kube.post_event(dict(body), "Warning", "RunMissed",
                                       f"{len(missed)} scheduled run(s) did not start: {times}")

    @kopf.on.field(GROUP, VERSION, PLURAL, field=("metadata", "annotations", builders.RUN_NOW_ANNOTATION),
                   registry=registry, timeout=60)
    def run_now(body, new, **_):
        if new:
            with measured("run_now"):
                if reconciler.run_now(dict(body), str(new)) is None:
                    raise kopf.TemporaryError("the CronJob does not exist yet", delay=5)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS,
                sharp=False, idle=None, registry=registry)
    def resync(body, **_):
        """Level-based refresh: next run time, staleness, a deleted CronJob restored."""
        with measured("resync"):
            reconciler.refresh(dict(body))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def forget_deleted(event, body, **_):
        if event.get("type") == "DELETED":
            meta = body["metadata"]
            reconciler.forget(meta["namespace"], meta["name"])

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    def job_changed(event, body, **_):
        if event.get("type") == "DELETED":
            reconciler.job_deleted(dict(body))
        else:
            with measured("job"):
                reconciler.record_job(dict(body))

    @kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED, registry=registry)
    def cronjob_changed(event, body, **_):
        """A CronJob edited or deleted by hand is put back as its schedule wants it."""
        meta = body["metadata"]
        owner = meta.get("labels", {}).get(builders.SCHEDULE_LABEL)
        if not owner or meta.get("deletionTimestamp") and event.get("type") != "DELETED":
            return
        schedule = reconciler.kube.get_schedule(meta["namespace"], owner)
        if schedule is None or schedule["metadata"].get("deletionTimestamp"):
            return
        with measured("cronjob"):
            if event.get("type") == "DELETED" or reconciler.cronjob_drifted(schedule, dict(body)):
                reconciler.reconcile(schedule)
