"""One schedule's fire times, whether cron or ``@every``: what the reconciler asks (issue 17).

Today the reconciler calls ``cron.next_run``, ``cron.expected_interval``, ``cron.missed_runs`` and
``cron.is_stale`` on the effective expression. ``ScheduleTimes.of(...)`` answers the same
questions for both kinds, so wiring intervals in is a change of receiver, not of logic, and
``cronjob()`` says what the CronJob carries: the schedule itself, the equivalent cron expression
of an interval (in UTC), or, for an interval the operator fires, a suspended template.

Pure: every method takes the time as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from thresher.api import cron, interval

# The schedule of the CronJob kept as a run template for an interval the operator fires: it is
# suspended, so this never fires; a real expression because the CronJob API requires one.
TEMPLATE_SCHEDULE = "0 0 1 1 *"


@dataclass(frozen=True)
class CronJobTiming:
    """The timing fields of the CronJob (``suspend_for_template``: suspended whatever spec.suspend says)."""

    schedule: str
    time_zone: str | None
    suspend_for_template: bool


@dataclass(frozen=True)
class ScheduleTimes:
    """Fire times of a resolved cron expression (``every`` None) or of an interval."""

    expr: str
    time_zone: str | None
    every: interval.Interval | None

    @classmethod
    def of(cls, effective: str, time_zone: str | None, anchor: str | None = None) -> ScheduleTimes:
        """``effective``: the schedule with H resolved (``spec.effective_schedule``) or ``@every ...``.
        Raises CronError or IntervalError (the spec was validated: only for objects that bypassed it)."""
        if interval.is_interval(effective):
            return cls(effective, time_zone, interval.parse(effective, anchor, time_zone))
        cron.parse(effective)
        return cls(effective, time_zone, None)

    @property
    def fired_by_operator(self) -> bool:
        """True for an interval no cron expression repeats: the operator creates its Jobs."""
        return self.every is not None and interval.as_cron(self.every) is None

    def cronjob(self) -> CronJobTiming:
        if self.every is None:
            return CronJobTiming(self.expr, self.time_zone, suspend_for_template=False)
        mapped = interval.as_cron(self.every)
        if mapped is None:
            return CronJobTiming(TEMPLATE_SCHEDULE, "UTC", suspend_for_template=True)
        return CronJobTiming(mapped.schedule, mapped.time_zone, suspend_for_template=False)

    def next_run(self, after: datetime) -> datetime | None:
        if self.every is None:
            return cron.next_run(self.expr, self.time_zone, after)
        return interval.due_after(self.every, after)

    def previous_run(self, at: datetime) -> datetime | None:
        if self.every is None:
            return cron.previous_run(self.expr, self.time_zone, at)
        return interval.previous_due(self.every, at)

    def expected_interval(self, at: datetime) -> timedelta | None:
        if self.every is None:
            return cron.expected_interval(self.expr, self.time_zone, at)
        return self.every.every

    def missed_runs(self, since: datetime, now: datetime, limit: int) -> list[datetime]:
        """Fire times in ``(since, now]``, oldest first, at most ``limit``."""
        if self.every is None:
            return cron.missed_runs(self.expr, self.time_zone, since, now, limit)
        return interval.due_times(self.every, since, now, limit)

    def is_stale(self, last_success: datetime | None, created: datetime, grace: timedelta, now: datetime) -> bool:
        """``cron.is_stale``'s dead-man's switch: no success by the next fire time after the last
        success (or creation) plus ``grace``."""
        if self.every is None:
            return cron.is_stale(last_success, created, self.expr, self.time_zone, grace, now)
        reference = last_success if last_success is not None else created
        return now > interval.due_after(self.every, reference) + grace
