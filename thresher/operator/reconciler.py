"""What the operator does, as methods that read the world, call the pure functions and write.

kopf handlers (``handlers.py``) are one-liners into this class, so the whole flow can be read
top to bottom here: schedule -> CronJob, finished Job -> run record -> status, metrics, events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from thresher.api import cron
from thresher.api.schedule import CollectionSchedule, SpecInvalid, parse_schedule
from thresher.operator import builders, runs, status as st
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
    # Start times of running Jobs per (namespace, schedule), kept from Job events, so the
    # "run too long" metric needs no extra API call per refresh.
    active_starts: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    # The CronJobs as the watch last showed them (name, uid, status only): refreshes read
    # these instead of GETting each CronJob every 60 s per schedule.
    cronjobs: dict[tuple[str, str], dict] = field(default_factory=dict)
    # Per CronJob, the generation and labels this process applied or found matching its
    # schedule: a CronJob event with the same ones needs no GET of the schedule to compare.
    in_sync: dict[tuple[str, str], InSync] = field(default_factory=dict)
    # Schedules with a finished Job whose recording failed (API unreachable): a Job event is
    # not delivered again, so the schedule's next resync lists its Jobs and records them.
    unrecorded: set[tuple[str, str]] = field(default_factory=set)
    # The schedules as the watch last showed them, slimmed (``slim_schedule``): the periodic
    # resync walks these, instead of kopf keeping a timer task and a full body per schedule.
    schedules: dict[tuple[str, str], dict] = field(default_factory=dict)
    fire_times: FireTimes = field(default_factory=lambda: FireTimes())

    # --- schedule -> CronJob ----------------------------------------------------------

    def reconcile(self, body: dict) -> None:
        """Create or correct the CronJob, then refresh status. Invalid specs are reported on
        the object (Ready=False) and left alone until the spec changes: retrying cannot help."""
        parsed = parse_schedule(body)
        if isinstance(parsed, SpecInvalid):
            log.warning("invalid spec", extra={"schedule": _name(body), "problems": parsed.messages})
            self._write_status(body, lambda cur: self._invalid_status(body, cur.get("status") or {}, parsed),
                               current=body)
            return
        applied = self._apply(builders.build_cronjob(body, parsed, self.images))
        self.refresh(body, parsed, applied)

    def _apply(self, desired: dict) -> dict:
        applied = self.kube.apply_cronjob(desired)
        self.observe_cronjob(applied)
        self.in_sync[_key(applied)] = in_sync_marker(applied, desired["metadata"]["labels"])
        return applied

    def observe_cronjob(self, cronjob: dict, deleted: bool = False) -> None:
        """Keep what refreshes need of a CronJob from its watch events and API responses."""
        key = _key(cronjob)
        if deleted:
            self.cronjobs.pop(key, None)
            self.in_sync.pop(key, None)
        else:
            self.cronjobs[key] = slim_cronjob(cronjob)

    def cronjob_event_needs_check(self, event_type: str | None, cronjob: dict) -> bool:
        return cronjob_needs_check(event_type, cronjob, self.in_sync.get(_key(cronjob)))

    def mark_in_sync(self, cronjob: dict, schedule_labels: dict) -> None:
        self.in_sync[_key(cronjob)] = in_sync_marker(cronjob, schedule_labels)

    def cronjob_drifted(self, schedule: dict, cronjob: dict) -> bool:
        """True when someone changed a field of the CronJob that the schedule decides."""
        parsed = parse_schedule(schedule)
        if isinstance(parsed, SpecInvalid):
            return False
        desired = builders.build_cronjob(schedule, parsed, self.images)
        drifted = (builders.drifted(desired["spec"], cronjob.get("spec"))
                   or builders.drifted(desired["metadata"]["labels"], cronjob["metadata"].get("labels")))
        if not drifted:  # e.g. another manager's field: no need to read the schedule again
            self.mark_in_sync(cronjob, desired["metadata"]["labels"])
        return drifted

    def observe_schedule(self, body: dict) -> None:
        self.schedules[_key(body)] = slim_schedule(body)

    def resync(self, namespace: str, name: str) -> None:
        """Level-based refresh of a schedule as last watched: a failed recording retried, next
        run time, staleness, a deleted CronJob restored. Called for every schedule once a
        minute; writes only what changed."""
        body = self.schedules.get((namespace, name))
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
        self._write_status(body, lambda cur: self._schedule_fields(body, parsed, cronjob, cur.get("status") or {}),
                           current=body)

    def _cronjob_for(self, body: dict, parsed: CollectionSchedule) -> dict:
        """The schedule's CronJob as last watched; read when unknown, re-applied when gone."""
        meta = body["metadata"]
        cronjob = self.cronjobs.get(_key(body))
        if cronjob is None:
            cronjob = self.kube.get_cronjob(meta["namespace"], meta["name"])
            if cronjob is not None:
                self.observe_cronjob(cronjob)
        if cronjob is None:  # deleted by hand: put it back
            cronjob = self._apply(builders.build_cronjob(body, parsed, self.images))
        return cronjob

    def _schedule_fields(self, body: dict, parsed: CollectionSchedule, cronjob: dict, current: dict) -> dict:
        now = self.clock()
        meta, spec = body["metadata"], parsed.spec
        effective = spec.effective_schedule(meta["namespace"], meta["name"])
        next_run = None if spec.suspend else self.fire_times.next_run(effective, spec.time_zone, now)
        cj_status = cronjob.get("status") or {}
        generation = meta.get("generation")

        conditions = current.get("conditions") or []
        conditions = st.set_condition(conditions, st.READY, True, "CronJobReady",
                                      f"CronJob {meta['name']} runs {effective!r}"
                                      + (f" in {spec.time_zone}" if spec.time_zone else " in UTC"),
                                      now, generation)
        stale, stale_msg = self._staleness(body, parsed, effective, current, now)
        conditions = st.set_condition(conditions, st.STALE, stale,
                                      "NoRecentSuccess" if stale else ("Suspended" if spec.suspend else "Fresh"),
                                      stale_msg, now, generation)
        failures = int(current.get("consecutiveFailures") or 0)
        threshold = spec.alerting.consecutive_failure_threshold
        failing = failures >= threshold
        conditions = st.set_condition(
            conditions, st.FAILING, failing, "ConsecutiveFailures" if failing else "BelowThreshold",
            f"{failures} consecutive failed runs (threshold {threshold})", now, generation)

        fields = {
            "observedGeneration": generation,
            "cronJobRef": {"name": cronjob["metadata"]["name"]},
            "effectiveSchedule": effective,
            "nextScheduleTime": runs.format_time(next_run),
            "conditions": conditions,
            "consecutiveFailures": failures,
        }
        if cj_status.get("lastScheduleTime"):
            fields["lastScheduleTime"] = cj_status["lastScheduleTime"]
        self._export_state(body, parsed, fields, current, cj_status, stale, now)
        return fields

    def _staleness(self, body: dict, parsed: CollectionSchedule, effective: str, current: dict,
                   now: datetime) -> tuple[bool, str]:
        spec = parsed.spec
        if spec.suspend:
            return False, "suspended: no runs are expected"
        last_success = runs.parse_time(current.get("lastSuccessfulTime"))
        created = runs.parse_time(body["metadata"].get("creationTimestamp")) or now
        stale = cron.is_stale(last_success, created, effective, spec.time_zone, spec.stale_grace(), now)
        since = "since creation" if last_success is None else f"since {runs.format_time(last_success)}"
        return stale, (f"no successful run {since}" if stale else "last success within the expected interval")

    def _export_state(self, body, parsed, fields, current, cj_status, stale, now) -> None:
        meta, spec = body["metadata"], parsed.spec
        effective = fields["effectiveSchedule"]
        interval = self.fire_times.expected_interval(effective, spec.time_zone, now)
        active = cj_status.get("active") or []
        last_run = runs.parse_time(fields.get("lastScheduleTime") or current.get("lastScheduleTime"))
        self.metrics.set_schedule_state(
            namespace=meta["namespace"], schedule=meta["name"], job_type=spec.job.kind,
            suspended=spec.suspend,
            next_run=_ts(runs.parse_time(fields["nextScheduleTime"])),
            last_run=_ts(last_run),
            last_success=_ts(runs.parse_time(current.get("lastSuccessfulTime"))),
            last_failure=_ts(runs.parse_time(current.get("lastFailureTime"))),
            consecutive_failures=int(current.get("consecutiveFailures") or 0),
            failure_threshold=spec.alerting.consecutive_failure_threshold,
            stale=stale,
            stale_after_seconds=(interval + spec.stale_grace()).total_seconds() if interval else None,
            min_quality=spec.alerting.min_quality_rate, min_items=spec.alerting.min_items,
            active_runs=len(active),
            oldest_active_start=min(self.active_starts.get((meta["namespace"], meta["name"]), {}).values(),
                                    default=None),
            expected_duration_seconds=float(spec.timeout_seconds) if spec.timeout_seconds else None,
            cron=effective, time_zone=spec.time_zone or "UTC",
        )

    def _invalid_status(self, body: dict, current: dict, invalid: SpecInvalid) -> dict:
        generation = body["metadata"].get("generation")
        conditions = st.set_condition(current.get("conditions") or [], st.READY, False, "InvalidSpec",
                                      invalid.message, self.clock(), generation)
        return {"observedGeneration": generation, "conditions": conditions, "nextScheduleTime": None}

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

    def record_job(self, job: dict) -> dict | None:
        """Record a finished Job's run on its schedule, exactly once. Returns the record if new."""
        meta = job["metadata"]
        annotations = meta.get("annotations") or {}
        namespace = meta["namespace"]
        schedule_name = (meta.get("labels") or {}).get(builders.SCHEDULE_LABEL)
        if not schedule_name:
            return None
        self._track_active(namespace, schedule_name, job)
        if annotations.get(runs.RECORDED_ANNOTATION) or runs.finished_condition(job) is None:
            return None
        record = runs.run_record(job, self.kube.job_pods(namespace, meta["name"]))
        added: list[dict] = []

        def fold(current: dict) -> dict:
            status = current.get("status") or {}
            fields, new = st.merge_runs(status, [record])
            added[:] = new
            parsed = parse_schedule(current)
            if not new or isinstance(parsed, SpecInvalid):
                return fields
            # Conditions and next run in the same write as the run: one PATCH per run, not two.
            fields.update(self._schedule_fields(current, parsed, self._cronjob_for(current, parsed),
                                                {**status, **fields}))
            return fields

        schedule = self._write_status({"metadata": {"namespace": namespace, "name": schedule_name}}, fold)
        if schedule is not None and added:
            self._after_new_run(schedule, record)
        # Marked after the status write: a crash in between is harmless (merge_runs dedupes).
        self.kube.annotate_job(namespace, meta["name"], {runs.RECORDED_ANNOTATION: "true"})
        return record if added else None

    def record_job_or_defer(self, job: dict) -> dict | None:
        """``record_job`` from a Job event; on failure the schedule's next resync tries again."""
        try:
            return self.record_job(job)
        except Exception:
            meta = job["metadata"]
            schedule = (meta.get("labels") or {}).get(builders.SCHEDULE_LABEL)
            if schedule:
                self.unrecorded.add((meta["namespace"], schedule))
            raise

    def record_deferred(self, namespace: str, schedule: str) -> None:
        """Record the finished Jobs of a schedule whose earlier recording failed (idempotent)."""
        if (namespace, schedule) not in self.unrecorded:
            return
        for job in self.kube.list_jobs(namespace, f"{builders.SCHEDULE_LABEL}={schedule}"):
            self.record_job(job)
        self.unrecorded.discard((namespace, schedule))

    def _track_active(self, namespace: str, schedule: str, job: dict) -> None:
        running = self.active_starts.setdefault((namespace, schedule), {})
        start = runs.parse_time((job.get("status") or {}).get("startTime"))
        if runs.finished_condition(job) is None and start is not None:
            running[job["metadata"]["name"]] = start.timestamp()
        else:
            running.pop(job["metadata"]["name"], None)

    def job_deleted(self, job: dict) -> None:
        meta = job["metadata"]
        schedule = (meta.get("labels") or {}).get(builders.SCHEDULE_LABEL)
        self.active_starts.get((meta["namespace"], schedule), {}).pop(meta["name"], None)

    def forget(self, namespace: str, schedule: str) -> None:
        self.schedules.pop((namespace, schedule), None)
        self.active_starts.pop((namespace, schedule), None)
        self.cronjobs.pop((namespace, schedule), None)
        self.in_sync.pop((namespace, schedule), None)
        self.metrics.forget_schedule(namespace=namespace, schedule=schedule)

    def _after_new_run(self, schedule: dict, record: dict) -> None:
        meta = schedule["metadata"]
        parsed = parse_schedule(schedule)
        job_type = parsed.spec.job.kind if not isinstance(parsed, SpecInvalid) else "unknown"
        result = record.get("result") or {}
        self.metrics.observe_run(
            namespace=meta["namespace"], schedule=meta["name"], job_type=job_type,
            outcome=OUTCOME_LABELS[record["outcome"]], duration_seconds=record.get("durationSeconds"),
            finished_at=_ts(runs.parse_time(record.get("completionTime"))) or time.time(),
            items=result.get("items"), valid=result.get("valid"), quality=result.get("quality"))
        status = schedule.get("status") or {}
        if record["outcome"] != runs.SUCCEEDED:
            self.kube.post_event(schedule, "Warning", "RunFailed",
                                 f"run {record['jobName']} {record['outcome'].lower()}: "
                                 f"{record.get('message', '')}")
        if isinstance(parsed, SpecInvalid):
            return
        limit = parsed.spec.stop_after_consecutive_failures
        failures = int(status.get("consecutiveFailures") or 0)
        if limit and failures >= limit and not parsed.spec.suspend:
            self.kube.patch_schedule(meta["namespace"], meta["name"], {"spec": {"suspend": True}})
            self.kube.post_event(schedule, "Warning", "Suspended",
                                 f"suspended after {failures} consecutive failed runs "
                                 f"(stopAfterConsecutiveFailures={limit}); resume with "
                                 f"`thresher resume {meta['name']}`")
        # Metrics state after the run (the status was written with the run): no API call
        # unless something changed meanwhile.
        self.refresh(schedule, parsed)

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

    def _write_status(self, body: dict, compute: Callable[[dict], dict],
                      current: dict | None = None) -> dict | None:
        """Read-compute-write with optimistic concurrency; skip writes that change nothing.
        ``compute`` gets the current object and returns the status fields it wants. ``current``,
        when given (the body kopf handed over), saves the read on the first attempt; a stale one
        costs a conflict and a re-read. Returns the schedule as written (or as read when nothing
        changed); None if it is gone."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if current is not None and not current["metadata"].get("resourceVersion"):
            current = None
        for _ in range(STATUS_WRITE_ATTEMPTS):
            if current is None:
                current = self.kube.get_schedule(namespace, name)
                if current is None:
                    return None
            fields = st.changed_fields(current.get("status") or {}, compute(current))
            if not fields:
                return current
            try:
                return self.kube.patch_status(namespace, name, fields,
                                              current["metadata"]["resourceVersion"])
            except Exception as err:  # noqa: BLE001 - only conflicts are retried
                if not is_conflict(err):
                    raise
                current = None
        raise RuntimeError(f"status of {namespace}/{name}: {STATUS_WRITE_ATTEMPTS} conflicting writes")


def _key(body: dict) -> tuple[str, str]:
    return body["metadata"].get("namespace"), body["metadata"].get("name")


def _name(body: dict) -> str:
    return "/".join(map(str, _key(body)))


class FireTimes:
    """``cron.next_run`` and ``cron.expected_interval`` at ``now``, remembered per expression.

    Both are the same for every ``now`` from the moment they were computed up to (excluding)
    the next fire time: no fire time lies in between. So a refresh every 60 s recomputes them
    once per fire instead of each time (the interval's backward search is most of a refresh's
    CPU). Exact, not an approximation; thread-safe because entries are replaced whole."""

    MAX_ENTRIES = 100_000  # distinct (expression, zone) pairs; cleared beyond, never wrong

    def __init__(self) -> None:
        self._window: dict[tuple[str, str | None], tuple[datetime, datetime, timedelta | None]] = {}

    def _lookup(self, expr: str, tz: str | None, now: datetime) -> tuple[datetime | None, timedelta | None]:
        hit = self._window.get((expr, tz))
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[1], hit[2]
        upcoming = cron.next_run(expr, tz, now)
        interval = expected_interval(expr, tz, now, upcoming) if upcoming is not None else None
        if upcoming is not None:
            if len(self._window) >= self.MAX_ENTRIES:
                self._window.clear()
            self._window[(expr, tz)] = (now, upcoming, interval)
        return upcoming, interval

    def next_run(self, expr: str, tz: str | None, now: datetime) -> datetime | None:
        return self._lookup(expr, tz, now)[0]

    def expected_interval(self, expr: str, tz: str | None, now: datetime) -> timedelta | None:
        return self._lookup(expr, tz, now)[1]


def expected_interval(expr: str, tz: str | None, now: datetime, upcoming: datetime) -> timedelta | None:
    """``cron.expected_interval(expr, tz, now)`` given its next fire time, usually in 3-4 cron
    steps instead of a backward bisection: for a schedule as regular as its next gap, the last
    fire time lies within that gap before ``now``. Irregular cases take the general search."""
    following = cron.next_run(expr, tz, upcoming)
    window = max(timedelta(minutes=1), following - upcoming) if following else timedelta(minutes=1)
    for _ in range(3):
        fires = cron.missed_runs(expr, tz, now - window, now, limit=8)
        if 0 < len(fires) < 8:
            return upcoming - fires[-1]
        if fires:  # many fire times in the window: not worth stepping through
            break
        window *= 2
    return cron.expected_interval(expr, tz, now)


@dataclass(frozen=True)
class InSync:
    generation: int | None
    labels: tuple[tuple[str, str], ...]


def in_sync_marker(cronjob: dict, schedule_labels: dict) -> InSync:
    return InSync(cronjob["metadata"].get("generation"), tuple(sorted(schedule_labels.items())))


def slim_cronjob(cronjob: dict) -> dict:
    """The part of a CronJob a refresh reads (name, uid, status), so thousands stay small."""
    meta = cronjob["metadata"]
    return {"metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "status": dict(cronjob.get("status") or {})}


SLIM_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp",
                 "deletionTimestamp", "labels")


def slim_schedule(body: dict) -> dict:
    """The part of a schedule a refresh reads: metadata without managedFields and annotations
    (kopf's diff base repeats the whole spec there), spec and status. Under half of the
    object, and the full bodies are not kept alive."""
    meta = body["metadata"]
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {k: meta[k] for k in SLIM_METADATA if k in meta},
            "spec": body.get("spec"), "status": body.get("status")}


def cronjob_needs_check(event_type: str | None, cronjob: dict, known: InSync | None) -> bool:
    """Whether a CronJob event may mean drift, worth reading the schedule to compare.

    The spec changes only with ``metadata.generation``, and labels are compared directly, so
    an event with the generation and labels this process applied (or already verified) is the
    CronJob controller updating status or our own apply echoing back. A CronJob this process
    has not applied yet is left to its schedule's create/resume handler, which applies the
    desired state anyway."""
    if event_type == "DELETED":
        return True
    if known is None:
        return False
    labels = cronjob["metadata"].get("labels") or {}
    return (cronjob["metadata"].get("generation") != known.generation
            or any(labels.get(k) != v for k, v in known.labels))


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value else None
