"""Whether and when a finished attempt is retried, and failures counted per run: pure (issue 17).

The reconciler calls ``next_step`` when an attempt's Job finishes (and again on every pass while
the run waits: the answer is the same, so a restart neither loses nor doubles a retry). A
``Retry`` that is ``due`` means "create the Job named ``job_name`` now" (AlreadyExists: it was
created before the restart); otherwise requeue at ``at`` and show ``nextAttemptTime`` in status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from thresher.api.retry import RetryPolicy, RunAttempts
from thresher.api.runnames import retry_job_name

CONFIG_EXIT_CODE = 2  # thresher.jobs.harness.ExitCode.CONFIG: the next attempt fails the same way

# Runs that failed to start (issue 13's startupTimeoutSeconds) because of their configuration:
# the next attempt would be blocked on the same cause. A wrong image or tag, a private
# registry without credentials, a missing Secret/ConfigMap/key, a container the runtime cannot
# create from this spec, a pod admission refuses (PriorityClass, quota, Pod Security), a
# missing PVC.
CONFIG_BLOCKED_REASONS = frozenset({
    "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
    "FailedCreate", "UnboundPVC",
})
# Causes outside the run's configuration: capacity may free up, a lost node is replaced.
# Every BlockedReason is in exactly one of the two sets (a unit test checks it).
TRANSIENT_BLOCKED_REASONS = frozenset({"Unschedulable", "NodeLost"})

FAILED_OUTCOMES = frozenset({"Failed", "TimedOut", "FailedToStart", "NodeLost"})


@dataclass(frozen=True)
class Retry:
    """Start attempt ``attempt`` as Job ``job_name`` at ``at`` (now, if ``due``)."""

    attempt: int
    at: datetime
    job_name: str
    due: bool


@dataclass(frozen=True)
class Final:
    """The run is over; ``reason`` says why no further attempt (for the run record's message)."""

    outcome: str
    reason: str


def not_retryable(outcome: str, exit_code: int | None, reason: str | None) -> str | None:
    """Why an attempt that ended like this is never retried, or None when a retry may help."""
    if outcome == "Succeeded":
        return "succeeded"
    if exit_code == CONFIG_EXIT_CODE:
        return "exit code 2: a configuration error, the next attempt would fail the same way"
    if outcome == "FailedToStart" and reason in CONFIG_BLOCKED_REASONS:
        return f"failed to start ({reason}): a configuration problem, the next attempt would be blocked the same way"
    return None


def next_step(policy: RetryPolicy | None, run: RunAttempts, schedule_name: str, now: datetime) -> Retry | Final | None:
    """What follows the run's last attempt: None while it runs, else a Retry or the Final outcome.

    The delay counts from the attempt's completion (``now`` when Kubernetes gave none), so a
    retry never starts while the previous attempt's pods may still be terminating.
    """
    last = run.last
    if last.outcome is None:
        return None
    why = not_retryable(last.outcome, last.exit_code, last.reason)
    if why is not None:
        return Final(last.outcome, why)
    attempts = min(run.max_attempts, policy.attempts) if policy is not None else 1
    if last.attempt >= attempts:
        return Final(last.outcome, f"attempt {last.attempt} of {attempts} failed: no attempts left")
    attempt = last.attempt + 1
    at = (last.completion_time or now) + policy.delay_before(attempt)
    first_start = run.attempts[0].start_time
    if policy.timeout_seconds is not None and first_start is not None \
            and (at - first_start).total_seconds() > policy.timeout_seconds:
        return Final(last.outcome, f"attempt {attempt} would start after retryPolicy.timeoutSeconds="
                     f"{policy.timeout_seconds} from the first attempt")
    return Retry(attempt=attempt, at=at, job_name=retry_job_name(schedule_name, run.first_job, attempt), due=at <= now)


def consecutive_failures(runs_newest_first: list[RunAttempts]) -> int:
    """Failed runs since the last successful one: a run with three failed attempts counts once,
    a run still running or waiting for a retry does not count yet (nor does it break the streak)."""
    count = 0
    for run in runs_newest_first:
        if run.outcome is None:
            continue
        if run.outcome not in FAILED_OUTCOMES:
            break
        count += 1
    return count
