"""Retries with a delay, across Jobs (``spec.retryPolicy``), and a run's attempts (issue 17).

A Job's own ``backoffLimit`` retries pods at once-ish (Kubernetes' fixed 10 s doubling). A
``retryPolicy`` retries a failed *run* as a new Job after a delay the schedule chooses (an
upstream outage that lasts ten minutes needs a retry in ten minutes, not five in a minute).
One run then has several attempts: ``recentRuns`` lists it once with ``attempts`` (attempt n of
m, each Job and its outcome), and consecutive failures count runs, not attempts.

``thresher/operator/retries.py`` decides (pure) whether and when a finished attempt is retried;
this module declares the shapes, for the CRD and ``kubectl explain``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from thresher.api.timestamp import Timestamp

MAX_ATTEMPTS = 10
MAX_DELAY_SECONDS = 86_400  # a retry a day later is a new run: that is what the schedule is for
MAX_RETRY_TIMEOUT_SECONDS = 7 * 86_400

# What an attempt ended as: a run record's outcome plus the ends of issue 13's startup timeout.
AttemptOutcome = Literal["Succeeded", "Failed", "TimedOut", "FailedToStart", "NodeLost"]

_CEL = [
    {"rule": "!has(self.timeoutSeconds) || self.delaySeconds <= self.timeoutSeconds",
     "message": "retryPolicy.delaySeconds is beyond retryPolicy.timeoutSeconds: no retry could ever start",
     "fieldPath": ".delaySeconds"},
    {"rule": "!has(self.maxDelaySeconds) || self.maxDelaySeconds >= self.delaySeconds",
     "message": "retryPolicy.maxDelaySeconds must be at least delaySeconds", "fieldPath": ".maxDelaySeconds"},
    {"rule": "!has(self.maxDelaySeconds) || !has(self.timeoutSeconds) || "
             "self.maxDelaySeconds <= self.timeoutSeconds",
     "message": "retryPolicy.maxDelaySeconds is beyond retryPolicy.timeoutSeconds: a capped retry could never "
                "start", "fieldPath": ".maxDelaySeconds"},
]


class RetryPolicy(BaseModel):
    """Retry a failed run as a new Job after a delay, growing by ``backoffFactor`` up to ``maxDelaySeconds``.

    Never retried: a success, exit code 2 (a configuration error: the next attempt fails the
    same way), and a run that failed to start because of its configuration (an image that
    cannot be pulled or named, a missing Secret or key, a missing PVC, a pod admission refuses).
    """

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="forbid", json_schema_extra={"x-kubernetes-validations": _CEL})

    attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS,
                          description="Attempts in all, the first included (1: never retry).")
    delay_seconds: int = Field(default=60, alias="delaySeconds", ge=0, le=MAX_DELAY_SECONDS,
                               description="Wait after a failed attempt finished before starting the next.")
    backoff_factor: float = Field(default=2.0, alias="backoffFactor", ge=1.0, le=10.0,
                                  description="Each further delay is the previous one times this (1: constant).")
    max_delay_seconds: int | None = Field(default=None, alias="maxDelaySeconds", ge=0, le=MAX_DELAY_SECONDS,
                                          description="Cap on one delay. Unset: no cap beyond 86400.")
    timeout_seconds: int | None = Field(default=None, alias="timeoutSeconds", ge=1, le=MAX_RETRY_TIMEOUT_SECONDS,
                                        description="Start no attempt later than this after the first attempt "
                                        "started: the run is final then. Unset: only attempts limits it.")

    @model_validator(mode="after")
    def _delays_fit(self) -> RetryPolicy:
        # The same rules as the CEL above, for objects that bypassed admission and for the CLI.
        if self.timeout_seconds is not None and self.delay_seconds > self.timeout_seconds:
            raise ValueError(f"retryPolicy.delaySeconds ({self.delay_seconds}) is beyond retryPolicy.timeoutSeconds "
                             f"({self.timeout_seconds}): no retry could ever start")
        if self.max_delay_seconds is not None and self.max_delay_seconds < self.delay_seconds:
            raise ValueError(f"retryPolicy.maxDelaySeconds ({self.max_delay_seconds}) must be at least "
                             f"delaySeconds ({self.delay_seconds})")
        if (self.max_delay_seconds is not None and self.timeout_seconds is not None
                and self.max_delay_seconds > self.timeout_seconds):
            raise ValueError(f"retryPolicy.maxDelaySeconds ({self.max_delay_seconds}) is beyond "
                             f"retryPolicy.timeoutSeconds ({self.timeout_seconds}): a capped retry could never start")
        return self

    def delay_before(self, attempt: int) -> timedelta:
        """The wait before attempt ``attempt`` (2, 3, ...): delay x factor^(attempt-2), capped."""
        if attempt < 2:
            raise ValueError("attempt 1 starts when the run does; delays come before attempts 2 and up")
        cap = self.max_delay_seconds if self.max_delay_seconds is not None else MAX_DELAY_SECONDS
        # min() before multiplying further keeps the number small for any factor and attempt.
        seconds = float(self.delay_seconds)
        for _ in range(attempt - 2):
            seconds = min(seconds * self.backoff_factor, cap)
        return timedelta(seconds=min(seconds, cap))


class AttemptRecord(BaseModel):
    """One attempt of a run: its Job and how it ended (``outcome`` unset while it runs)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="ignore")

    attempt: int = Field(ge=1, le=MAX_ATTEMPTS, description="1 for the run's first Job, 2 for the first retry...")
    job_name: str = Field(alias="jobName", max_length=253, description="Name of the attempt's Job.")
    start_time: Timestamp | None = Field(default=None, alias="startTime", description="When the Job started.")
    completion_time: Timestamp | None = Field(default=None, alias="completionTime",
                                              description="When the Job finished.")
    outcome: AttemptOutcome | None = Field(default=None, description="How the attempt ended; unset while it runs.")
    exit_code: int | None = Field(default=None, alias="exitCode",
                                  description="Exit code of the job container, when it ran and ended.")
    reason: str | None = Field(default=None, max_length=256,
                               description="Machine-readable reason: BackoffLimitExceeded, DeadlineExceeded, or "
                               "the blocked reason of a run that failed to start (ImagePullBackOff...).")


class RunAttempts(BaseModel):
    """A run as recentRuns lists it once retries exist: attempt n of m, and the delay in progress."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="ignore")

    logical_time: Timestamp = Field(alias="logicalTime", description="The schedule time the run stands for; "
                                    "every attempt gets it in THRESHER_LOGICAL_TIME.")
    max_attempts: int = Field(alias="maxAttempts", ge=1, le=MAX_ATTEMPTS,
                              description="retryPolicy.attempts when the run started (the m of attempt n of m).")
    attempts: list[AttemptRecord] = Field(min_length=1, max_length=MAX_ATTEMPTS,
                                          description="The attempts so far, first first.")
    next_attempt_time: Timestamp | None = Field(default=None, alias="nextAttemptTime",
                                                description="Set while the run waits in a retry delay: when the "
                                                "next attempt starts.")
    outcome: AttemptOutcome | None = Field(default=None, description="The run's final outcome (its last "
                                           "attempt's); unset while an attempt runs or a retry waits.")
    manual: bool = Field(default=False, description="The run was started by hand (its attempts are too).")
    backfill: bool = Field(default=False, description="The run backfills a past fire time (its attempts too).")
    message: str | None = Field(default=None, max_length=1024,
                                description="Why the last finished attempt failed, in words.")

    @property
    def first_job(self) -> str:
        return self.attempts[0].job_name

    @property
    def waiting(self) -> bool:
        """The last attempt finished and the next one is not created yet (in its delay, or held back)."""
        return self.attempts[-1].outcome is not None

    @property
    def last(self) -> AttemptRecord:
        return self.attempts[-1]
