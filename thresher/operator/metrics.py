"""Prometheus metrics of the Thresher operator.

Everything lives in one ``OperatorMetrics`` object with its own
``CollectorRegistry``: nothing is registered at import time, so tests build as
many independent instances as they like and the operator serves exactly the
registry it was handed.

Conventions (kube-state-metrics best practices; the table is in docs/metrics.md):

* names carry the ``thresher_`` prefix and base units (``_seconds``,
  ``_timestamp_seconds`` as unix seconds, ``_ratio`` in [0, 1], ``_total``);
* labels are bounded: namespace, schedule, job_type (tmdb, drone, container),
  outcome (five values), reason (the closed set of blocked reasons), handler (the operator's handler names). Messages,
  job names and run ids never become labels;
* a value the operator does not know (no success yet, no next run while
  suspended, no threshold configured) *removes* the series instead of writing
  0, so "never" cannot be mistaken for 1970 and an alert comparing with an
  unset threshold has nothing to compare;
* static properties (cron, time zone, the routing labels of ``spec.alerting.labels``) sit in
  ``thresher_schedule_info``.

Alert rules in manifests/monitoring/thresher-rules.yaml and the Grafana
dashboard depend on these names; tests/unit/monitoring checks them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from thresher.api.activerun import BLOCKED_REASONS
from thresher.api.alerting_labels import INFO_LABELS
from thresher.operator.activeruns import BLOCKED_GAUGE

if TYPE_CHECKING:  # the metrics export the pure step's state; they do not compute it
    from thresher.operator.desired_status import ScheduleState

OUTCOMES = ("succeeded", "failed", "timed_out", "failed_to_start", "node_lost")
FAILED_OUTCOMES = frozenset(OUTCOMES) - {"succeeded"}

# Batch jobs run from seconds (hourly trending pull) to hours (monthly TMDB
# refresh, large drone batches): 1 s .. 6 h.
RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
# Handlers are API calls plus a little pure logic: milliseconds to tens of seconds.
RECONCILE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_SCHEDULE = ("namespace", "schedule")
_SCHEDULE_JOB = ("namespace", "schedule", "job_type")

_SeriesKey = tuple[str, str]  # (namespace, schedule)


def _package_version() -> str:
    try:
        return metadata.version("thresher")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


class OperatorMetrics:
    """All Thresher metrics, in one explicit registry.

    ``observe_run`` records an event (one finished run); ``set_schedule_state``
    writes the level state of one schedule as the operator rebuilt it from the
    cluster, and is authoritative for every gauge it covers. ``forget_schedule``
    drops every series of a deleted schedule.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, version: str | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._server: Any = None
        # Every labelled child we created, per schedule, so forget_schedule can
        # remove them without reading prometheus_client internals.
        self._series: dict[_SeriesKey, set[tuple[Any, tuple[str, ...]]]] = {}
        # Current info labels and job_type per schedule, to drop the old series when they change.
        self._info_labels: dict[_SeriesKey, tuple[str, ...]] = {}
        self._job_type: dict[_SeriesKey, str] = {}
        # Values of the per-schedule timestamp gauges as last set, so moving one forward is a
        # dict lookup: registry.get_sample_value collects every series (O(schedules) a call).
        self._timestamps: dict[tuple[Any, _SeriesKey], float] = {}
        r = self.registry

        self._names: dict[Any, str] = {}

        def gauge(name: str, doc: str, labels: Sequence[str]) -> Gauge:
            metric = Gauge(name, doc, labels, registry=r)
            self._names[metric] = name
            return metric

        self.schedule_info = gauge(
            "thresher_schedule_info",
            "Static properties of a CollectionSchedule, spec.alerting.labels included (the alert rules "
            "join them); always 1.",
            ("namespace", "schedule", "job_type", "cron", "time_zone", *INFO_LABELS),
        )
        self.suspended = gauge("thresher_schedule_suspended", "1 while the schedule is suspended.", _SCHEDULE)
        self.runs = Counter(
            "thresher_schedule_runs",  # exposed as thresher_schedule_runs_total
            "Finished runs by outcome (succeeded, failed, timed_out, failed_to_start, node_lost).",
            ("namespace", "schedule", "job_type", "outcome"),
            registry=r,
        )
        self.run_duration = Histogram(
            "thresher_schedule_run_duration_seconds",
            "Wall-clock duration of finished runs (start to completion).",
            _SCHEDULE_JOB,
            buckets=RUN_DURATION_BUCKETS,
            registry=r,
        )
        self.last_run = gauge(
            "thresher_schedule_last_run_timestamp_seconds", "When the last run finished.", _SCHEDULE
        )
        self.last_success = gauge(
            "thresher_schedule_last_success_timestamp_seconds", "When the last successful run finished.", _SCHEDULE
        )
        self.last_failure = gauge(
            "thresher_schedule_last_failure_timestamp_seconds",
            "When the last failed or timed-out run finished.",
            _SCHEDULE,
        )
        self.next_run = gauge(
            "thresher_schedule_next_run_timestamp_seconds",
            "Next scheduled run; absent while suspended.",
            _SCHEDULE,
        )
        self.consecutive_failures = gauge(
            "thresher_schedule_consecutive_failures", "Failed runs since the last success.", _SCHEDULE
        )
        self.failure_threshold = gauge(
            "thresher_schedule_consecutive_failures_threshold",
            "Consecutive failures at which the schedule counts as failing (spec).",
            _SCHEDULE,
        )
        self.stale = gauge(
            "thresher_schedule_stale",
            "1 when no successful run happened within stale_after_seconds (dead-man's switch).",
            _SCHEDULE,
        )
        self.stale_after = gauge(
            "thresher_schedule_stale_after_seconds",
            "Expected interval between runs plus the configured grace.",
            _SCHEDULE,
        )
        self.last_items = gauge(
            "thresher_schedule_last_run_items", "Items the last run reported.", _SCHEDULE_JOB
        )
        self.last_valid = gauge(
            "thresher_schedule_last_run_valid_items", "Valid items the last run reported.", _SCHEDULE_JOB
        )
        self.last_quality = gauge(
            "thresher_schedule_last_run_quality_ratio", "Quality rate [0, 1] the last run reported.", _SCHEDULE_JOB
        )
        self.min_items = gauge("thresher_schedule_min_items", "Minimum expected items per run (spec).", _SCHEDULE_JOB)
        self.min_quality = gauge(
            "thresher_schedule_min_quality_ratio", "Minimum acceptable quality rate (spec).", _SCHEDULE_JOB
        )
        self.active_runs = gauge("thresher_schedule_active_runs", "Runs in progress.", _SCHEDULE)
        self.oldest_active_start = gauge(
            "thresher_schedule_oldest_active_run_start_timestamp_seconds",
            "Start of the oldest run in progress; absent when none runs.",
            _SCHEDULE,
        )
        self.runs_blocked = gauge(
            BLOCKED_GAUGE,
            "Active runs blocked on a cause that will not fix itself, per reason (status.active).",
            ("namespace", "schedule", "reason"),
        )
        self.expected_duration = gauge(
            "thresher_schedule_expected_duration_seconds",
            "How long a run is expected to take at most (spec timeout, or a default).",
            _SCHEDULE,
        )
        self.reconciles = Counter(
            "thresher_operator_reconcile",  # exposed as thresher_operator_reconcile_total
            "Handler invocations by result (ok, error).",
            ("handler", "result"),
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "thresher_operator_reconcile_duration_seconds",
            "Handler latency.",
            ("handler",),
            buckets=RECONCILE_DURATION_BUCKETS,
            registry=r,
        )
        self.last_reconcile = Gauge(
            "thresher_operator_last_reconcile_timestamp_seconds",
            "When a handler last finished, ok or not (liveness of the control loop).",
            registry=r,
        )
        self._timestamp_gauges = frozenset({self.last_run, self.last_success, self.last_failure})
        self.operator_info = gauge("thresher_operator_info", "The running operator; always 1.", ("version",))
        self.operator_info.labels(version or _package_version()).set(1)
        # With leader election (replicaCount > 1) only the leader runs handlers: a standby
        # exposes this at 0 and no per-schedule series, so sums over replicas never double count.
        self.leader = Gauge("thresher_operator_leader",
                            "1 while this replica runs the handlers (holds the Lease, or no election); 0 on a standby.",
                            registry=r)

    # -- per-schedule bookkeeping ------------------------------------------------

    def _child(self, metric: Any, key: _SeriesKey, *labels: str) -> Any:
        self._series.setdefault(key, set()).add((metric, labels))
        return metric.labels(*labels)

    def _drop(self, metric: Any, key: _SeriesKey, *labels: str) -> None:
        self._timestamps.pop((metric, key), None)
        series = self._series.get(key)
        if series is not None and (metric, labels) in series:
            series.discard((metric, labels))
            metric.remove(*labels)

    def _set_or_drop(self, metric: Any, key: _SeriesKey, labels: tuple[str, ...], value: float | None) -> None:
        if value is None:
            self._drop(metric, key, *labels)
        else:
            self._child(metric, key, *labels).set(value)
            if metric in self._timestamp_gauges:
                self._timestamps[(metric, key)] = value

    def _init_runs(self, key: _SeriesKey, job_type: str) -> None:
        # Outcome counters start at 0 so the first failure is an increase
        # Prometheus can see (increase() ignores a series' first sample).
        for outcome in OUTCOMES:
            self._child(self.runs, key, *key, job_type, outcome)

    def _switch_job_type(self, key: _SeriesKey, job_type: str) -> None:
        # A schedule edited from one job kind to another must not keep the old
        # kind's thresholds and last-run gauges (they would alert forever).
        old = self._job_type.get(key)
        if old is not None and old != job_type:
            for metric in (self.last_items, self.last_valid, self.last_quality, self.min_items, self.min_quality):
                self._drop(metric, key, *key, old)
        self._job_type[key] = job_type

    # -- the interface the operator calls ---------------------------------------

    def observe_run(
        self,
        *,
        namespace: str,
        schedule: str,
        job_type: str,
        outcome: str,
        duration_seconds: float | None,
        finished_at: float,
        items: int | None,
        valid: int | None,
        quality: float | None,
    ) -> None:
        """Record one finished run (call once per run; the operator deduplicates).

        The last-run gauges describe this run: a run that reported no items or
        no quality (a crash before the result was written) removes them rather
        than leaving the previous run's numbers in place. The last run /
        success / failure timestamps only move forward here; ``set_schedule_state``
        stays authoritative for them.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        key = (namespace, schedule)
        self._switch_job_type(key, job_type)
        self._init_runs(key, job_type)
        self.runs.labels(namespace, schedule, job_type, outcome).inc()
        if duration_seconds is not None:
            self._child(self.run_duration, key, namespace, schedule, job_type).observe(max(0.0, duration_seconds))
        labels = (namespace, schedule, job_type)
        self._set_or_drop(self.last_items, key, labels, items)
        self._set_or_drop(self.last_valid, key, labels, valid)
        self._set_or_drop(self.last_quality, key, labels, quality)
        self._advance(self.last_run, key, finished_at)
        self._advance(self.last_failure if outcome in FAILED_OUTCOMES else self.last_success, key, finished_at)

    def _advance(self, metric: Gauge, key: _SeriesKey, ts: float) -> None:
        current = self._timestamps.get((metric, key))
        if current is None or ts > current:  # a late-recorded older run must not move time backwards
            self._child(metric, key, *key).set(ts)
            self._timestamps[(metric, key)] = ts

    def set_schedule_state(self, state: ScheduleState) -> None:
        """Write the level state of one schedule; ``None`` removes the series."""
        namespace, schedule, job_type = state.namespace, state.schedule, state.job_type
        key = (namespace, schedule)
        self._switch_job_type(key, job_type)
        self._init_runs(key, job_type)
        info = (namespace, schedule, job_type, state.cron, state.time_zone,
                *(state.info_labels or ("",) * len(INFO_LABELS)))
        old_info = self._info_labels.get(key)
        if old_info is not None and old_info != info:
            self._drop(self.schedule_info, key, *old_info)
        self._info_labels[key] = info
        self._child(self.schedule_info, key, *info).set(1)

        s, sj = key, (namespace, schedule, job_type)
        self._set_or_drop(self.suspended, key, s, int(state.suspended))
        self._set_or_drop(self.next_run, key, s, state.next_run)
        self._set_or_drop(self.last_run, key, s, state.last_run)
        self._set_or_drop(self.last_success, key, s, state.last_success)
        self._set_or_drop(self.last_failure, key, s, state.last_failure)
        self._set_or_drop(self.consecutive_failures, key, s, state.consecutive_failures)
        self._set_or_drop(self.failure_threshold, key, s, state.failure_threshold)
        self._set_or_drop(self.stale, key, s, int(state.stale))
        self._set_or_drop(self.stale_after, key, s, state.stale_after_seconds)
        self._set_or_drop(self.min_quality, key, sj, state.min_quality)
        self._set_or_drop(self.min_items, key, sj, state.min_items)
        self._set_or_drop(self.active_runs, key, s, state.active_runs)
        self._set_or_drop(self.oldest_active_start, key, s,
                          state.oldest_active_start if state.active_runs > 0 else None)
        self._set_or_drop(self.expected_duration, key, s, state.expected_duration_seconds)
        for reason in BLOCKED_REASONS:  # every reason, 0 included: the alert sees it clear
            self._child(self.runs_blocked, key, namespace, schedule, reason).set(state.blocked.get(reason, 0))

    def forget_schedule(self, *, namespace: str, schedule: str) -> None:
        """Remove every series of a deleted schedule (counters and histograms included)."""
        key = (namespace, schedule)
        for metric, labels in self._series.pop(key, set()):
            metric.remove(*labels)
            self._timestamps.pop((metric, key), None)
        self._info_labels.pop(key, None)
        self._job_type.pop(key, None)

    def observe_reconcile(self, *, handler: str, ok: bool, seconds: float) -> None:
        """Count one handler invocation; ``handler`` must be a fixed handler name, never an object name."""
        self.reconciles.labels(handler, "ok" if ok else "error").inc()
        self.reconcile_duration.labels(handler).observe(max(0.0, seconds))
        self.last_reconcile.set_to_current_time()

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve this registry on ``http://addr:port/metrics`` from a daemon thread."""
        self._server = start_http_server(port, addr, registry=self.registry)

    @property
    def port(self) -> int | None:
        """The port ``serve`` bound (useful with port 0), or None when not serving."""
        return None if self._server is None else self._server[0].server_address[1]

    def shutdown(self) -> None:
        """Stop the server started by ``serve`` (tests; the operator just exits)."""
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
