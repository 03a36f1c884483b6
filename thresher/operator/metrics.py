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

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

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


# The per-schedule metrics: (name, type, extra labels after namespace and schedule, help).
# They are not prometheus_client children (a Gauge child is an object with two locks, ~1 KiB;
# 21 series per schedule were 20 KiB of heap per schedule, 100 MiB at 5,000): ``_Schedules``
# keeps one small dict of values per schedule and builds the families when Prometheus scrapes.
INFO_SERIES_LABELS = (*_SCHEDULE, "job_type", "cron", "time_zone", *INFO_LABELS)  # thresher_schedule_info's
_FAMILIES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("thresher_schedule_info", "gauge", INFO_SERIES_LABELS[len(_SCHEDULE):],
     "Static properties of a CollectionSchedule, spec.alerting.labels included (the alert rules "
     "join them); always 1."),
    ("thresher_schedule_suspended", "gauge", (), "1 while the schedule is suspended."),
    ("thresher_schedule_runs", "counter", ("job_type", "outcome"),
     "Finished runs by outcome (succeeded, failed, timed_out, failed_to_start, node_lost)."),
    ("thresher_schedule_run_duration_seconds", "histogram", ("job_type",),
     "Wall-clock duration of finished runs (start to completion)."),
    ("thresher_schedule_last_run_timestamp_seconds", "gauge", (), "When the last run finished."),
    ("thresher_schedule_last_success_timestamp_seconds", "gauge", (), "When the last successful run finished."),
    ("thresher_schedule_last_failure_timestamp_seconds", "gauge", (), "When the last failed or timed-out run finished."),
    ("thresher_schedule_next_run_timestamp_seconds", "gauge", (), "Next scheduled run; absent while suspended."),
    ("thresher_schedule_consecutive_failures", "gauge", (), "Failed runs since the last success."),
    ("thresher_schedule_consecutive_failures_threshold", "gauge", (),
     "Consecutive failures at which the schedule counts as failing (spec)."),
    ("thresher_schedule_stale", "gauge", (),
     "1 when no successful run happened within stale_after_seconds (dead-man's switch)."),
    ("thresher_schedule_stale_after_seconds", "gauge", (), "Expected interval between runs plus the configured grace."),
    ("thresher_schedule_last_run_items", "gauge", ("job_type",), "Items the last run reported."),
    ("thresher_schedule_last_run_valid_items", "gauge", ("job_type",), "Valid items the last run reported."),
    ("thresher_schedule_last_run_quality_ratio", "gauge", ("job_type",), "Quality rate [0, 1] the last run reported."),
    ("thresher_schedule_min_items", "gauge", ("job_type",), "Minimum expected items per run (spec)."),
    ("thresher_schedule_min_quality_ratio", "gauge", ("job_type",), "Minimum acceptable quality rate (spec)."),
    ("thresher_schedule_active_runs", "gauge", (), "Runs in progress."),
    ("thresher_schedule_oldest_active_run_start_timestamp_seconds", "gauge", (),
     "Start of the oldest run in progress; absent when none runs."),
    (BLOCKED_GAUGE, "gauge", ("reason",),
     "Active runs blocked on a cause that will not fix itself, per reason (status.active)."),
    ("thresher_schedule_expected_duration_seconds", "gauge", (),
     "How long a run is expected to take at most (spec timeout, or a default)."),
)
(INFO, SUSPENDED, RUNS, RUN_DURATION, LAST_RUN, LAST_SUCCESS, LAST_FAILURE, NEXT_RUN, CONSECUTIVE_FAILURES,
 FAILURE_THRESHOLD, STALE, STALE_AFTER, LAST_ITEMS, LAST_VALID, LAST_QUALITY, MIN_ITEMS, MIN_QUALITY, ACTIVE_RUNS,
 OLDEST_ACTIVE_START, RUNS_BLOCKED, EXPECTED_DURATION) = range(len(_FAMILIES))
_JOB_TYPED = (LAST_ITEMS, LAST_VALID, LAST_QUALITY, MIN_ITEMS, MIN_QUALITY)
_BUCKET_LE = tuple(floatToGoString(b) for b in (*RUN_DURATION_BUCKETS, float("inf")))

# A series of one schedule: the family's index alone (namespace and schedule are its only
# labels) or (index, *extra label values).
_Series = int | tuple


class _Schedules:
    """The per-schedule series of every schedule, as a prometheus_client collector: per schedule
    one dict ``series -> value`` (a histogram's value is its bucket counts and sum). One lock:
    handler threads write, the HTTP server's thread scrapes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[_SeriesKey, dict[_Series, Any]] = {}

    def set(self, key: _SeriesKey, series: _Series, value: float) -> None:
        with self.lock:
            self.values.setdefault(key, {})[series] = float(value)

    def get(self, key: _SeriesKey, series: _Series) -> Any:
        return self.values.get(key, {}).get(series)

    def drop(self, key: _SeriesKey, series: _Series) -> None:
        with self.lock:
            self.values.get(key, {}).pop(series, None)

    def inc(self, key: _SeriesKey, series: _Series, amount: float = 1.0) -> None:
        with self.lock:
            values = self.values.setdefault(key, {})
            values[series] = values.get(series, 0.0) + amount

    def start(self, key: _SeriesKey, series: _Series) -> None:
        """A counter at 0 unless it exists."""
        with self.lock:
            self.values.setdefault(key, {}).setdefault(series, 0.0)

    def observe(self, key: _SeriesKey, series: _Series, value: float) -> None:
        with self.lock:
            values = self.values.setdefault(key, {})
            counts = values.get(series)
            if counts is None:
                counts = values[series] = [0] * len(_BUCKET_LE) + [0.0]
            counts[bisect_left(RUN_DURATION_BUCKETS, value)] += 1  # le: a value on a bound is in it
            counts[-1] += value

    def forget(self, key: _SeriesKey) -> None:
        with self.lock:
            self.values.pop(key, None)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        with self.lock:
            snapshot = [(key, [(s, list(v) if isinstance(v, list) else v) for s, v in values.items()])
                        for key, values in self.values.items()]
        for key, values in snapshot:
            for series, value in values:
                index, extra = (series, ()) if isinstance(series, int) else (series[0], series[1:])
                labels = [*key, *extra]
                family = families[index]
                if isinstance(value, list):
                    cumulative, buckets = 0, []
                    for le, count in zip(_BUCKET_LE, value[:-1]):
                        cumulative += count
                        buckets.append((le, cumulative))
                    family.add_metric(labels, buckets, value[-1])
                else:
                    family.add_metric(labels, value)
        return iter(families)

    @staticmethod
    def _families() -> list[Metric]:
        kinds = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}
        return [kinds[kind](name, doc, labels=[*_SCHEDULE, *extra]) for name, kind, extra, doc in _FAMILIES]


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
        # Current info labels and job_type per schedule, to drop the old series when they change.
        self._info_labels: dict[_SeriesKey, tuple[str, ...]] = {}
        self._job_type: dict[_SeriesKey, str] = {}
        self._schedules = _Schedules()
        r = self.registry
        r.register(self._schedules)
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
        self.operator_info = Gauge("thresher_operator_info", "The running operator; always 1.", ("version",),
                                   registry=r)
        self.operator_info.labels(version or _package_version()).set(1)
        # With leader election (replicaCount > 1) only the leader runs handlers: a standby
        # exposes this at 0 and no per-schedule series, so sums over replicas never double count.
        self.leader = Gauge("thresher_operator_leader",
                            "1 while this replica runs the handlers (holds the Lease, or no election); 0 on a standby.",
                            registry=r)

    # -- per-schedule bookkeeping ------------------------------------------------

    def _set_or_drop(self, key: _SeriesKey, series: _Series, value: float | None) -> None:
        if value is None:
            self._schedules.drop(key, series)
        else:
            self._schedules.set(key, series, value)

    def _init_runs(self, key: _SeriesKey, job_type: str) -> None:
        # Outcome counters start at 0 so the first failure is an increase
        # Prometheus can see (increase() ignores a series' first sample).
        for outcome in OUTCOMES:
            self._schedules.start(key, (RUNS, job_type, outcome))

    def _switch_job_type(self, key: _SeriesKey, job_type: str) -> None:
        # A schedule edited from one job kind to another must not keep the old
        # kind's thresholds and last-run gauges (they would alert forever).
        old = self._job_type.get(key)
        if old is not None and old != job_type:
            for index in _JOB_TYPED:
                self._schedules.drop(key, (index, old))
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
        self._schedules.inc(key, (RUNS, job_type, outcome))
        if duration_seconds is not None:
            self._schedules.observe(key, (RUN_DURATION, job_type), max(0.0, duration_seconds))
        self._set_or_drop(key, (LAST_ITEMS, job_type), items)
        self._set_or_drop(key, (LAST_VALID, job_type), valid)
        self._set_or_drop(key, (LAST_QUALITY, job_type), quality)
        self._advance(key, LAST_RUN, finished_at)
        self._advance(key, LAST_FAILURE if outcome in FAILED_OUTCOMES else LAST_SUCCESS, finished_at)

    def _advance(self, key: _SeriesKey, index: int, ts: float) -> None:
        current = self._schedules.get(key, index)
        if current is None or ts > current:  # a late-recorded older run must not move time backwards
            self._schedules.set(key, index, ts)

    def set_schedule_state(self, state: ScheduleState) -> None:
        """Write the level state of one schedule; ``None`` removes the series."""
        namespace, schedule, job_type = state.namespace, state.schedule, state.job_type
        key = (namespace, schedule)
        self._switch_job_type(key, job_type)
        self._init_runs(key, job_type)
        info = (job_type, state.cron, state.time_zone, *(state.info_labels or ("",) * len(INFO_LABELS)))
        old_info = self._info_labels.get(key)
        if old_info is not None and old_info != info:
            self._schedules.drop(key, (INFO, *old_info))
        self._info_labels[key] = info
        self._schedules.set(key, (INFO, *info), 1)

        self._set_or_drop(key, SUSPENDED, int(state.suspended))
        self._set_or_drop(key, NEXT_RUN, state.next_run)
        self._set_or_drop(key, LAST_RUN, state.last_run)
        self._set_or_drop(key, LAST_SUCCESS, state.last_success)
        self._set_or_drop(key, LAST_FAILURE, state.last_failure)
        self._set_or_drop(key, CONSECUTIVE_FAILURES, state.consecutive_failures)
        self._set_or_drop(key, FAILURE_THRESHOLD, state.failure_threshold)
        self._set_or_drop(key, STALE, int(state.stale))
        self._set_or_drop(key, STALE_AFTER, state.stale_after_seconds)
        self._set_or_drop(key, (MIN_QUALITY, job_type), state.min_quality)
        self._set_or_drop(key, (MIN_ITEMS, job_type), state.min_items)
        self._set_or_drop(key, ACTIVE_RUNS, state.active_runs)
        self._set_or_drop(key, OLDEST_ACTIVE_START, state.oldest_active_start if state.active_runs > 0 else None)
        self._set_or_drop(key, EXPECTED_DURATION, state.expected_duration_seconds)
        for reason in BLOCKED_REASONS:  # every reason, 0 included: the alert sees it clear
            self._schedules.set(key, (RUNS_BLOCKED, reason), state.blocked.get(reason, 0))

    def forget_schedule(self, *, namespace: str, schedule: str) -> None:
        """Remove every series of a deleted schedule (counters and histograms included)."""
        key = (namespace, schedule)
        self._schedules.forget(key)
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
