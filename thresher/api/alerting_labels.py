"""``spec.alerting.labels``: labels that route a schedule's alerts (issue 17).

They reach Prometheus through one info-style series per schedule,
``thresher_schedule_info{namespace, schedule, team, owner, ...} 1``, that every per-schedule
alert rule joins with ``* on (namespace, schedule) group_left (...)``; Alertmanager then routes
by ``team`` like by any label.

The keys are a fixed set, not free text, because PromQL's ``group_left`` must name the labels it
copies: a key the rules do not list would be accepted and silently never reach an alert. A
fixed set also keeps the metric's label set static (bounded cardinality: one series per
schedule whatever users write). Two kinds of keys:

* routing labels (``ROUTING_KEYS``): copied onto every alert of the schedule; values are short
  Kubernetes-label-like words, so they are safe in Alertmanager matchers;
* severity overrides (``SEVERITY_KEYS``): ``warning`` or ``critical`` for one alert, e.g.
  ``consecutiveFailuresSeverity: critical`` makes ThresherConsecutiveFailures page for this
  schedule (its default is ``warning``: a page for every schedule that fails twice is not kind).

YAML keys are camelCase like the rest of the spec; ``PROMETHEUS_LABELS`` gives each one's label
name on the metric (snake_case, as Prometheus labels are).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import RootModel, field_validator

# Routing labels: YAML key -> Prometheus label.
ROUTING_KEYS: dict[str, str] = {"team": "team", "owner": "owner", "tier": "tier"}
# Severity overrides: YAML key -> (Prometheus label, the alert it overrides, its default severity).
SEVERITY_KEYS: dict[str, tuple[str, str, str]] = {
    "consecutiveFailuresSeverity": ("consecutive_failures_severity", "ThresherConsecutiveFailures", "warning"),
    "staleSeverity": ("stale_severity", "ThresherScheduleStale", "critical"),
    "runFailedSeverity": ("run_failed_severity", "ThresherRunFailed", "warning"),
}
PROMETHEUS_LABELS: dict[str, str] = {**ROUTING_KEYS, **{k: v[0] for k, v in SEVERITY_KEYS.items()}}
# The label names of thresher_schedule_info beyond namespace and schedule, in a fixed order.
INFO_LABELS: tuple[str, ...] = tuple(PROMETHEUS_LABELS.values())
SEVERITIES = ("warning", "critical")

MAX_LABELS = len(PROMETHEUS_LABELS)
MAX_VALUE_LENGTH = 63  # as a Kubernetes label value
# Prometheus' label-name syntax (names starting with __ are reserved to Prometheus itself).
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# Labels the series and alerts already carry, or Alertmanager routes on: a schedule may not set them.
RESERVED = frozenset({"namespace", "schedule", "job", "instance", "job_type", "outcome", "reason", "le",
                      "quantile", "alertname", "severity"})

# For the CRD: the same bounds, enforced by the API server.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Labels for routing this schedule's alerts (Alertmanager matches on them). Keys: "
                   + ", ".join(ROUTING_KEYS) + " (a short word each), and the severity overrides "
                   + ", ".join(SEVERITY_KEYS) + " (warning or critical).",
    "maxProperties": MAX_LABELS,
    "properties": {
        **{k: {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_LENGTH, "pattern": VALUE.pattern,
               "description": f"Routing label {v} on every alert of this schedule (letters, digits, '-', '_', "
                              f"'.'; at most {MAX_VALUE_LENGTH})."}
           for k, v in ROUTING_KEYS.items()},
        **{k: {"type": "string", "enum": list(SEVERITIES),
               "description": f"Severity of {alert} for this schedule: warning or critical (default {default})."}
           for k, (_, alert, default) in SEVERITY_KEYS.items()},
    },
    "additionalProperties": False,
}


def label_problem(key: object, value: object) -> str | None:
    """What is wrong with one ``alerting.labels`` entry, in one line, or None."""
    if not isinstance(key, str) or not LABEL_NAME.match(key) or key.startswith("__"):
        return (f"alerting.labels: {key!r} is not a valid Prometheus label name (letters, digits and _, not "
                "starting with a digit or __)")
    if key in RESERVED:
        return f"alerting.labels: {key!r} is reserved (Thresher sets it on every alert)"
    if key not in PROMETHEUS_LABELS:
        return (f"alerting.labels: {key!r} is not supported; use {', '.join(ROUTING_KEYS)} for routing or "
                f"{', '.join(SEVERITY_KEYS)} to override a severity")
    if not isinstance(value, str):
        return f"alerting.labels.{key}: the value must be a string"
    if key in SEVERITY_KEYS:
        if value not in SEVERITIES:
            return f"alerting.labels.{key}: {value!r} is not a severity; use warning or critical"
        return None
    if len(value) > MAX_VALUE_LENGTH or not VALUE.match(value):
        return (f"alerting.labels.{key}: {value[:80]!r} must be 1-{MAX_VALUE_LENGTH} letters, digits, '-', '_' or "
                "'.', starting and ending with a letter or digit")
    return None


class AlertingLabels(RootModel[dict[str, str]]):
    """``spec.alerting.labels``, validated (``Alerting.labels`` in ``schedule.py``)."""

    root: dict[str, str] = {}

    model_config = {"json_schema_extra": SCHEMA}

    @field_validator("root", mode="before")
    @classmethod
    def _check(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("alerting.labels must be a map of label to value")
        for key, item in value.items():
            problem = label_problem(key, item)
            if problem is not None:
                raise ValueError(problem)
        return value

    def info_labels(self) -> dict[str, str]:
        """The labels of this schedule's ``thresher_schedule_info`` series beyond namespace and
        schedule: every name in ``INFO_LABELS``, "" where unset (Prometheus treats an empty label as
        absent, and a fixed set keeps the series' identity stable)."""
        return {PROMETHEUS_LABELS[k]: self.root.get(k, "") for k in PROMETHEUS_LABELS}
