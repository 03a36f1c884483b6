"""Whether and when a finished attempt is retried, and a run's attempts folded into one record: pure (issue 17).

``next_step`` decides what follows a run's last attempt; it is asked when an attempt's Job
finishes and again on every pass while the run waits (the answer is the same, so a restart
neither loses nor doubles a retry). A ``Retry`` that is ``due`` means "create the Job named
``job_name`` now" (AlreadyExists: it was created before the restart); otherwise look again at
``at``, and ``nextAttemptTime`` shows it in status.

``fold_attempts`` is the status side: the finished Jobs' run records in, ``status.retrying`` (the
runs with another attempt to come) and the records of the runs that are over out. Only those go
on to ``recentRuns``, the failure count and the metrics: a run counts once, however many
attempts it took. Where the runs wait is status itself, so it survives a restart.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from thresher.api.retry import AttemptRecord, RetryPolicy, RunAttempts
from thresher.api.runnames import retry_job_name
from thresher.api.schedule import MAX_RETRYING, MAX_RUN_MESSAGE, RunRecord

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
    if policy is None:
        return Final(last.outcome, f"attempt {last.attempt} failed and spec.retryPolicy is unset: no further attempts")
    attempts = min(run.max_attempts, policy.attempts)
    if last.attempt >= attempts:
        return Final(last.outcome, f"attempt {last.attempt} of {attempts} failed: no attempts left")
    attempt = last.attempt + 1
    at = (last.completion_time or now) + policy.delay_before(attempt)
    first_start = run.attempts[0].start_time
    # A due retry starts now, which may be later than ``at`` (held back by concurrencyPolicy,
    # suspend, or an operator that was down): the timeout counts the start it would really have.
    if policy.timeout_seconds is not None and first_start is not None \
            and (max(at, now) - first_start).total_seconds() > policy.timeout_seconds:
        return Final(last.outcome, f"attempt {attempt} would start after retryPolicy.timeoutSeconds="
                     f"{policy.timeout_seconds} from the first attempt")
    return Retry(attempt=attempt, at=at, job_name=retry_job_name(schedule_name, run.first_job, attempt), due=at <= now)




@dataclass(frozen=True)
class AttemptsFolded:
    """``retrying``: status.retrying after the fold, oldest first. ``final``: the records of the runs
    that are over, for recentRuns. ``scheduled``: runs whose next attempt was newly scheduled."""

    retrying: tuple[RunAttempts, ...]
    final: tuple[RunRecord, ...]
    scheduled: tuple[RunAttempts, ...] = ()


def fold_attempts(retrying: Sequence[RunAttempts], records: Sequence[RunRecord], recorded: Collection[str],
                  policy: RetryPolicy | None, schedule_name: str, now: datetime,
                  created: Sequence[tuple[str, int, str]] = ()) -> AttemptsFolded:
    """Fold finished Jobs' records (``records``) and retry Jobs just created (``created``: first
    Job, attempt, Job) into the retrying runs, and decide each waiting run again.

    ``recorded``: the first Jobs of the runs already in recentRuns (their records are old news).
    A run's first attempt with a ``policy`` starts a ``RunAttempts``; without one it is final as
    it is (a schedule without retryPolicy records exactly what it did before). Idempotent: a
    record of an attempt already folded changes nothing.
    """
    runs = {run.first_job: run for run in retrying}
    final: list[RunRecord] = []
    last_raw: dict[str, RunRecord] = {}
    for record in records:
        number = record.attempts[0].attempt if record.attempts else 1
        run = runs.get(record.job_name)
        if record.job_name in recorded:
            continue  # the run is over and recorded
        if run is not None:
            if any(a.attempt == number and a.outcome is not None for a in run.attempts):
                continue  # this attempt is folded already
            runs[record.job_name] = _with_attempt(run, _attempt_of(record, number, now), record.message)
        elif record.attempts or policy is None or len(runs) >= MAX_RETRYING:
            final.append(record)  # no retries (or an attempt of a run status lost): final as it is
            continue
        else:
            runs[record.job_name] = RunAttempts(
                logical_time=record.scheduled_time or record.start_time or now, max_attempts=policy.attempts,
                attempts=[_attempt_of(record, 1, now)], manual=record.manual, backfill=record.backfill,
                message=record.message)
        last_raw[record.job_name] = record
    for first, number, job_name in created:
        run = runs.get(first)
        if run is not None and not any(a.attempt >= number for a in run.attempts):
            runs[first] = _with_attempt(run, AttemptRecord(attempt=number, job_name=job_name), run.message)
    still, scheduled = [], []
    for first, run in runs.items():
        step = next_step(policy, run, schedule_name, now) if run.waiting else None
        if isinstance(step, Final):
            raw = last_raw.get(first)
            final.append(final_record(run, step, raw if raw is not None and raw.attempt_job == run.last.job_name
                                      else None))
            continue
        at = step.at if isinstance(step, Retry) else None
        if at != run.next_attempt_time:
            if at is not None and run.next_attempt_time is None:
                scheduled.append(run.model_copy(update={"next_attempt_time": at}))
            run = run.model_copy(update={"next_attempt_time": at})
        still.append(run)
    return AttemptsFolded(tuple(still), tuple(final), tuple(scheduled))


def final_record(run: RunAttempts, step: Final, raw: RunRecord | None) -> RunRecord:
    """The one record of a run that is over: the run's first Job, its attempts, the last attempt's
    outcome and details (``raw``: the last attempt's own record, when at hand)."""
    first, last = run.attempts[0], run.last
    start, end = first.start_time, last.completion_time
    failed = step.outcome != "Succeeded"
    message = (raw.message if raw is not None else None) or run.message
    if failed:
        message = f"{message}; {step.reason}" if message else step.reason
    base = raw or RunRecord(job_name=run.first_job, outcome=step.outcome)
    return base.model_copy(update={
        "job_name": run.first_job, "manual": run.manual, "backfill": run.backfill,
        "scheduled_time": run.logical_time, "start_time": start, "completion_time": end,
        "outcome": step.outcome,
        "duration_seconds": round(max(0.0, (end - start).total_seconds()), 3) if start and end else None,
        "reason": last.reason if failed else None, "message": message[:MAX_RUN_MESSAGE] if failed else None,
        "exit_code": last.exit_code if failed else None,
        "max_attempts": run.max_attempts, "attempts": list(run.attempts)})


def _attempt_of(record: RunRecord, number: int, now: datetime) -> AttemptRecord:
    """The attempt a finished Job's record stands for; without a completion time it ended ``now``
    (the delay counts from a fixed time, so the retry's due time does not move with the clock)."""
    attempt = record.attempts[0] if record.attempts else AttemptRecord(
        attempt=number, job_name=record.job_name, start_time=record.start_time,
        completion_time=record.completion_time, outcome=record.outcome, exit_code=record.exit_code,
        reason=record.reason)
    return attempt if attempt.completion_time is not None else attempt.model_copy(update={"completion_time": now})


def _with_attempt(run: RunAttempts, attempt: AttemptRecord, message: str | None) -> RunAttempts:
    """``run`` with ``attempt`` put in its place (an earlier entry of that number without outcome replaced)."""
    attempts = sorted([a for a in run.attempts if a.attempt != attempt.attempt] + [attempt], key=lambda a: a.attempt)
    return run.model_copy(update={"attempts": attempts, "next_attempt_time": None,
                                  "message": message if attempt.outcome not in (None, "Succeeded") else run.message})
