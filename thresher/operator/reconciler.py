"""What the operator does, as methods that read the world, call the pure functions and write.

kopf handlers (``handlers.py``) are one-liners into this class, so the whole flow can be read
top to bottom here: schedule -> CronJob (``builders``), finished Job -> run record (``runs``)
-> desired status (``desired_status``) -> one status write, then metrics and events. What is
remembered between events lives in ``caches``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from thresher.api import cron
from thresher.api.names import RECORDED_ANNOTATION, SCHEDULE_LABEL
from thresher.api.schedule import CollectionSchedule, RunRecord, SpecInvalid, parse_schedule
from thresher.operator import builders, runs
from thresher.operator.caches import Caches, cronjob_needs_check, in_sync_marker, key_of, slim_schedule
from thresher.operator.desired_status import Desired, Observed, desired_status
from thresher.operator.kube import Kube, is_conflict
from thresher.operator.metrics import OperatorMetrics

log = logging.getLogger("thresher.operator")

Clock = Callable[[], datetime]
STATUS_WRITE_ATTEMPTS = 8
OUTCOME_LABELS = {runs.SUCCEEDED: "succeeded", runs.FAILED: "failed", runs.TIMED_OUT: "timed_out"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Reconciler:
    kube: Kube
    metrics: OperatorMetrics
    images: builders.JobImages = field(default_factory=builders.JobImages)
    clock: Clock = utcnow
    caches: Caches = field(default_factory=Caches)

    # --- schedule -> CronJob ----------------------------------------------------------

    def reconcile(self, body: dict) -> None:
        """Create or correct the CronJob, then refresh status. Invalid specs are reported on
        the object (Ready=False) and left alone until the spec changes: retrying cannot help."""
        parsed = parse_schedule(body)
        if isinstance(parsed, SpecInvalid):
            log.warning("invalid spec", extra={"schedule": _name(body), "problems": parsed.messages})
            self._write_status(body, lambda cur: self._desired(cur, parsed if cur is body else parse_schedule(cur)),
                               current=body)
            return
        applied = self._apply(builders.build_cronjob(body, parsed, self.images))
        self.refresh(body, parsed, applied)

    def _apply(self, desired: dict) -> dict:
        applied = self.kube.apply_cronjob(desired)
        self.caches.observe_cronjob(applied)
        self.caches.in_sync[key_of(applied)] = in_sync_marker(applied, desired["metadata"]["labels"])
        return applied

    def observe_cronjob(self, cronjob: dict, deleted: bool = False) -> None:
        """Keep what refreshes need of a CronJob from its watch events and API responses."""
        self.caches.observe_cronjob(cronjob, deleted)

    def cronjob_event_needs_check(self, event_type: str | None, cronjob: dict) -> bool:
        return cronjob_needs_check(event_type, cronjob, self.caches.in_sync.get(key_of(cronjob)))

    def cronjob_drifted(self, schedule: dict, cronjob: dict) -> bool:
        """True when someone changed a field of the CronJob that the schedule decides."""
        parsed = parse_schedule(schedule)
        if isinstance(parsed, SpecInvalid):
            return False
        desired = builders.build_cronjob(schedule, parsed, self.images)
        drifted = (builders.drifted(desired["spec"], cronjob.get("spec"))
                   or builders.drifted(desired["metadata"]["labels"], cronjob["metadata"].get("labels")))
        if not drifted:  # e.g. another manager's field: no need to read the schedule again
            self.caches.in_sync[key_of(cronjob)] = in_sync_marker(cronjob, desired["metadata"]["labels"])
        return drifted

    def observe_schedule(self, body: dict) -> None:
        self.caches.schedules[key_of(body)] = slim_schedule(body)

    def resync(self, namespace: str, name: str) -> None:
        """Level-based refresh of a schedule as last watched: a failed recording retried, next
        run time, staleness, a deleted CronJob restored. Called for every schedule once a
        minute; writes only what changed."""
        body = self.caches.schedules.get((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        self.record_deferred(namespace, name)
        self.refresh(body)

    def refresh(self, body: dict, parsed: CollectionSchedule | None = None,
                cronjob: dict | None = None) -> None:
        """Level-based status refresh: next run, staleness, conditions and metrics.
        ``body`` is used as the current object for a first compare-and-swap attempt (kopf hands
        handlers the latest body it watched); a conflict re-reads it."""
        parsed = parsed or parse_schedule(body)
        if isinstance(parsed, SpecInvalid):
            return
        cronjob = cronjob or self._cronjob_for(body, parsed)
        _, desired = self._write_status(
            body, lambda cur: self._desired(cur, parsed if cur is body else parse_schedule(cur), cronjob),
            current=body)
        if desired is not None and desired.state is not None:
            self.metrics.set_schedule_state(desired.state)

    def _cronjob_for(self, body: dict, parsed: CollectionSchedule) -> dict:
        """The schedule's CronJob as last watched; read when unknown, re-applied when gone."""
        cronjob = self._known_cronjob(*key_of(body))
        if cronjob is None:  # deleted by hand: put it back
            cronjob = self._apply(builders.build_cronjob(body, parsed, self.images))
        return cronjob

    def _known_cronjob(self, namespace: str, name: str) -> dict | None:
        cronjob = self.caches.cronjobs.get((namespace, name))
        if cronjob is None:
            cronjob = self.kube.get_cronjob(namespace, name)
            if cronjob is not None:
                self.caches.observe_cronjob(cronjob)
        return cronjob

    def _desired(self, current: dict, parsed: CollectionSchedule | SpecInvalid, cronjob: dict | None = None,
                 finished: tuple = ()) -> Desired:
        """The pure step, fed from what this process observed (its caches) at the clock's now."""
        observed = Observed(cronjob=cronjob, finished=finished,
                            running_since=self.caches.running_since(key_of(current)))
        return desired_status(current, parsed, observed, self.clock(), self.caches.fire_times)

    # --- run now --------------------------------------------------------------------

    def run_now(self, body: dict, token: str) -> str | None:
        """Start a manual run for this token (idempotent); the Job name, or None if no CronJob."""
        meta = body["metadata"]
        cronjob = self.kube.get_cronjob(meta["namespace"], meta["name"])
        if cronjob is None:
            return None
        job = builders.manual_job(cronjob, token)
        created = self.kube.create_job(job)
        log.info("manual run", extra={"schedule": _name(body), "job": job["metadata"]["name"],
                                      "job_created": created})
        return job["metadata"]["name"]

    # --- finished Job -> run record -> status ----------------------------------------

    def record_job(self, job: dict) -> RunRecord | None:
        """Record a finished Job's run on its schedule, exactly once. Returns the record if new."""
        meta = job["metadata"]
        annotations = meta.get("annotations") or {}
        namespace = meta["namespace"]
        schedule_name = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
        if not schedule_name:
            return None
        self.caches.observe_job((namespace, schedule_name), job)
        if annotations.get(RECORDED_ANNOTATION) or runs.finished_condition(job) is None:
            return None
        record = runs.run_record(job, self.kube.job_pods(namespace, meta["name"]))
        # Read before the write: the compute step below makes no API calls.
        cronjob = self._known_cronjob(namespace, schedule_name)
        # Conditions and next run in the same write as the run: one PATCH per run, not two.
        schedule, desired = self._write_status(
            {"metadata": {"namespace": namespace, "name": schedule_name}},
            lambda cur: self._desired(cur, parse_schedule(cur), cronjob, (record,)))
        new = desired is not None and bool(desired.new_runs)
        if schedule is not None and new:
            self._after_new_run(schedule, desired)
        # Marked after the status write: a crash in between is harmless (the fold dedupes).
        self.kube.annotate_job(namespace, meta["name"], {RECORDED_ANNOTATION: "true"})
        return record if new else None

    def record_job_or_defer(self, job: dict) -> RunRecord | None:
        """``record_job`` from a Job event; on failure the schedule's next resync tries again."""
        try:
            return self.record_job(job)
        except Exception:
            meta = job["metadata"]
            schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
            if schedule:
                self.caches.unrecorded.add((meta["namespace"], schedule))
            raise

    def record_deferred(self, namespace: str, schedule: str) -> None:
        """Record the finished Jobs of a schedule whose earlier recording failed (idempotent)."""
        if (namespace, schedule) not in self.caches.unrecorded:
            return
        for job in self.kube.list_jobs(namespace, f"{SCHEDULE_LABEL}={schedule}"):
            self.record_job(job)
        self.caches.unrecorded.discard((namespace, schedule))

    def job_deleted(self, job: dict) -> None:
        meta = job["metadata"]
        schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
        self.caches.active_starts.get((meta["namespace"], schedule), {}).pop(meta["name"], None)

    def forget(self, namespace: str, schedule: str) -> None:
        self.caches.forget((namespace, schedule))
        self.metrics.forget_schedule(namespace=namespace, schedule=schedule)

    def _after_new_run(self, schedule: dict, desired: Desired) -> None:
        """Metrics and events of runs just written to status; suspend after too many failures."""
        meta, parsed, state = schedule["metadata"], desired.schedule, desired.state
        job_type = state.job_type if state is not None else "unknown"
        for record in desired.new_runs:
            result = record.result
            finished = record.completion_time or self.clock()
            self.metrics.observe_run(
                namespace=meta["namespace"], schedule=meta["name"], job_type=job_type,
                outcome=OUTCOME_LABELS[record.outcome], duration_seconds=record.duration_seconds,
                finished_at=finished.timestamp(), items=result.items if result else None,
                valid=result.valid if result else None, quality=result.quality if result else None)
            if record.outcome != runs.SUCCEEDED:
                self.kube.post_event(schedule, "Warning", "RunFailed",
                                     f"run {record.job_name} {record.outcome.lower()}: {record.message or ''}")
        if parsed is None:
            return
        limit = parsed.spec.stop_after_consecutive_failures
        failures = desired.status.consecutive_failures
        if limit and failures >= limit and not parsed.spec.suspend:
            self.kube.patch_schedule(meta["namespace"], meta["name"], {"spec": {"suspend": True}})
            self.kube.post_event(schedule, "Warning", "Suspended",
                                 f"suspended after {failures} consecutive failed runs "
                                 f"(stopAfterConsecutiveFailures={limit}); resume with "
                                 f"`thresher resume {meta['name']}`")
        # The level state as written with the runs (authoritative for every gauge it covers).
        self.metrics.set_schedule_state(state)

    # --- missed runs ----------------------------------------------------------------

    def missed_runs(self, body: dict, slack: timedelta = timedelta(minutes=2)) -> list[datetime]:
        """Fire times that passed without the CronJob scheduling anything (operator or
        controller down, deadline missed). Reported as an Event, once per start-up."""
        parsed = parse_schedule(body)
        if isinstance(parsed, SpecInvalid) or parsed.spec.suspend:
            return []
        meta, now = body["metadata"], self.clock()
        status = body.get("status") or {}
        since = (runs.parse_time(status.get("lastScheduleTime"))
                 or runs.parse_time(meta.get("creationTimestamp")))
        if since is None:
            return []
        effective = parsed.spec.effective_schedule(meta["namespace"], meta["name"])
        return cron.missed_runs(effective, parsed.spec.time_zone, since, now - slack, limit=10)

    # --- status writes ----------------------------------------------------------------

    def _write_status(self, body: dict, compute: Callable[[dict], Desired],
                      current: dict | None = None) -> tuple[dict | None, Desired | None]:
        """Read-compute-write with optimistic concurrency; skip writes that change nothing.
        ``compute`` (pure: no API calls, no metrics) gets the current object and returns its
        desired status with the patch to it. ``current``, when given (the body kopf handed
        over), saves the read on the first attempt; a stale one costs a conflict and a re-read.
        Returns the schedule as written (or as read when nothing changed) and the desired
        status of the last attempt; (None, None) if the schedule is gone."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if current is not None and not current["metadata"].get("resourceVersion"):
            current = None
        for _ in range(STATUS_WRITE_ATTEMPTS):
            if current is None:
                current = self.kube.get_schedule(namespace, name)
                if current is None:
                    return None, None
            desired = compute(current)
            if not desired.patch:
                return current, desired
            try:
                return self.kube.patch_status(namespace, name, desired.patch,
                                              current["metadata"]["resourceVersion"]), desired
            except Exception as err:  # noqa: BLE001 - only conflicts are retried
                if not is_conflict(err):
                    raise
                current = None
        raise RuntimeError(f"status of {namespace}/{name}: {STATUS_WRITE_ATTEMPTS} conflicting writes")


def _name(body: dict) -> str:
    return "/".join(map(str, key_of(body)))
