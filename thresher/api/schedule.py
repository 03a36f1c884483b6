"""The ``CollectionSchedule`` API (``thresher.dev/v1alpha1``): the single source of truth.

The CRD in ``manifests/crds/`` is generated from these models (``thresher crd
generate``), so every field carries its description (what ``kubectl explain``
shows) and its constraints (what admission enforces). Cross-field rules are
written twice on purpose: as CEL (``x-kubernetes-validations``, enforced by
the API server) and as pydantic validators (enforced by ``parse_schedule``
for objects that bypassed admission, e.g. created before a CRD upgrade).
Checks that CEL cannot do (an IANA zone that exists, a cron expression that
ever fires) live only here; the operator reports them as ``Ready=False``.

YAML is camelCase; Python attributes are snake_case (``populate_by_name``).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from thresher.api import cron, interval
from thresher.api.alerting_labels import AlertingLabels
from thresher.api.backfill import MAX_BACKFILLED_WINDOWS, Window
from thresher.api.activerun import ActiveRun
from thresher.api.drone import DroneJob
from thresher.api.retry import MAX_ATTEMPTS, AttemptRecord, RetryPolicy, RunAttempts
from thresher.api.names import API_VERSION, KIND
from thresher.api.runresult import RunResult
from thresher.api.tmdb import CUSTOM_NEEDS_SOURCES_CEL, TmdbJob
from thresher.api.timestamp import Timestamp
from thresher.api.timing import ScheduleTimes

# A CronJob's name is at most 52 characters: its Jobs append an 11-character suffix.
MAX_NAME_LENGTH = 52
# Bounded status lists keep the object well below etcd's size limit and CEL cost low: at most
# 20 runs of 10 warnings of 512 characters each is about 100 KiB of warnings per schedule.
MAX_RECENT_RUNS = 20
MAX_ACTIVE_RUNS = 20  # concurrencyPolicy Allow could pile up more; the oldest are listed
MAX_RETRYING = 20  # runs waiting for a retry; beyond this a failed run is final (concurrencyPolicy Allow)
MAX_RESULT_WARNINGS = 10
# Bounds of a run record's free text (a job may report longer text than status holds).
MAX_RUN_REASON, MAX_RUN_MESSAGE, MAX_RESULT_PROBLEM = 256, 1024, 512
# How long a run may stay blocked before it is ended (spec.startupTimeoutSeconds).
DEFAULT_STARTUP_TIMEOUT_SECONDS = 300
# ttlSecondsAfterFinished: a year at most; deleting a schedule is only for one-off schedules.
MAX_TTL_SECONDS = 31_622_400
TTL_NEEDS_ONE_OFF = ("ttlSecondsAfterFinished needs a one-off schedule: runAt without schedule (a recurring "
                     "schedule never finishes)")
# Used when alerting.staleAfterSeconds is unset (and timeoutSeconds is shorter).
DEFAULT_STALE_GRACE_SECONDS = 3600

# Kubernetes resource.Quantity, unsigned (requests and limits are never negative).
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A syntactic check of a cron field list; ranges of values are checked by CEL (below) and cron.py.
_TZ_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"
_C_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

# CEL's RE2 check of the whole schedule: five fields with values in range (names allowed
# where robfig allows them), H terms in minute and hour only, or a macro. Never-firing
# expressions and reversed ranges pass this and are caught by cron.validate_schedule.
_MIN = r"[0-5]?[0-9]"
_HOUR = r"(?:[01]?[0-9]|2[0-3])"
_DOM = r"(?:0?[1-9]|[12][0-9]|3[01])"
_MON = r"(?:0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"
_DOW = r"(?:0?[0-6]|(?i:sun|mon|tue|wed|thu|fri|sat))"


def _cron_field(value: str, hashed: str | None = None) -> str:
    term = rf"(?:[*?]|{value}(?:-{value})?)(?:/[0-9]+)?"
    if hashed is not None:
        term = rf"(?:{term}|H(?:\({hashed}-{hashed}\))?(?:/[0-9]+)?)"
    return rf"{term}(?:,{term})*"


SCHEDULE_REGEX = (
    r"^(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|\s*"
    + r"\s+".join([_cron_field(_MIN, _MIN), _cron_field(_HOUR, _HOUR), _cron_field(_DOM),
                   _cron_field(_MON), _cron_field(_DOW)])
    + r"\s*|" + interval.INTERVAL_PATTERN + r")$"
)
# CEL bounds of an interval (``@every 90m``): Go duration syntax is CEL's duration() syntax, so
# the API server checks the minimum, whole minutes and the maximum itself.
_EVERY = "self.trim().startsWith('@every')"
_EVERY_DURATION = "duration(self.trim().substring(6).trim())"


def _rule(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict:
    """One ``x-kubernetes-validations`` entry; ``field_path`` is JSONPath-like, e.g. ``.subPath``."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _rules(*rules: dict) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class _Spec(BaseModel):
    """Spec models: unknown fields are errors (the API server prunes them anyway)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="forbid")


class _Status(BaseModel):
    """Status models: tolerant on read, so an older operator can read a newer status."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="ignore")


# --- spec ----------------------------------------------------------------------------------------


class Resources(_Spec):
    """Compute resources of the job's container. Requests are what the scheduler reserves."""

    cpu: str = Field(default="100m", max_length=64, pattern=QUANTITY_PATTERN,
                     description="CPU request, a Kubernetes quantity such as 250m or 2.")
    memory: str = Field(default="256Mi", max_length=64, pattern=QUANTITY_PATTERN,
                        description="Memory request, a Kubernetes quantity such as 512Mi or 2Gi.")
    cpu_limit: str | None = Field(default=None, alias="cpuLimit", max_length=64, pattern=QUANTITY_PATTERN,
                                  description="CPU limit; unset: no limit (the container may burst).")
    memory_limit: str | None = Field(
        default=None, alias="memoryLimit", max_length=64, pattern=QUANTITY_PATTERN,
        description="Memory limit; unset: no limit. A container above it is OOM-killed.")
    gpus: int = Field(
        default=0, ge=0, le=16,
        description="NVIDIA GPUs (nvidia.com/gpu limit). Above 0 the pod also tolerates the "
        "nvidia.com/gpu taint and selects GPU nodes.")


class Toleration(_Spec):
    """A taint the job's pod tolerates (core/v1 Toleration)."""

    model_config = ConfigDict(json_schema_extra=_rules(
        _rule("has(self.key) || self.operator == 'Exists'",
              "a toleration without key must use operator Exists"),
        _rule("self.operator != 'Exists' || !has(self.value) || self.value == ''",
              "a toleration with operator Exists must not set value", ".value"),
        _rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
              "tolerationSeconds needs effect NoExecute", ".tolerationSeconds"),
    ))

    key: str | None = Field(default=None, max_length=316, description="Taint key; unset with operator "
                            "Exists tolerates every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches every effect.")
    toleration_seconds: int | None = Field(
        default=None, alias="tolerationSeconds", ge=0,
        description="With NoExecute: how long the pod stays bound after the taint appears; unset: for ever.")

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without key must use operator Exists")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists must not set value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


class Storage(_Spec):
    """An existing PersistentVolumeClaim mounted into the job's container."""

    model_config = ConfigDict(json_schema_extra=_rules(
        _rule("!has(self.subPath) || !self.subPath.matches('(^|/)[.][.](/|$)')",
              "storage.subPath must not contain '..'", ".subPath"),
    ))

    claim_name: str = Field(alias="claimName", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
                            description="Name of a PersistentVolumeClaim in the schedule's namespace.")
    mount_path: str = Field(default="/data", alias="mountPath", max_length=1024, pattern=r"^/[^:]*$",
                            description="Absolute path of the mount inside the container.")
    read_only: bool = Field(default=False, alias="readOnly", description="Mount the volume read-only.")
    sub_path: str | None = Field(default=None, alias="subPath", max_length=1024, pattern=r"^[^/]",
                                 description="Relative path inside the volume to mount instead of its root.")

    @field_validator("sub_path")
    @classmethod
    def _no_parent(cls, value: str | None) -> str | None:
        if value is not None and ".." in value.split("/"):
            raise ValueError("storage.subPath must not contain '..'")
        return value


class Alerting(_Spec):
    """Thresholds behind the schedule's Stale and Failing conditions and Thresher's alert rules."""

    stale_after_seconds: int | None = Field(
        default=None, alias="staleAfterSeconds", ge=0, le=31_622_400,
        description="Grace after a due run before the schedule counts as stale (no success since the "
        "last one plus this). Unset: the larger of timeoutSeconds and 3600.")
    consecutive_failure_threshold: int = Field(
        default=3, alias="consecutiveFailureThreshold", ge=1, le=1000,
        description="Consecutive failed runs that set the Failing condition and fire the alert.")
    min_quality_rate: float | None = Field(
        default=None, alias="minQualityRate", ge=0.0, le=1.0,
        description="Alert when a run's reported quality is below this rate (0..1). Unset: no quality alert.")
    min_items: int | None = Field(
        default=None, alias="minItems", ge=0,
        description="Alert when a successful run reports fewer items than this. Unset: no volume alert.")
    labels: AlertingLabels = Field(
        default_factory=AlertingLabels,
        description="Labels that route this schedule's alerts in Alertmanager (team, owner, tier) and "
        "per-alert severity overrides; exported on thresher_schedule_info and joined in the alert rules.")


class SecretKeySelector(_Spec):
    """A key of a Secret in the schedule's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
                      description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="Key inside the Secret.")


class EnvVarSource(_Spec):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeySelector = Field(alias="secretKeyRef", description="A key of a Secret.")


class EnvVar(_Spec):
    """An environment variable of the container: a literal value or a Secret reference."""

    model_config = ConfigDict(json_schema_extra=_rules(
        _rule("has(self.value) != has(self.valueFrom)", "env entries need exactly one of value or valueFrom"),
    ))

    name: str = Field(min_length=1, max_length=253, pattern=_ENV_NAME, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, alias="valueFrom",
                                            description="Take the value from a Secret key.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("env entries need exactly one of value or valueFrom")
        return self


class ContainerJob(_Spec):
    """Any container image. There is deliberately no way to ask for privileges, host paths or
    host networking: the pod always runs with Thresher's restricted security context."""

    image: str = Field(min_length=1, max_length=1024, pattern=r"^[^\s]+$",
                       description="Container image reference, e.g. ghcr.io/org/collector:1.2.")
    command: list[str] = Field(default_factory=list, max_length=64,
                               description="Entrypoint; empty: the image's ENTRYPOINT.")
    args: list[str] = Field(default_factory=list, max_length=256,
                            description="Arguments; empty: the image's CMD.")
    env: list[EnvVar] = Field(default_factory=list, max_length=128,
                              json_schema_extra={"x-kubernetes-list-type": "map",
                                                 "x-kubernetes-list-map-keys": ["name"]},
                              description="Environment variables (names are unique).")
    working_dir: str | None = Field(default=None, alias="workingDir", max_length=1024, pattern=r"^/",
                                    description="Absolute working directory; unset: the image's WORKDIR.")

    @field_validator("env")
    @classmethod
    def _unique_names(cls, value: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"env names must be unique; repeated: {', '.join(duplicates)}")
        return value


class JobBlock(_Spec):
    """What each run does: exactly one of tmdb, drone or container."""

    model_config = ConfigDict(json_schema_extra=_rules(
        _rule("[has(self.tmdb), has(self.drone), has(self.container)].filter(x, x).size() == 1",
              "job must set exactly one of tmdb, drone or container"),
    ))

    tmdb: TmdbJob | None = Field(
        default=None, description="Collect movie data from TMDB.",
        json_schema_extra=_rules(_rule(CUSTOM_NEEDS_SOURCES_CEL, "tmdb collection custom needs sources")))
    drone: DroneJob | None = Field(
        default=None, description="Process drone images into crop-health indices.",
        json_schema_extra=_rules(_rule(
            "!has(self.primaryIndex) || self.primaryIndex == 'auto' || !has(self.indices) "
            "|| size(self.indices) == 0 || self.primaryIndex in self.indices",
            "drone primaryIndex must be one of indices", ".primaryIndex")))
    container: ContainerJob | None = Field(default=None, description="Run any container image.")

    @model_validator(mode="after")
    def _exactly_one(self) -> JobBlock:
        if sum(x is not None for x in (self.tmdb, self.drone, self.container)) != 1:
            raise ValueError("job must set exactly one of tmdb, drone or container")
        return self

    @property
    def kind(self) -> Literal["tmdb", "drone", "container"]:
        """Which job this block runs."""
        if self.tmdb is not None:
            return "tmdb"
        return "drone" if self.drone is not None else "container"


# The indexes of a fanned-out drone run share its volume (shard files, the merge): an emptyDir per pod
# would give every index its own. Whether the claim can be shared (its access modes) is only known at run
# time: the operator checks it (PrerequisitesMissing, docs/drone.md "Fan-out").
PARALLEL_STORAGE_CEL = ("!has(self.job.drone) || !has(self.job.drone.parallelism) || self.job.drone.parallelism == 1 "
                        "|| (has(self.storage) && !(has(self.storage.readOnly) && self.storage.readOnly))")
PARALLEL_STORAGE_MESSAGE = "job.drone.parallelism above 1 needs writable storage (a claim the indexes share)"


class CollectionScheduleSpec(_Spec):
    """The desired state: when to run which job, with what resources, and when to alert."""

    model_config = ConfigDict(json_schema_extra=_rules(
        _rule("!has(self.job.drone) || !has(self.job.drone.backend) || self.job.drone.backend != 'cuda' "
              "|| (has(self.resources) && has(self.resources.gpus) && self.resources.gpus >= 1)",
              "job.drone.backend cuda needs resources.gpus >= 1", ".resources"),
        _rule(PARALLEL_STORAGE_CEL, PARALLEL_STORAGE_MESSAGE, ".storage"),
        _rule("!has(self.intervalAnchor) || (has(self.schedule) && self.schedule.trim().startsWith('@every'))",
              "intervalAnchor needs an @every schedule (a cron expression has its own phase)", ".intervalAnchor"),
        _rule("has(self.schedule) || has(self.runAt)",
              "set schedule (cron or @every), runAt (one run at that time), or both"),
        _rule("!has(self.ttlSecondsAfterFinished) || (has(self.runAt) && !has(self.schedule))",
              TTL_NEEDS_ONE_OFF, ".ttlSecondsAfterFinished"),
    ))

    schedule: str | None = Field(
        default=None, min_length=1, max_length=256,
        json_schema_extra=_rules(
            _rule("!self.contains('TZ=')",
                  "schedule must not contain CRON_TZ= or TZ=; set spec.timeZone instead"),
            _rule(f"self.matches({SCHEDULE_REGEX!r})",
                  "schedule must be 5 cron fields (minute hour day-of-month month day-of-week) with values "
                  "in range, a macro (@hourly, @daily, @weekly, @monthly, @yearly) or an interval such as "
                  "'@every 90m'; H is allowed only in minute and hour"),
            _rule(f"!{_EVERY} || !self.matches({SCHEDULE_REGEX!r}) || ({_EVERY_DURATION} >= duration('60s') "
                  f"&& {_EVERY_DURATION} <= duration('{int(interval.MAX_INTERVAL.total_seconds())}s') "
                  f"&& {_EVERY_DURATION}.getSeconds() % 60 == 0)",
                  "an @every interval must be whole minutes, at least 1 minute (@every 1m) and at most "
                  "366 days (@every 8784h)"),
        ),
        description="Cron schedule, Kubernetes CronJob syntax: 5 fields or a macro such as @daily; or an "
        "interval, '@every 90m' (h, m and s units adding up to whole minutes, at least 1 minute), elapsed "
        "time from intervalAnchor. Minute and hour may use H, H(a-b), H/n or H(a-b)/n: a value fixed per "
        "schedule from a hash of namespace/name, which spreads many schedules over time (jitter). "
        "Evaluated in timeZone. Unset: only the runAt run.")
    run_at: Timestamp | None = Field(
        default=None, alias="runAt",
        description="One run at this time (RFC 3339 with an offset, on a whole minute), beside the schedule's "
        "own runs or instead of them; it fires once. `thresher run NAME --at TIME` sets it (and refuses a time "
        "further in the past than startingDeadlineSeconds, or 5 minutes without one).")
    ttl_seconds_after_finished: int | None = Field(
        default=None, alias="ttlSecondsAfterFinished", ge=0, le=MAX_TTL_SECONDS,
        description="Only for a one-off schedule (runAt without schedule): the operator deletes the schedule "
        "this long after its run finished (recorded in recentRuns, retries included), like a Job's TTL; its "
        "CronJob and Jobs go with it. Unset: kept for ever.")
    interval_anchor: str | None = Field(
        default=None, alias="intervalAnchor", max_length=64,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|z|[+-][0-9]{2}:[0-9]{2})?$",
        description="Only with an @every schedule: the phase of its runs, which are due at anchor + k x "
        "interval. RFC 3339 (2026-03-01T06:00:00Z) or a local time read in timeZone (2026-03-01T06:00:00), "
        "on a whole minute. Unset: 1970-01-01T00:00 in timeZone.")
    time_zone: str | None = Field(
        default=None, alias="timeZone", max_length=64, pattern=_TZ_PATTERN,
        json_schema_extra=_rules(_rule("self.lowerAscii() != 'local'",
                                       "timeZone must be an IANA name such as Europe/Berlin, not Local")),
        description="IANA time zone of the schedule, e.g. Europe/Berlin. Unset: UTC (the controller's zone).")
    suspend: bool = Field(default=False, description="Stop creating new runs; running ones continue.")
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        default="Forbid", alias="concurrencyPolicy",
        description="When a run is due while the previous one still runs: Allow both, Forbid (skip the "
        "new one) or Replace the old one.")
    starting_deadline_seconds: int | None = Field(
        default=None, alias="startingDeadlineSeconds", ge=10,
        description="A run that could not start within this many seconds of its time is skipped. "
        "Below 10 the CronJob controller may never start it. Unset: no deadline.")
    retries: int = Field(default=0, ge=0, le=10,
                         description="Pod retries within one run (the Job's backoffLimit).")
    retry_policy: RetryPolicy | None = Field(
        default=None, alias="retryPolicy",
        description="Retry a failed run as a new Job after a delay (attempts, delaySeconds, backoffFactor, "
        "maxDelaySeconds, timeoutSeconds); the run is recorded once with its attempts. Never retried: exit "
        "code 2 (a configuration error) and a run that failed to start because of its configuration "
        "(ImagePullBackOff, InvalidImageName, CreateContainerConfigError, CreateContainerError, FailedCreate, "
        "UnboundPVC). Unset: a failed run is final (retries within the Job: spec.retries).")
    timeout_seconds: int | None = Field(
        default=None, alias="timeoutSeconds", ge=1,
        description="Wall-clock limit of one run, retries included (the Job's activeDeadlineSeconds). "
        "Unset: no limit.")
    startup_timeout_seconds: int = Field(
        default=DEFAULT_STARTUP_TIMEOUT_SECONDS, alias="startupTimeoutSeconds", ge=0, le=86400,
        description="A run blocked this long (status.active[].blockedSince: an image that cannot be pulled, "
        "a missing Secret, no node that fits, a lost node) is stopped and recorded as FailedToStart or "
        "NodeLost. 0: never (the run waits for timeoutSeconds, if any).")
    priority_class_name: str | None = Field(
        default=None, alias="priorityClassName", max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
        description="PriorityClass of the job's pods.")
    successful_jobs_history_limit: int = Field(
        default=3, alias="successfulJobsHistoryLimit", ge=0, le=100,
        description="Finished successful Jobs kept by the CronJob.")
    failed_jobs_history_limit: int = Field(
        default=3, alias="failedJobsHistoryLimit", ge=0, le=100,
        description="Failed Jobs kept by the CronJob (logs stay readable).")
    stop_after_consecutive_failures: int | None = Field(
        default=None, alias="stopAfterConsecutiveFailures", ge=1, le=1000,
        description="After this many consecutive failed runs the operator suspends the schedule: no new "
        "runs until the spec changes. Unset: never.")
    resources: Resources = Field(default_factory=Resources, json_schema_extra={"default": {}},
                                 description="CPU, memory and GPU requests and limits.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, alias="nodeSelector", max_length=32,
        description="Node labels the job's pods require (merged with the GPU selector when gpus > 0).")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32,
                                          description="Taints the job's pods tolerate.")
    storage: Storage | None = Field(default=None, description="A PersistentVolumeClaim to mount. Unset: none.")
    service_account_name: str | None = Field(
        default=None, alias="serviceAccountName", max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
        description="ServiceAccount of the job's pods. Unset: the namespace's default; never the operator's.")
    alerting: Alerting = Field(default_factory=Alerting, json_schema_extra={"default": {}},
                               description="When the schedule counts as stale, failing or low quality.")
    job: JobBlock = Field(description="The job each run performs.")

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None or interval.is_interval(value):
            return value  # checked with its anchor and zone in _valid_interval
        problem = cron.validate_schedule(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.lower() == "local":
            raise ValueError("timeZone must be an IANA name such as Europe/Berlin, not Local")
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r} (not in the IANA database)") from err
        return value

    @model_validator(mode="after")
    def _something_to_run(self) -> CollectionScheduleSpec:
        if self.schedule is None and self.run_at is None:
            raise ValueError("set schedule (cron or @every), runAt (one run at that time), or both")
        if self.run_at is not None and self.run_at.second:
            raise ValueError("runAt must be on a whole minute (runs start on whole minutes)")
        return self

    @model_validator(mode="after")
    def _ttl_only_for_one_off(self) -> CollectionScheduleSpec:
        if self.ttl_seconds_after_finished is not None and (self.run_at is None or self.schedule is not None):
            raise ValueError(TTL_NEEDS_ONE_OFF)
        return self

    @model_validator(mode="after")
    def _valid_interval(self) -> CollectionScheduleSpec:
        if interval.is_interval(self.schedule):
            problem = interval.validate_interval(self.schedule, self.interval_anchor, self.time_zone)
            if problem is not None:
                raise ValueError(problem)
        elif self.interval_anchor is not None:
            raise ValueError("intervalAnchor needs an @every schedule (a cron expression has its own phase)")
        return self

    @model_validator(mode="after")
    def _parallel_storage(self) -> CollectionScheduleSpec:
        drone = self.job.drone
        if drone is not None and drone.parallelism > 1 and (self.storage is None or self.storage.read_only):
            raise ValueError(PARALLEL_STORAGE_MESSAGE)
        return self

    @model_validator(mode="after")
    def _gpu_backend(self) -> CollectionScheduleSpec:
        if self.job.drone is not None and self.job.drone.backend == "cuda" and self.resources.gpus < 1:
            raise ValueError("job.drone.backend cuda needs resources.gpus >= 1")
        return self

    def effective_schedule(self, namespace: str, name: str) -> str | None:
        """H terms resolved from ``namespace/name``; an interval with its spaces normalised; None
        without a schedule (only runAt)."""
        if self.schedule is None:
            return None
        if interval.is_interval(self.schedule):
            return " ".join(self.schedule.split())
        return cron.resolve_hashed(self.schedule, seed=f"{namespace}/{name}")

    def times(self, namespace: str, name: str) -> ScheduleTimes | None:
        """The fire times of the schedule, cron or interval alike; None without a schedule (raises
        only for a spec that bypassed validation)."""
        effective = self.effective_schedule(namespace, name)
        if effective is None:
            return None
        return ScheduleTimes.of(effective, self.time_zone, self.interval_anchor)

    def stale_grace(self) -> timedelta:
        """Grace beyond a due run before the schedule is stale (see Alerting.staleAfterSeconds)."""
        if self.alerting.stale_after_seconds is not None:
            return timedelta(seconds=self.alerting.stale_after_seconds)
        return timedelta(seconds=max(DEFAULT_STALE_GRACE_SECONDS, self.timeout_seconds or 0))


# --- status --------------------------------------------------------------------------------------


class ConditionType(StrEnum):
    """The condition types the operator maintains."""

    READY = "Ready"  # the CronJob exists and matches the spec; False with the reason otherwise
    STALE = "Stale"  # no successful run within the expected interval plus grace
    FAILING = "Failing"  # consecutiveFailures reached alerting.consecutiveFailureThreshold
    RUN_BLOCKED = "RunBlocked"  # an active run waits on a cause that will not fix itself (status.active)
    PREREQUISITES_MISSING = "PrerequisitesMissing"  # a PriorityClass, PVC or ServiceAccount of the spec is missing


# FailedToStart / NodeLost: a blocked run ended by the operator after spec.startupTimeoutSeconds.
Outcome = Literal["Succeeded", "Failed", "TimedOut", "FailedToStart", "NodeLost"]


class Condition(_Status):
    """One aspect of the schedule's state (metav1.Condition)."""

    type: str = Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                      r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                      description="Condition type: Ready, Stale, Failing, RunBlocked or PrerequisitesMissing.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                        description="CamelCase reason for the last transition.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: Timestamp = Field(alias="lastTransitionTime",
                                            description="When status last changed.")
    observed_generation: int | None = Field(default=None, alias="observedGeneration", ge=0,
                                            description="metadata.generation this condition was computed from.")


class CronJobRef(_Status):
    """The CronJob the operator manages for this schedule."""

    name: str = Field(max_length=253, description="Name of the CronJob, in the schedule's namespace.")


class RunSummary(_Status):
    """What the job reported about its run (the run-result contract, trimmed)."""

    items: int | None = Field(default=None, ge=0, description="Items collected or processed.")
    valid: int | None = Field(default=None, ge=0, description="Items that passed validation.")
    quality: float | None = Field(default=None, ge=0.0, le=1.0, description="Data-quality rate, 0..1.")
    failed: int | None = Field(default=None, ge=0, description="Items or pages that failed.")
    output: str | None = Field(default=None, max_length=1024, description="Where the output was written.")
    warnings: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list, max_length=MAX_RESULT_WARNINGS,
        description=f"The job's first {MAX_RESULT_WARNINGS} warnings.")
    error: str | None = Field(default=None, max_length=2048, description="Why the run failed, when it did.")

    @classmethod
    def from_result(cls, result: RunResult) -> RunSummary:
        """Trim a job's RunResult to what fits the status."""
        return cls(items=result.items, valid=result.valid, quality=result.quality, failed=result.failed,
                   output=None if result.output is None else result.output[:1024],
                   warnings=[w[:512] for w in result.warnings[:MAX_RESULT_WARNINGS]],
                   error=None if result.error is None else result.error[:2048])


class RunRecord(_Status):
    """One finished run (a Job); status.recentRuns lists them newest first."""

    job_name: str = Field(alias="jobName", max_length=253, description="Name of the Job.")
    manual: bool = Field(default=False, description="Started by hand (kubectl create job --from), not by "
                         "the schedule.")
    backfill: bool = Field(default=False, description="Created by `thresher backfill` for a past fire time "
                           "(scheduledTime); it does not move lastSuccessfulTime, lastFailureTime or "
                           "consecutiveFailures, which describe the schedule's current runs.")
    scheduled_time: Timestamp | None = Field(default=None, alias="scheduledTime",
                                             description="The schedule time the run was created for (its logical "
                                             "time, THRESHER_LOGICAL_TIME for runs the operator created).")
    start_time: Timestamp | None = Field(default=None, alias="startTime", description="When the Job started.")
    completion_time: Timestamp | None = Field(default=None, alias="completionTime",
                                              description="When the Job finished.")
    outcome: Outcome = Field(description="Succeeded, Failed, TimedOut (activeDeadlineSeconds reached), "
                             "FailedToStart (blocked longer than startupTimeoutSeconds) or NodeLost (its node "
                             "went away for that long).")
    duration_seconds: float | None = Field(default=None, alias="durationSeconds", ge=0.0,
                                           description="Completion minus start time.")
    reason: str | None = Field(default=None, max_length=MAX_RUN_REASON, description="Machine-readable reason, "
                               "e.g. BackoffLimitExceeded or DeadlineExceeded.")
    message: str | None = Field(default=None, max_length=MAX_RUN_MESSAGE, description="Human-readable details.")
    result: RunSummary | None = Field(default=None, description="What the job reported, when it did.")
    result_problem: str | None = Field(default=None, alias="resultProblem", max_length=MAX_RESULT_PROBLEM,
                                       description="Why there is no result (missing, not JSON, invalid).")
    exit_code: int | None = Field(default=None, alias="exitCode",
                                  description="Exit code of the job container, when the run failed after it ran.")
    max_attempts: int | None = Field(default=None, alias="maxAttempts", ge=1, le=MAX_ATTEMPTS,
                                     description="With spec.retryPolicy: the attempts the run could have had "
                                     "(the m of attempt n of m).")
    attempts: list[AttemptRecord] = Field(
        default_factory=list, max_length=MAX_ATTEMPTS,
        description="With spec.retryPolicy: each attempt's Job and outcome, first first (jobName is the first "
        "attempt's Job; outcome, reason, message and result are the last attempt's; startTime is the first "
        "attempt's start and completionTime the last one's, delays included).")

    @property
    def attempt_job(self) -> str:
        """The Job this record was made from: a retry attempt's own Job, else ``job_name``."""
        return self.attempts[-1].job_name if self.attempts else self.job_name


class RunStats(_Status):
    """Rolling statistics over status.recentRuns."""

    runs: int = Field(default=0, ge=0, description="Runs in the window.")
    succeeded: int = Field(default=0, ge=0, description="Succeeded runs in the window.")
    failed: int = Field(default=0, ge=0, description="Failed or timed-out runs in the window.")
    success_rate: float | None = Field(default=None, alias="successRate", ge=0.0, le=1.0,
                                       description="succeeded / runs; unset without runs.")
    mean_duration_seconds: float | None = Field(default=None, alias="meanDurationSeconds", ge=0.0,
                                                description="Mean duration of runs with a known duration.")

    @classmethod
    def from_runs(cls, runs: list[RunRecord]) -> RunStats:
        """Statistics over ``runs`` (pure), rounded so a recomputation equals what is stored."""
        succeeded = sum(r.outcome == "Succeeded" for r in runs)
        durations = [r.duration_seconds for r in runs if r.duration_seconds is not None]
        return cls(
            runs=len(runs), succeeded=succeeded, failed=len(runs) - succeeded,
            success_rate=round(succeeded / len(runs), 4) if runs else None,
            mean_duration_seconds=round(sum(durations) / len(durations), 3) if durations else None,
        )


class BackfilledWindow(_Status):
    """A window `thresher backfill` covered: its runs were created (half-open, [from, to))."""

    start: Timestamp = Field(alias="from", description="Start of the window (included).")
    end: Timestamp = Field(alias="to", description="End of the window (excluded).")


class CollectionScheduleStatus(_Status):
    """The observed state, written only by the operator and rebuilt from the Jobs it sees."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration", ge=0,
                                            description="metadata.generation the operator last acted on.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Stale, Failing, RunBlocked and PrerequisitesMissing.")
    cron_job_ref: CronJobRef | None = Field(default=None, alias="cronJobRef", description="The managed CronJob.")
    effective_schedule: str | None = Field(default=None, alias="effectiveSchedule", max_length=256,
                                           description="The schedule with H resolved, as in the CronJob.")
    last_schedule_time: Timestamp | None = Field(default=None, alias="lastScheduleTime",
                                                 description="When a run was last scheduled.")
    last_successful_time: Timestamp | None = Field(default=None, alias="lastSuccessfulTime",
                                                   description="When a run last succeeded.")
    last_failure_time: Timestamp | None = Field(default=None, alias="lastFailureTime",
                                                description="When a run last failed.")
    next_schedule_time: Timestamp | None = Field(default=None, alias="nextScheduleTime",
                                                 description="When the next run is due (unset while suspended).")
    consecutive_failures: int = Field(default=0, alias="consecutiveFailures", ge=0,
                                      description="Failed runs since the last success.")
    last_result: Outcome | None = Field(default=None, alias="lastResult",
                                        description="Outcome of the newest finished run.")
    recent_runs: list[RunRecord] = Field(default_factory=list, alias="recentRuns", max_length=MAX_RECENT_RUNS,
                                         description=f"The newest {MAX_RECENT_RUNS} finished runs, newest first.")
    stats: RunStats | None = Field(default=None, description="Statistics over recentRuns.")
    retrying: list[RunAttempts] = Field(
        default_factory=list, max_length=MAX_RETRYING,
        description="Runs with a failed attempt and another one to come (spec.retryPolicy), oldest first: "
        "their attempts so far and, while waiting in the delay, nextAttemptTime. A run leaves this list for "
        "recentRuns when it is final.")
    active: list[ActiveRun] = Field(default_factory=list, max_length=MAX_ACTIVE_RUNS,
                                    json_schema_extra={"x-kubernetes-list-type": "map",
                                                       "x-kubernetes-list-map-keys": ["name"]},
                                    description="The unfinished runs (Jobs), oldest first: phase, node and, "
                                    "when blocked, the reason and what exactly is wrong.")
    backfilled: list[BackfilledWindow] = Field(
        default_factory=list, max_length=MAX_BACKFILLED_WINDOWS,
        description="The windows `thresher backfill` created runs for, oldest first, overlapping and adjacent "
        f"ones merged; at most {MAX_BACKFILLED_WINDOWS} (beyond that the oldest are dropped). A fire time "
        "in one of them is not backfilled again, even after its Job was cleaned up.")

    def backfilled_windows(self) -> list[Window]:
        """status.backfilled as ``(start, end)`` pairs (what ``backfill.plan_for_spec`` takes as done)."""
        return [(w.start, w.end) for w in self.backfilled]

    def run_jobs(self) -> set[str]:
        """The Jobs of the runs status records, finished or retrying: each run's first Job and its
        attempts' Jobs (what backfill and runAt count as existing)."""
        names = set()
        for run in self.recent_runs:
            names |= {run.job_name, *(a.job_name for a in run.attempts)}
        for waiting in self.retrying:
            names |= {a.job_name for a in waiting.attempts}
        return names


# --- the object ----------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta Thresher reads; the rest is kept as is."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="allow")

    name: str | None = Field(default=None, description="Object name.")
    namespace: str | None = Field(default=None, description="Object namespace.")
    uid: str | None = Field(default=None, description="Object UID.")
    generation: int | None = Field(default=None, description="Spec generation.")
    resource_version: str | None = Field(default=None, alias="resourceVersion", description="Resource version.")
    creation_timestamp: Timestamp | None = Field(default=None, alias="creationTimestamp",
                                                 description="Creation time.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class CollectionSchedule(BaseModel):
    """A scheduled data collection: a CronJob the operator manages, followed run by run."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="ignore")

    api_version: Literal[API_VERSION] = Field(default=API_VERSION, alias="apiVersion",  # type: ignore[valid-type]
                                              description=API_VERSION)
    kind: Literal[KIND] = Field(default=KIND, description=KIND)  # type: ignore[valid-type]
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: CollectionScheduleSpec = Field(description="The desired state.")
    status: CollectionScheduleStatus | None = Field(default=None, description="The observed state.")

    @field_validator("metadata")
    @classmethod
    def _name_fits_cronjob(cls, value: ObjectMeta) -> ObjectMeta:
        if value.name is not None and len(value.name) > MAX_NAME_LENGTH:
            raise ValueError(f"metadata.name must be at most {MAX_NAME_LENGTH} characters (the CronJob "
                             f"shares it), got {len(value.name)}")
        return value


@dataclass(frozen=True)
class SpecInvalid:
    """Why an object's spec is not usable, in human terms (for Ready=False)."""

    messages: tuple[str, ...]
    error: ValidationError | None = None

    @property
    def message(self) -> str:
        return "; ".join(self.messages)


# Pattern mismatches in words instead of the regular expression.
_PATTERN_WORDS = {
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 500m, 2 or 1Gi",
    DNS_SUBDOMAIN_PATTERN: "must be a lowercase DNS name (a-z, 0-9, '-' and '.')",
    _TZ_PATTERN: "must be an IANA time zone name such as Europe/Berlin",
}


def _human(err: ValidationError) -> tuple[str, ...]:
    out = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "string_pattern_mismatch":
            words = _PATTERN_WORDS.get(item.get("ctx", {}).get("pattern", ""))
            msg = f"{item['input']!r} {words}" if words else msg
        out.append(f"{where}: {msg}" if where else msg)
    return tuple(out)


def parse_schedule(body: dict[str, Any]) -> CollectionSchedule | SpecInvalid:
    """Validate a whole CollectionSchedule object as the API server would, and more.

    For the operator, on objects that may have bypassed admission: returns the
    typed object, or ``SpecInvalid`` with one human message per problem, paths in
    camelCase from the object root (``spec.job.tmdb.apiKeySecretRef: Field required``).
    Never raises.
    """
    if not isinstance(body, dict):
        return SpecInvalid((f"object is a {type(body).__name__}, expected a mapping",))
    try:
        return CollectionSchedule.model_validate(body)
    except ValidationError as err:
        return SpecInvalid(_human(err), err)
