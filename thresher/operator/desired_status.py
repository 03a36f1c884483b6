"""The desired status of a schedule: one pure step from what the operator observed to what it writes.

Inputs: the schedule as read (parsed once, or why it is invalid), the CronJob as last watched,
finished runs not yet recorded, the start times of running Jobs, and ``now``. Outputs
(``Desired``): the status as the API model, the merge patch from the current status to it
(empty when nothing changed), the runs that were new, and one ``ScheduleState`` for the
metrics. No API calls, no clock, no metrics: ``Reconciler`` reads the world, calls this, and
writes the patch.

Recording is idempotent by construction: a run is keyed by its Job name, and a record already
in ``recentRuns`` changes nothing, so an operator restarted between writing status and marking
the Job never counts a run twice.

The active runs (``status.active``, classified by ``activeruns.active_run`` from what the
reconciler read) and the checks of what the spec names (PriorityClass, PVC, ServiceAccount)
are inputs the same way: ``Observed.active`` gives ``status.active``, the ``RunBlocked``
condition and the blocked counts of ``ScheduleState``; ``Observed.missing`` the
``PrerequisitesMissing`` condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from thresher.api import cron
from thresher.api.activerun import ActiveRun
from thresher.api.retry import RetryPolicy, RunAttempts
from thresher.api.schedule import (
    MAX_ACTIVE_RUNS,
    MAX_RECENT_RUNS,
    CollectionSchedule,
    CollectionScheduleStatus,
    Condition,
    ConditionType,
    CronJobRef,
    RunRecord,
    RunStats,
    SpecInvalid,
)
from thresher.api.timing import ScheduleTimes
from thresher.operator.activeruns import blocked_counts, run_blocked_condition
from thresher.operator.retries import fold_attempts
from thresher.operator.runs import SUCCEEDED, format_time, parse_time

CONDITION_MESSAGE_LIMIT = 1000  # well inside the schema's bound; a condition is read by people
# Status attribute -> its key in the stored object (the alias, else the name).
_STATUS_KEYS = {name: info.alias or name for name, info in CollectionScheduleStatus.model_fields.items()}


class CronTimes(Protocol):
    """Next fire time and expected interval at ``now`` (``caches.FireTimes`` memoises them)."""

    def next_run(self, expr: str, tz: str | None, now: datetime) -> datetime | None: ...

    def expected_interval(self, expr: str, tz: str | None, now: datetime) -> timedelta | None: ...


class PlainCronTimes:
    """``CronTimes`` straight from ``thresher.api.cron``, without memoisation."""

    def next_run(self, expr: str, tz: str | None, now: datetime) -> datetime | None:
        return cron.next_run(expr, tz, now)

    def expected_interval(self, expr: str, tz: str | None, now: datetime) -> timedelta | None:
        return cron.expected_interval(expr, tz, now)


@dataclass(frozen=True)
class Observed:
    """What the operator saw of one schedule's children."""

    cronjob: dict | None = None  # as last watched (name and status); None: not known
    finished: Sequence[RunRecord] = ()  # finished runs, recorded or not (duplicates are ignored)
    running_since: Sequence[float] = ()  # unix start times of the schedule's running Jobs
    active: Sequence[ActiveRun] = ()  # the unfinished Jobs, classified (activeruns.active_run)
    # What the spec names and does not exist, one line each; None: not checked this pass (the
    # PrerequisitesMissing condition stays as it is).
    missing: Sequence[str] | None = None
    # The due time of a Job the operator just created for an interval it fires (lastScheduleTime).
    fired: datetime | None = None
    # Retry attempts whose Job exists now (just created, or AlreadyExists): (first Job, attempt, Job).
    retried: Sequence[tuple[str, int, str]] = ()


@dataclass(frozen=True)
class ScheduleState:
    """The level state of one schedule, as the metrics export it; None: unknown (no series)."""

    namespace: str
    schedule: str
    job_type: str
    suspended: bool
    next_run: float | None
    last_run: float | None
    last_success: float | None
    last_failure: float | None
    consecutive_failures: int
    failure_threshold: int
    stale: bool
    stale_after_seconds: float | None
    min_quality: float | None
    min_items: int | None
    active_runs: int
    oldest_active_start: float | None
    expected_duration_seconds: float | None
    cron: str
    time_zone: str
    blocked: Mapping[str, int] = field(default_factory=dict)  # blocked active runs per reason
    # spec.alerting.labels as thresher_schedule_info carries them, in alerting_labels.INFO_LABELS order.
    info_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Desired:
    """What one schedule's status should be, and what it takes to get there."""

    status: CollectionScheduleStatus
    patch: dict[str, Any]  # JSON merge patch of .status; {} when nothing changed
    new_runs: tuple[RunRecord, ...]  # newest last
    schedule: CollectionSchedule | None  # None when the spec is invalid
    state: ScheduleState | None  # None when the spec is invalid
    # Transitions worth a Normal/Warning Event, decided against the current status (so a
    # restarted operator does not repeat them): runs new in status.active, and the RunBlocked
    # condition when it turned True in this step.
    started: tuple[ActiveRun, ...] = ()
    newly_blocked: Condition | None = None
    # Runs whose next attempt was scheduled in this step (status.retrying, nextAttemptTime set).
    retries_scheduled: tuple[RunAttempts, ...] = ()


def desired_status(body: dict, parsed: CollectionSchedule | SpecInvalid, observed: Observed, now: datetime,
                   times: CronTimes | None = None) -> Desired:
    """The status ``body`` should have at ``now``, given what was observed (pure)."""
    times = times or PlainCronTimes()  # caches.FireTimes gives the same answers, memoised
    current_raw = body.get("status") or {}
    if isinstance(parsed, SpecInvalid):
        current = read_status(current_raw)
        status, new, _ = fold_all(current, observed, None, body["metadata"].get("name") or "", now)
        generation = body["metadata"].get("generation")
        status = status.model_copy(update={
            "observed_generation": generation,
            "next_schedule_time": None,
            "conditions": set_condition(status.conditions, ConditionType.READY, False, "InvalidSpec",
                                        parsed.message, now, generation),
        })
        return Desired(status, status_patch(current_raw, current, status), new, None, None)
    current = parsed.status or CollectionScheduleStatus()
    status, new, state, scheduled = _valid(parsed, current, observed, now, times)
    known = {run.name for run in current.active} | {run.job_name for run in status.recent_runs}
    started = tuple(run for run in status.active if run.name not in known)
    was_blocked = _condition_true(current.conditions, ConditionType.RUN_BLOCKED)
    blocked = next((c for c in status.conditions if c.type == ConditionType.RUN_BLOCKED and c.status == "True"), None)
    return Desired(status, status_patch(current_raw, current, status), new, parsed, state, started,
                   None if was_blocked else blocked, scheduled)


def _condition_true(conditions: list[Condition], type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in conditions)


def fold_all(current: CollectionScheduleStatus, observed: Observed, policy: RetryPolicy | None, name: str,
             now: datetime) -> tuple[CollectionScheduleStatus, tuple[RunRecord, ...], tuple[RunAttempts, ...]]:
    """Finished Jobs' records through the retrying runs (``retries.fold_attempts``) into recentRuns
    (``fold_runs``): status with both, the runs newly over, the retries newly scheduled."""
    folded = fold_attempts(current.retrying, observed.finished, {run.job_name for run in current.recent_runs},
                           policy, name, now, observed.retried)
    status, new = fold_runs(current, folded.final)
    if list(folded.retrying) != status.retrying:
        status = status.model_copy(update={"retrying": list(folded.retrying)})
    return status, new, folded.scheduled


def _valid(parsed: CollectionSchedule, current: CollectionScheduleStatus, observed: Observed, now: datetime,
           times: CronTimes) -> tuple[CollectionScheduleStatus, tuple[RunRecord, ...], ScheduleState,
                                      tuple[RunAttempts, ...]]:
    meta, spec = parsed.metadata, parsed.spec
    status, new, scheduled = fold_all(current, observed, spec.retry_policy, meta.name, now)
    effective = spec.effective_schedule(meta.namespace, meta.name)
    zone = spec.time_zone or "UTC"
    schedule_times = spec.times(meta.namespace, meta.name)
    if schedule_times is None:  # only runAt: no recurring runs
        upcoming, interval = None, None
    elif schedule_times.every is None:  # cron: memoised (the backward search is most of a refresh's CPU)
        upcoming, interval = times.next_run(effective, spec.time_zone, now), \
            times.expected_interval(effective, spec.time_zone, now)
    else:  # an interval: arithmetic, nothing to save
        upcoming, interval = schedule_times.next_run(now), schedule_times.expected_interval(now)
    if spec.run_at is not None and spec.run_at > now:  # the one-off run is the next one until it fired
        upcoming = min(filter(None, (upcoming, spec.run_at)))
    next_run = None if spec.suspend else _utc(upcoming)
    cj_status = (observed.cronjob or {}).get("status") or {}
    generation = meta.generation

    stale, stale_message = _staleness(parsed, schedule_times, status.last_successful_time, now)
    failures, threshold = status.consecutive_failures, spec.alerting.consecutive_failure_threshold
    failing = failures >= threshold
    runs_what = (f"runs {effective!r} in {zone}" if effective is not None
                 else f"holds the template of the one run at {format_time(spec.run_at)}")
    conditions = set_condition(status.conditions, ConditionType.READY, True, "CronJobReady",
                               f"CronJob {meta.name} {runs_what}", now, generation)
    conditions = set_condition(conditions, ConditionType.STALE, stale,
                               "NoRecentSuccess" if stale else ("Suspended" if spec.suspend else "Fresh"),
                               stale_message, now, generation)
    conditions = set_condition(conditions, ConditionType.FAILING, failing,
                               "ConsecutiveFailures" if failing else "BelowThreshold",
                               f"{failures} consecutive failed runs (threshold {threshold})", now, generation)
    entries = sorted(observed.active, key=_active_order)[:MAX_ACTIVE_RUNS]
    blocked, blocked_reason, blocked_message = run_blocked_condition(entries)
    conditions = set_condition(conditions, ConditionType.RUN_BLOCKED, blocked, blocked_reason or "Blocked",
                               blocked_message, now, generation)
    if observed.missing is not None:
        conditions = set_condition(conditions, ConditionType.PREREQUISITES_MISSING, bool(observed.missing),
                                   "NotFound" if observed.missing else "AllFound",
                                   "; ".join(observed.missing) if observed.missing
                                   else "the PriorityClass, PVC and ServiceAccount the spec names exist",
                                   now, generation)
    update: dict[str, Any] = {
        "active": entries,
        "observed_generation": generation,
        "effective_schedule": effective,
        "next_schedule_time": next_run,
        "conditions": conditions,
    }
    if observed.cronjob is not None:
        update["cron_job_ref"] = CronJobRef(name=observed.cronjob["metadata"]["name"])
    # The newest due time whose Job exists: the CronJob controller's, or one the operator fired.
    last_scheduled = max(filter(None, (parse_time(cj_status.get("lastScheduleTime")), observed.fired)),
                         default=None)
    if last_scheduled is not None and (status.last_schedule_time is None
                                       or last_scheduled > status.last_schedule_time):
        update["last_schedule_time"] = _utc(last_scheduled)
    status = status.model_copy(update=update)

    by_cronjob = schedule_times is not None and not schedule_times.fired_by_operator
    active = len(cj_status.get("active") or []) if by_cronjob else len(entries)
    state = ScheduleState(
        namespace=meta.namespace, schedule=meta.name, job_type=spec.job.kind, suspended=spec.suspend,
        next_run=_ts(status.next_schedule_time), last_run=_ts(status.last_schedule_time),
        last_success=_ts(status.last_successful_time), last_failure=_ts(status.last_failure_time),
        consecutive_failures=failures, failure_threshold=threshold, stale=stale,
        stale_after_seconds=(interval + spec.stale_grace()).total_seconds() if interval else None,
        min_quality=spec.alerting.min_quality_rate, min_items=spec.alerting.min_items,
        active_runs=active,
        oldest_active_start=min(observed.running_since, default=None) if active else None,
        expected_duration_seconds=float(spec.timeout_seconds) if spec.timeout_seconds else None,
        cron=effective or "", time_zone=zone, blocked=blocked_counts(entries),
        info_labels=tuple(spec.alerting.labels.info_labels().values()),
    )
    return status, new, state, scheduled


def _active_order(entry: ActiveRun) -> tuple[str, str]:
    """Oldest first, by the time the run was due (a Job name sorts equal runs)."""
    when = entry.scheduled_time or entry.start_time
    return (when.isoformat() if when else "", entry.name)


def _staleness(parsed: CollectionSchedule, schedule_times: ScheduleTimes | None, last_success: datetime | None,
               now: datetime) -> tuple[bool, str]:
    spec = parsed.spec
    if spec.suspend:
        return False, "suspended: no runs are expected"
    if schedule_times is None:
        return False, "a one-off schedule (runAt only): no recurring runs are expected"
    created = parsed.metadata.creation_timestamp or now
    stale = schedule_times.is_stale(last_success, created, spec.stale_grace(), now)
    since = "since creation" if last_success is None else f"since {format_time(last_success)}"
    return stale, (f"no successful run {since}" if stale else "last success within the expected interval")


def fold_runs(status: CollectionScheduleStatus, records: Sequence[RunRecord],
              limit: int = MAX_RECENT_RUNS) -> tuple[CollectionScheduleStatus, tuple[RunRecord, ...]]:
    """``status`` with ``records`` folded in: recentRuns newest first (by completion time) and
    bounded, stats over them, and the failure count and last success/failure moved by the runs
    that were new. Returns the new runs too, oldest first. ``status`` is not modified."""
    known = {run.job_name for run in status.recent_runs}
    unique: dict[str, RunRecord] = {}  # a batch may hold two events of one Job
    for record in records:
        if record.job_name not in known:
            unique.setdefault(record.job_name, record)
    new = tuple(sorted(unique.values(), key=_completed))
    # Sorted oldest first then reversed (not sorted newest first): equal times keep the order
    # they were recorded in, newest recorded first.
    runs = sorted([*status.recent_runs, *new], key=_completed)[-limit:][::-1]
    if not new and status.stats is not None and len(runs) == len(status.recent_runs) and all(
            a is b for a, b in zip(runs, status.recent_runs)):
        return status, new  # the common refresh: nothing to fold, already in order
    consecutive = status.consecutive_failures
    last_success, last_failure = status.last_successful_time, status.last_failure_time
    for record in new:
        finished = record.completion_time
        if record.backfill:
            continue  # a past window re-run says nothing about the schedule's current health
        if record.outcome == SUCCEEDED:
            consecutive = 0
            last_success = max(filter(None, (last_success, finished)), default=None)
        else:
            consecutive += 1
            last_failure = max(filter(None, (last_failure, finished)), default=None)
    update: dict[str, Any] = {"recent_runs": runs, "consecutive_failures": consecutive,
                              "last_successful_time": last_success, "last_failure_time": last_failure}
    if runs:
        update["last_result"] = runs[0].outcome
        update["stats"] = RunStats.from_runs(runs)
    return status.model_copy(update=update), new


def _completed(run: RunRecord) -> datetime:
    return run.completion_time or datetime.min.replace(tzinfo=UTC)


def set_condition(conditions: list[Condition], type_: str, status: bool, reason: str, message: str,
                  now: datetime, generation: int | None) -> list[Condition]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    result, found = [], False
    for cond in conditions:
        if cond.type != type_:
            result.append(cond)
            continue
        found = True
        if (cond.status, cond.reason, cond.message, cond.observed_generation) == (
                value, reason, message[:CONDITION_MESSAGE_LIMIT], generation):
            result.append(cond)  # unchanged (the common refresh): no new model to validate
            continue
        transition = cond.last_transition_time if cond.status == value else now
        result.append(_condition(type_, value, reason, message, transition, generation))
    if not found:
        result.append(_condition(type_, value, reason, message, now, generation))
    return result


def _condition(type_: str, value: str, reason: str, message: str, transition: datetime,
               generation: int | None) -> Condition:
    return Condition(type=type_, status=value, reason=reason, message=message[:CONDITION_MESSAGE_LIMIT],
                     last_transition_time=transition, observed_generation=generation)


def read_status(raw: dict) -> CollectionScheduleStatus:
    """The status model of a stored status, tolerant: a field that does not validate (written
    by another version, or by hand) reads as unset instead of failing the whole status."""
    try:
        return CollectionScheduleStatus.model_validate(raw)
    except ValidationError:
        good = {}
        for key in _STATUS_KEYS.values():
            if key in raw:
                try:
                    CollectionScheduleStatus.model_validate({key: raw[key]})
                except ValidationError:
                    continue
                good[key] = raw[key]
        return CollectionScheduleStatus.model_validate(good)


def status_patch(current_raw: dict, current: CollectionScheduleStatus,
                 desired: CollectionScheduleStatus) -> dict[str, Any]:
    """The JSON merge patch of .status from ``current`` (as stored: ``current_raw``, as read:
    ``current``) to ``desired``: the top-level fields that differ, a field that became unset
    as null. A field unset in storage is written when it has a value, even one equal to the
    model's default (consecutiveFailures: 0 shows in ``kubectl get``)."""
    changed, cleared = set(), []
    for name, key in _STATUS_KEYS.items():
        value = getattr(desired, name)
        if value is None or value == []:
            if current_raw.get(key) not in (None, []):
                if value is None:
                    cleared.append(key)
                else:
                    changed.add(name)
            continue
        if value != getattr(current, name) or key not in current_raw:
            changed.add(name)
    patch = desired.model_dump(mode="json", by_alias=True, exclude_none=True, include=changed) if changed else {}
    return {**patch, **dict.fromkeys(cleared)}


def _utc(value: datetime | None) -> datetime | None:
    """As the status stores time: UTC, whole seconds (metav1.Time)."""
    return value.astimezone(UTC).replace(microsecond=0) if value is not None else None


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
