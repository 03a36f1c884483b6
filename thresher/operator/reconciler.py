"""What the operator does, as methods that read the world, call the pure functions and write.

kopf handlers (``handlers.py``) are one-liners into this class, so the whole flow can be read
top to bottom here: schedule -> CronJob (``builders``), finished Job -> run record (``runs``)
-> desired status (``desired_status``) -> one status write, then metrics and events. What is
remembered between events lives in ``caches``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from thresher.api.activerun import ActiveRun
from thresher.api.backfill import BackfillError, merge_windows, parse_request, plan_for_spec
from thresher.api.names import (
    ATTEMPT_ANNOTATION,
    BACKFILL_RUN_ANNOTATION,
    MANUAL_ANNOTATION,
    RECORDED_ANNOTATION,
    RETRY_OF_ANNOTATION,
    SCHEDULE_LABEL,
    STARTUP_VERDICT_ANNOTATION,
)
from thresher.api.runnames import format_logical_time, scheduled_job_name
from thresher.api.schedule import (
    BackfilledWindow, CollectionSchedule, ConditionType, RunRecord, SpecInvalid, parse_schedule,
)
from thresher.operator import builders, runs
from thresher.operator.activeruns import Grace, active_run, events_needed, startup_verdict
from thresher.operator.caches import Caches, Key, cronjob_needs_check, in_sync_marker, key_of
from thresher.operator.desired_status import Desired, Observed, desired_status, read_status
from thresher.operator.firing import FireStep, fire_step, one_off_expiry, retry_steps, run_at_step
from thresher.operator.kube import Kube, is_conflict
from thresher.operator.metrics import OperatorMetrics
from thresher.operator.runjobs import run_job

log = logging.getLogger("thresher.operator")

Clock = Callable[[], datetime]
STATUS_WRITE_ATTEMPTS = 8
OUTCOME_LABELS = {runs.SUCCEEDED: "succeeded", runs.FAILED: "failed", runs.TIMED_OUT: "timed_out",
                  runs.FAILED_TO_START: "failed_to_start", runs.NODE_LOST: "node_lost"}
# The API budget of active runs (issue 19): Events are read only for a run that has been
# without a running pod this long (a pod starting normally never costs a read), a run that
# is not Running is looked at again this soon (until it runs, blocks or ends), and a Node is
# read at most this often.
EVENTS_AFTER = timedelta(seconds=5)
RECHECK = timedelta(seconds=10)
NODE_MAX_AGE = timedelta(seconds=15)
# An object's Events read for an active run are reused this long: each Job and Pod event of a
# run that waits refreshes its schedule, and in a burst of 1,000 runs on a slow control plane
# an Events LIST per refresh kept every handler thread waiting on the API server (the
# recording fell minutes behind the Jobs, docs/benchmarks.md). Shorter than RECHECK, so a
# due recheck always reads them afresh.
EVENTS_MAX_AGE = timedelta(seconds=5)
# At most this many Events reads at once, over every schedule: the rest wait for a recheck.
EVENTS_READS = 2


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Reconciler:
    kube: Kube
    metrics: OperatorMetrics
    images: builders.JobImages = field(default_factory=builders.JobImages)
    clock: Clock = utcnow
    caches: Caches = field(default_factory=Caches)
    grace: Grace = field(default_factory=Grace)
    events_reads: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(EVENTS_READS))

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
        self.refresh(body, parsed, applied, missing=self.missing_prerequisites(parsed))

    def missing_prerequisites(self, parsed: CollectionSchedule) -> list[str]:
        """What the spec names and does not exist (one get each; Secrets stay unread): the
        PriorityClass, the PVC and the ServiceAccount. Runs are still attempted and show the
        cause in status.active; this says so before the first one fires."""
        spec, namespace = parsed.spec, parsed.metadata.namespace
        missing = []
        if spec.priority_class_name and not self.kube.priority_class_exists(spec.priority_class_name):
            missing.append(f'PriorityClass "{spec.priority_class_name}" does not exist')
        pvc = self.kube.get_pvc(namespace, spec.storage.claim_name) if spec.storage else None
        if spec.storage and pvc is None:
            missing.append(f'PersistentVolumeClaim "{spec.storage.claim_name}" does not exist in namespace '
                           f"{namespace}")
        elif pvc is not None and (problem := builders.shared_storage_problem(spec, pvc)):
            missing.append(problem)  # a fanned-out run's indexes could not share it (docs/drone.md)
        if spec.service_account_name and not self.kube.service_account_exists(namespace, spec.service_account_name):
            missing.append(f'ServiceAccount "{spec.service_account_name}" does not exist in namespace {namespace}')
        return missing

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
        self.caches.keep_schedule(body)

    def resync(self, namespace: str, name: str) -> None:
        """Level-based refresh of a schedule as last watched: a failed recording retried, next
        run time, staleness, a deleted CronJob restored. Called for every schedule once a
        minute; writes only what changed."""
        body = self.caches.schedule((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        self.record_deferred(namespace, name)
        self.refresh(body)

    def refresh_active(self, namespace: str, name: str) -> None:
        """Refresh a schedule as last watched because one of its runs changed (a Pod or Job
        event, or a recheck that came due); writes only what changed."""
        self.caches.soon.pop((namespace, name), None)
        body = self.caches.schedule((namespace, name))
        if body is not None and not body["metadata"].get("deletionTimestamp"):
            self.refresh(body)

    def due_rechecks(self) -> list[Key]:
        now = self.clock()
        return [key for key, when in list(self.caches.soon.items()) if when <= now]

    def refresh(self, body: dict, parsed: CollectionSchedule | SpecInvalid | None = None,
                cronjob: dict | None = None, missing: list[str] | None = None) -> None:
        """Level-based status refresh: next run, staleness, active runs, conditions and metrics.
        ``body`` is used as the current object for a first compare-and-swap attempt (kopf hands
        handlers the latest body it watched); a conflict re-reads it."""
        parsed = parsed or parse_schedule(body)
        if isinstance(parsed, SpecInvalid):
            return
        if missing is None and parsed.status is not None and any(
                c.type == ConditionType.PREREQUISITES_MISSING and c.status == "True" for c in parsed.status.conditions):
            missing = self.missing_prerequisites(parsed)  # looked at again until it exists, then clears
        cronjob = cronjob or self._cronjob_for(body, parsed)
        fired = self.fire_due(body, parsed)
        retried = self.retry_due(body, parsed)
        active = self.active_runs(key_of(body))
        schedule, desired = self._write_status(
            body, lambda cur: self._desired(cur, parsed if cur is body else parse_schedule(cur), cronjob,
                                            active=active, missing=missing, fired=fired, retried=retried),
            current=body)
        if schedule is not None and desired is not None:
            self._after_write(schedule, desired)

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
                 finished: tuple = (), active: tuple[ActiveRun, ...] = (), missing: list[str] | None = None,
                 fired: datetime | None = None, retried: tuple = ()) -> Desired:
        """The pure step, fed from what this process observed (its caches) at the clock's now."""
        observed = Observed(cronjob=cronjob, finished=finished,
                            running_since=self.caches.running_since(key_of(current)), active=active,
                            missing=missing, fired=fired, retried=retried)
        return desired_status(current, parsed, observed, self.clock(), self.caches.fire_times)

    # --- unfinished Jobs -> status.active ---------------------------------------------

    def active_runs(self, key: Key) -> tuple[ActiveRun, ...]:
        """Classify the schedule's unfinished Jobs from the watched Jobs and Pods, reading only
        what a run that is not running needs (its Events, its Node, its claims); no API call
        for a schedule without an unfinished Job. Asks for a recheck while a run is not
        Running (``caches.soon``)."""
        now, namespace = self.clock(), key[0]
        entries, recheck = [], None
        for job, pods in self.caches.unfinished(key):
            live = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
            running = any((p.get("status") or {}).get("phase") == "Running" for p in live)
            created = runs.parse_time(job["metadata"].get("creationTimestamp")) or now
            events: list[dict] = []
            if not running and now - created >= EVENTS_AFTER and events_needed(job, pods):
                newest = max(live, key=lambda p: p["metadata"].get("creationTimestamp", ""), default=None)
                events = self._events(namespace, newest["metadata"]["name"] if newest else job["metadata"]["name"])
                if events is None:  # the API server is busy with other Events reads: look again soon
                    events, recheck = [], min(filter(None, (recheck, now + RECHECK)))
            node_names = {n for p in live if (n := (p.get("spec") or {}).get("nodeName"))}
            nodes = [n for n in map(self._node, sorted(node_names)) if n is not None]
            claims = {v["persistentVolumeClaim"]["claimName"] for p in live if not (p.get("spec") or {}).get("nodeName")
                      for v in (p.get("spec") or {}).get("volumes") or [] if v.get("persistentVolumeClaim")}
            pvcs = [c for c in (self.kube.get_pvc(namespace, name) for name in sorted(claims)) if c is not None]
            entry = active_run(job, pods, events, nodes, pvcs, self.grace, now)
            if entry is None:
                continue
            entries.append(entry)
            if entry.phase == "Pending":
                due = created + EVENTS_AFTER if now - created < EVENTS_AFTER else now + RECHECK
                recheck = min(filter(None, (recheck, due)))
        if recheck is not None:
            self.caches.soon[key] = min(recheck, self.caches.soon.get(key, recheck))
        return tuple(entries)

    def _events(self, namespace: str, name: str) -> list[dict] | None:
        """An object's Events, reused for EVENTS_MAX_AGE; None when EVENTS_READS reads are
        already under way (the caller classifies without them and rechecks): the handler
        threads stay free to record finished runs while the API server is slow."""
        now, key = self.clock(), (namespace, name)
        hit = self.caches.events.get(key)
        if hit is not None and now - hit[0] < EVENTS_MAX_AGE:
            return hit[1]
        if not self.events_reads.acquire(blocking=False):
            return None
        try:
            events = self.kube.events_about(namespace, name)
        finally:
            self.events_reads.release()
        self.caches.remember_events(key, now, events, EVENTS_MAX_AGE)
        return events

    def _node(self, name: str) -> dict | None:
        now = self.clock()
        hit = self.caches.nodes.get(name)
        if hit is not None and now - hit[0] < NODE_MAX_AGE:
            return hit[1]
        node = self.kube.get_node(name)
        self.caches.nodes[name] = (now, node)
        return node

    def _stop_blocked(self, schedule: dict, desired: Desired) -> None:
        """End the runs blocked longer than startupTimeoutSeconds: the verdict goes onto the
        Job with the patch that stops it, and the run is recorded from the Job when it fails
        (``runs.run_record``), once, like any run. Blocked runs still waiting get a recheck
        when their timeout runs out."""
        parsed, now = desired.schedule, self.clock()
        if parsed is None:
            return
        timeout, key = parsed.spec.startup_timeout_seconds, key_of(schedule)
        jobs = self.caches.jobs.get(key) or {}
        for entry in desired.status.active:
            verdict = startup_verdict(entry, timeout, now)
            job = jobs.get(entry.name)
            if job is None or runs.startup_verdict_of(job) is not None:
                continue  # unknown here, or stopped already (its end is on the way)
            if verdict is None:
                if entry.phase == "Blocked" and timeout and entry.blocked_since is not None:
                    due = entry.blocked_since + timedelta(seconds=timeout)
                    self.caches.soon[key] = min(due, self.caches.soon.get(key, due))
                continue
            annotations = {STARTUP_VERDICT_ANNOTATION: json.dumps(
                {"outcome": verdict.outcome, "reason": verdict.reason, "message": verdict.message})}
            self.kube.stop_job(key[0], entry.name, annotations)
            job["metadata"]["annotations"] = {**(job["metadata"].get("annotations") or {}), **annotations}
            log.warning("run stopped", extra={"schedule": _name(schedule), "job": entry.name,
                                              "outcome": verdict.outcome, "reason": verdict.reason})

    def _after_write(self, schedule: dict, desired: Desired) -> None:
        """Events of the transitions just written, stops of runs blocked too long, metrics."""
        for entry in desired.started:
            self.kube.post_event(schedule, "Normal", "RunStarted",
                                 f"run {entry.name} started ({entry.phase})")
        if desired.newly_blocked is not None:
            self.kube.post_event(schedule, "Warning", "RunBlocked", desired.newly_blocked.message)
        for run in desired.retries_scheduled:
            self.kube.post_event(schedule, "Warning", "RetryScheduled",
                                 f"run {run.first_job}: attempt {run.last.attempt} of {run.max_attempts} "
                                 f"{run.last.outcome} ({run.message or run.last.reason or 'failed'}); attempt "
                                 f"{run.last.attempt + 1} at {format_logical_time(run.next_attempt_time)}")
        self._stop_blocked(schedule, desired)
        if desired.state is not None:
            self.metrics.set_schedule_state(desired.state)
        self._expire(schedule, desired)

    def _expire(self, schedule: dict, desired: Desired) -> None:
        """``ttlSecondsAfterFinished``: delete a one-off schedule its TTL after its run finished
        (``firing.one_off_expiry``), exactly the object judged (uid and resourceVersion as
        preconditions: a spec changed meanwhile, e.g. a schedule added, is judged again); until
        then, look again at the time (the recheck list)."""
        parsed, now = desired.schedule, self.clock()
        if parsed is None or parsed.spec.ttl_seconds_after_finished is None:
            return
        meta, spec = schedule["metadata"], parsed.spec
        expiry = one_off_expiry(spec.run_at, spec.schedule is not None, spec.ttl_seconds_after_finished,
                                meta["name"], desired.status.recent_runs, desired.status.retrying, now)
        if expiry is None:
            return
        key = key_of(schedule)
        if not expiry.due:
            self.caches.soon[key] = min(expiry.delete_at, self.caches.soon.get(key, expiry.delete_at))
            return
        deleted = self.kube.delete_schedule(key[0], key[1], meta.get("uid"), meta.get("resourceVersion"))
        log.info("one-off schedule expired", extra={"schedule": _name(schedule), "deleted": deleted})
        if not deleted:  # changed meanwhile: judged again on a fresh read soon
            self.caches.soon[key] = now + RECHECK
            return
        ttl = spec.ttl_seconds_after_finished
        finished = format_logical_time(expiry.delete_at - timedelta(seconds=ttl))
        self.kube.post_event(schedule, "Normal", "Expired", f"one-off run finished at {finished}; schedule deleted "
                             f"(ttlSecondsAfterFinished={ttl})")

    def _recheck_retries(self, key: Key, retrying) -> None:
        """After a run was recorded: look at the schedule again when a waiting run's next attempt
        is due (the recheck list that interval due times use: no poll of its own). A refresh
        asks for its own rechecks (``retry_due``)."""
        now = self.clock()
        for run in retrying:
            if run.next_attempt_time is not None:
                due = max(run.next_attempt_time, now)
                self.caches.soon[key] = min(due, self.caches.soon.get(key, due))

    # --- runs the operator fires: intervals no cron repeats (issue 17) ------------------

    def fire_due(self, body: dict, parsed: CollectionSchedule) -> datetime | None:
        """Create the Jobs of the runs the operator fires itself: the newest due time not yet fired
        of an interval no cron repeats (``firing.fire_step``), and the ``runAt`` run
        (``firing.run_at_step``). Returns the newest due time whose Job now exists, for
        status.lastScheduleTime, which is written only after the Job; asks for a look again at the
        next due time. None when nothing fired."""
        meta, spec, now = parsed.metadata, parsed.spec, self.clock()
        key = (meta.namespace, meta.name)
        times = spec.times(meta.namespace, meta.name)
        status = parsed.status
        unfinished = set(self.caches.jobs.get(key) or {})
        steps = []
        if times is not None and times.fired_by_operator:
            steps.append(fire_step(times, meta.name, status.last_schedule_time if status else None,
                                   meta.creation_timestamp or now, now, suspended=spec.suspend,
                                   starting_deadline_seconds=spec.starting_deadline_seconds,
                                   concurrency_policy=spec.concurrency_policy, unfinished=unfinished))
        if spec.run_at is not None:
            known = unfinished | (status.run_jobs() if status else set())
            steps.append(run_at_step(spec.run_at, meta.name, known, now, suspended=spec.suspend,
                                     starting_deadline_seconds=spec.starting_deadline_seconds,
                                     concurrency_policy=spec.concurrency_policy, unfinished=unfinished))
        fired = None
        for step in steps:
            if step.recheck is not None:
                self.caches.soon[key] = min(step.recheck, self.caches.soon.get(key, step.recheck))
            if step.fire is not None and self._create_run(body, step):
                fired = max(filter(None, (fired, step.fire)))
        return fired

    def _create_run(self, body: dict, step: FireStep) -> bool:
        """The Job of ``step.fire`` from the CronJob's template; True when it exists now."""
        namespace, name = key_of(body)
        cronjob = self.kube.get_cronjob(namespace, name)  # the whole template (the cache keeps its status)
        if cronjob is None:
            return False  # put back by this refresh; the next one fires
        for job_name in step.stop:  # concurrencyPolicy Replace: the new run replaces the unfinished ones
            self.kube.stop_job(namespace, job_name, {})
        job = run_job(cronjob, scheduled_job_name(name, step.fire), {}, step.fire)
        created = self.kube.create_job(job)  # False: AlreadyExists, fired before (a restart, a stale read)
        log.info("operator-fired run", extra={"schedule": _name(body), "job": job["metadata"]["name"],
                                              "job_created": created, "missed": step.missed})
        return True

    # --- retries (spec.retryPolicy) ---------------------------------------------------

    def retry_due(self, body: dict, parsed: CollectionSchedule) -> tuple[tuple[str, int, str], ...]:
        """Create the Jobs of the retry attempts that are due (``firing.retry_steps`` over
        status.retrying); returns (first Job, attempt, Job) of each that exists now, for status.
        Asks for a look again when the next one is due. No API call without a due retry."""
        meta, spec, status, now = parsed.metadata, parsed.spec, parsed.status, self.clock()
        if status is None or not status.retrying:
            return ()
        key = (meta.namespace, meta.name)
        starts, recheck = retry_steps(spec.retry_policy, status.retrying, meta.name, now, suspended=spec.suspend,
                                      concurrency_policy=spec.concurrency_policy,
                                      unfinished=set(self.caches.jobs.get(key) or {}))
        if recheck is not None:
            self.caches.soon[key] = min(recheck, self.caches.soon.get(key, recheck))
        cronjob = self.kube.get_cronjob(*key) if starts else None  # the whole template
        if cronjob is None:
            return ()
        runs_by_first = {run.first_job: run for run in status.retrying}
        created = []
        for start in starts:
            run = runs_by_first[start.first_job]
            annotations = {RETRY_OF_ANNOTATION: start.first_job, ATTEMPT_ANNOTATION: str(start.attempt)}
            if run.manual:
                annotations[MANUAL_ANNOTATION] = "true"
            if run.backfill:
                annotations[BACKFILL_RUN_ANNOTATION] = "true"
            new = self.kube.create_job(run_job(cronjob, start.job_name, annotations, run.logical_time))
            log.info("retry attempt", extra={"schedule": _name(body), "job": start.job_name,
                                             "attempt": start.attempt, "job_created": new})
            created.append((start.first_job, start.attempt, start.job_name))
        return tuple(created)

    # --- backfill (thresher backfill) -------------------------------------------------

    def backfill(self, body: dict, value: str) -> list[str] | None:
        """Create the runs of a past window (the ``thresher.dev/backfill`` annotation): one Job per
        fire time not created before (``backfill.plan_for_spec``: not in a window status.backfilled
        records, and no Job of that name listed or in status). Once its Jobs are created, the window
        is recorded in status.backfilled, so a later call creates nothing even after the CronJob
        controller deleted them. Returns the names of the window's Jobs, None while the CronJob
        (the template) does not exist yet. A refused window is reported as a Warning Event
        (the CLI refuses it before asking, so this is for hand-written annotations)."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        parsed = parse_schedule(body)
        try:
            if isinstance(parsed, SpecInvalid):
                raise BackfillError(f"the spec is invalid: {parsed.message}")
            start, end = parse_request(value)
            existing = {job["metadata"]["name"] for job in self.kube.list_jobs(namespace, f"{SCHEDULE_LABEL}={name}")}
            existing |= parsed.status.run_jobs() if parsed.status else set()
            done = parsed.status.backfilled_windows() if parsed.status else []
            plan = plan_for_spec(parsed.spec, namespace, name, start, end, self.clock(), existing, done)
        except BackfillError as err:
            self.kube.post_event(body, "Warning", "BackfillRefused", str(err))
            return []
        cronjob = self.kube.get_cronjob(namespace, name) if plan.new else None
        if plan.new and cronjob is None:
            return None
        for run in plan.new:
            self.kube.create_job(run_job(cronjob, run.job_name, {BACKFILL_RUN_ANNOTATION: "true"}, run.logical_time))
        if plan.new:
            self.kube.post_event(body, "Normal", "Backfill", f"{len(plan.new)} run(s) created for "
                                 f"{format_logical_time(start)} to {format_logical_time(end)}")
        if plan.runs:  # every Job of the window exists now (a failed create raised above)
            self._write_status(body, lambda current: _record_window(current, start, end), body)
        log.info("backfill", extra={"schedule": _name(body), "runs": len(plan.runs), "jobs_created": len(plan.new)})
        return [run.job_name for run in plan.runs]

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
        if runs.finished_condition(job) is None:
            self.refresh_active(namespace, schedule_name)  # it started, or its status moved
            return None
        if annotations.get(RECORDED_ANNOTATION):
            return None
        record = runs.run_record(job, self.kube.job_pods(namespace, meta["name"]))
        # Read before the write: the compute step below makes no API calls.
        cronjob = self._known_cronjob(namespace, schedule_name)
        active = self.active_runs((namespace, schedule_name))
        # Conditions, next run and active runs in the same write as the run: one PATCH per run.
        schedule, desired = self._write_status(
            {"metadata": {"namespace": namespace, "name": schedule_name}},
            lambda cur: self._desired(cur, parse_schedule(cur), cronjob, (record,), active=active))
        new = desired is not None and bool(desired.new_runs)
        if schedule is not None and desired is not None:
            if new:
                self._after_new_run(schedule, desired)
            self._after_write(schedule, desired)
            self._recheck_retries((namespace, schedule_name), desired.status.retrying)
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
        """A Job is gone. Finished and not recorded yet, it is recorded from its last state: the
        CronJob's history limits delete finished Jobs within seconds, and kopf hands over only the
        newest event of a burst, so the DELETED event may be the only one that says it finished
        (a backfill of six quick runs lost some; a retry attempt would wait for ever)."""
        meta = job["metadata"]
        schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
        if not schedule:
            return
        self.caches.observe_job((meta["namespace"], schedule), job, deleted=True)
        if runs.finished_condition(job) is not None and not (meta.get("annotations") or {}).get(RECORDED_ANNOTATION):
            self.record_job_or_defer(job)

    def pod_changed(self, pod: dict, deleted: bool = False) -> None:
        """A Pod of a run changed: refresh its schedule's active runs if its Job is unfinished."""
        meta = pod["metadata"]
        schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
        if schedule and self.caches.observe_pod((meta["namespace"], schedule), pod, deleted):
            self.refresh_active(meta["namespace"], schedule)

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
                                     f"run {record.job_name} {record.outcome}: {record.message or ''}")
            else:
                took = f" in {record.duration_seconds:g} s" if record.duration_seconds is not None else ""
                self.kube.post_event(schedule, "Normal", "RunSucceeded", f"run {record.job_name} succeeded{took}")
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
        times = parsed.spec.times(meta["namespace"], meta["name"])
        return times.missed_runs(since, now - slack, limit=10) if times is not None else []

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


def _record_window(current: dict, start: datetime, end: datetime) -> Desired:
    """status.backfilled with ``[start, end)`` merged in, as a merge patch of that field alone
    (pure); no patch when the window is recorded already."""
    status = read_status(current.get("status") or {})
    merged = merge_windows(status.backfilled_windows(), start, end)
    if merged == status.backfilled_windows():
        return Desired(status, {}, (), None, None)
    windows = [BackfilledWindow(start=s, end=e) for s, e in merged]
    patch = {"backfilled": [w.model_dump(mode="json", by_alias=True) for w in windows]}
    return Desired(status.model_copy(update={"backfilled": windows}), patch, (), None, None)


def _name(body: dict) -> str:
    return "/".join(map(str, key_of(body)))
