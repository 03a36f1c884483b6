"""Retries with delay across Jobs: the policy's validation and the pure decision (issue 17)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from thresher.api.activerun import BLOCKED_REASONS
from thresher.api.retry import MAX_DELAY_SECONDS, AttemptRecord, RetryPolicy, RunAttempts
from thresher.api.runnames import retry_job_name
from thresher.api.schedule import RunRecord
from thresher.operator.retries import (
    CONFIG_BLOCKED_REASONS,
    TRANSIENT_BLOCKED_REASONS,
    Final,
    Retry,
    fold_attempts,
    next_step,
)

T0 = datetime(2026, 5, 10, 6, 0, tzinfo=UTC)


def attempt(n: int, outcome: str | None, *, exit_code: int | None = None, reason: str | None = None,
            start: datetime = T0, end: datetime | None = None) -> AttemptRecord:
    return AttemptRecord(attempt=n, jobName=f"s-{n}", startTime=start, completionTime=end, outcome=outcome,
                         exitCode=exit_code, reason=reason)


def run(*attempts: AttemptRecord, max_attempts: int = 3, outcome: str | None = None) -> RunAttempts:
    return RunAttempts(logicalTime=T0, maxAttempts=max_attempts, attempts=list(attempts), outcome=outcome)


POLICY = RetryPolicy(attempts=3, delaySeconds=600, backoffFactor=2.0, maxDelaySeconds=900)


# --- the policy ---------------------------------------------------------------------------------


def test_delays_grow_by_the_factor_up_to_the_cap():
    assert [POLICY.delay_before(n).total_seconds() for n in (2, 3, 4, 5)] == [600, 900, 900, 900]
    constant = RetryPolicy(delaySeconds=30, backoffFactor=1)
    assert {constant.delay_before(n).total_seconds() for n in range(2, 11)} == {30}
    with pytest.raises(ValueError):
        POLICY.delay_before(1)


@given(delay=st.integers(0, MAX_DELAY_SECONDS), factor=st.floats(1.0, 10.0), attempt=st.integers(2, 10_000))
def test_a_delay_never_exceeds_the_cap_and_never_shrinks(delay, factor, attempt):
    policy = RetryPolicy(delaySeconds=delay, backoffFactor=factor)
    assert policy.delay_before(2).total_seconds() == delay
    assert policy.delay_before(attempt) <= timedelta(seconds=MAX_DELAY_SECONDS)
    assert policy.delay_before(attempt) >= policy.delay_before(max(2, attempt - 1))


@pytest.mark.parametrize(("fields", "message"), [
    ({"delaySeconds": 600, "timeoutSeconds": 300},
     "retryPolicy.delaySeconds (600) is beyond retryPolicy.timeoutSeconds (300): no retry could ever start"),
    ({"delaySeconds": 600, "maxDelaySeconds": 60},
     "retryPolicy.maxDelaySeconds (60) must be at least delaySeconds (600)"),
    ({"delaySeconds": 60, "maxDelaySeconds": 3600, "timeoutSeconds": 1800},
     "retryPolicy.maxDelaySeconds (3600) is beyond retryPolicy.timeoutSeconds (1800): a capped retry could never "
     "start"),
])
def test_delays_beyond_the_timeout_are_refused_with_a_message(fields, message):
    """Pins: a retry that can never start (delay past the retry timeout) must be refused, not accepted silently."""
    with pytest.raises(ValidationError) as err:
        RetryPolicy(**fields)
    assert err.value.errors()[0]["msg"] == f"Value error, {message}"


@pytest.mark.parametrize(("fields", "loc"), [
    ({"attempts": 0}, "attempts"), ({"attempts": 11}, "attempts"), ({"delaySeconds": -1}, "delaySeconds"),
    ({"delaySeconds": 86_401}, "delaySeconds"), ({"backoffFactor": 0.5}, "backoffFactor"),
    ({"retries": 3}, "retries"),
])
def test_field_bounds(fields, loc):
    with pytest.raises(ValidationError) as err:
        RetryPolicy(**fields)
    assert err.value.errors()[0]["loc"] == (loc,)


def test_the_cel_rules_are_in_the_schema_for_admission():
    rules = RetryPolicy.model_json_schema()["x-kubernetes-validations"]
    assert [r["fieldPath"] for r in rules] == [".delaySeconds", ".maxDelaySeconds", ".maxDelaySeconds"]


# --- the decision -------------------------------------------------------------------------------


def test_a_failed_attempt_is_retried_after_the_delay_from_its_completion():
    end = T0 + timedelta(minutes=5)
    r = run(attempt(1, "Failed", exit_code=3, end=end))
    step = next_step(POLICY, r, "s", now=end + timedelta(minutes=1))
    assert step == Retry(attempt=2, at=end + timedelta(minutes=10), job_name=retry_job_name("s", "s-1", 2), due=False)
    assert next_step(POLICY, r, "s", now=end + timedelta(minutes=10)).due
    # Asked again after a restart: the same answer, the same Job name (AlreadyExists, never a second Job).
    assert next_step(POLICY, r, "s", now=end + timedelta(minutes=11)).job_name == step.job_name


def test_the_second_retry_waits_longer_and_the_last_attempt_is_final():
    r = run(attempt(1, "Failed", end=T0), attempt(2, "TimedOut", end=T0 + timedelta(minutes=20)))
    step = next_step(POLICY, r, "s", now=T0 + timedelta(minutes=20))
    assert isinstance(step, Retry) and step.attempt == 3 and step.at == T0 + timedelta(minutes=35)
    r = run(*r.attempts, attempt(3, "Failed", exit_code=1, end=T0 + timedelta(minutes=40)))
    assert next_step(POLICY, r, "s", now=T0 + timedelta(hours=1)) == Final(
        "Failed", "attempt 3 of 3 failed: no attempts left")


@pytest.mark.parametrize(("last", "why"), [
    (attempt(1, "Succeeded", end=T0), "succeeded"),
    (attempt(1, "Failed", exit_code=2, end=T0),
     "exit code 2: a configuration error, the next attempt would fail the same way"),
    (attempt(1, "FailedToStart", reason="CreateContainerConfigError", end=T0),
     "failed to start (CreateContainerConfigError): a configuration problem, the next attempt would be blocked "
     "the same way"),
])
def test_successes_and_configuration_errors_are_never_retried(last, why):
    """Pins: exit code 2 and config-caused FailedToStart must not burn attempts (issue 17)."""
    step = next_step(POLICY, run(last), "s", now=T0 + timedelta(hours=1))
    assert step == Final(last.outcome, why)


@pytest.mark.parametrize("last", [
    attempt(1, "FailedToStart", reason="Unschedulable", end=T0),
    attempt(1, "NodeLost", reason="NodeLost", end=T0),
    attempt(1, "Failed", exit_code=3, end=T0),  # upstream failed after the job's own retries
    attempt(1, "Failed", exit_code=137, end=T0),  # OOM-killed
])
def test_transient_failures_are_retried(last):
    assert isinstance(next_step(POLICY, run(last), "s", now=T0), Retry)


def test_every_blocked_reason_is_classified_exactly_once():
    assert CONFIG_BLOCKED_REASONS | TRANSIENT_BLOCKED_REASONS == set(BLOCKED_REASONS)
    assert not CONFIG_BLOCKED_REASONS & TRANSIENT_BLOCKED_REASONS


def test_no_policy_or_a_running_attempt_means_no_retry():
    assert next_step(POLICY, run(attempt(1, None)), "s", now=T0) is None
    assert next_step(None, run(attempt(1, "Failed", end=T0)), "s", now=T0) == Final(
        "Failed", "attempt 1 failed and spec.retryPolicy is unset: no further attempts")


def test_the_retry_timeout_ends_the_run():
    policy = RetryPolicy(attempts=5, delaySeconds=600, backoffFactor=1, timeoutSeconds=1800)
    r = run(attempt(1, "Failed", start=T0, end=T0 + timedelta(minutes=15)), max_attempts=5)
    assert isinstance(next_step(policy, r, "s", now=T0), Retry)  # starts at 25 min: inside
    r = run(attempt(1, "Failed", start=T0, end=T0 + timedelta(minutes=25)), max_attempts=5)
    assert next_step(policy, r, "s", now=T0) == Final(
        "Failed", "attempt 2 would start after retryPolicy.timeoutSeconds=1800 from the first attempt")


def test_a_retry_held_back_past_the_timeout_is_final():
    """A due retry starts now: held back (suspend, Forbid, operator down) past the timeout, it never starts."""
    policy = RetryPolicy(attempts=5, delaySeconds=600, backoffFactor=1, timeoutSeconds=1800)
    r = run(attempt(1, "Failed", start=T0, end=T0 + timedelta(minutes=5)), max_attempts=5)
    assert next_step(policy, r, "s", now=T0 + timedelta(minutes=29)).due
    assert isinstance(next_step(policy, r, "s", now=T0 + timedelta(minutes=31)), Final)


# --- folding attempts into runs ---------------------------------------------------------------


def record(job: str, outcome: str, *, end: datetime, attempt_no: int = 1, first: str = "s-100",
           exit_code: int | None = None, message: str | None = None) -> RunRecord:
    """A finished Job's record as runs.run_record gives it (a retry Job's carries its run's first Job)."""
    failed = outcome != "Succeeded"
    fields = dict(job_name=job, scheduled_time=T0, start_time=end - timedelta(minutes=1), completion_time=end,
                  outcome=outcome, duration_seconds=60.0, exit_code=exit_code if failed else None,
                  reason="BackoffLimitExceeded" if failed else None, message=message)
    if attempt_no > 1:
        fields.update(job_name=first, attempts=[AttemptRecord(
            attempt=attempt_no, job_name=job, start_time=end - timedelta(minutes=1), completion_time=end,
            outcome=outcome, exit_code=exit_code if failed else None,
            reason="BackoffLimitExceeded" if failed else None)])
    return RunRecord(**fields)


def test_a_failed_run_waits_then_its_retry_is_folded_into_one_record():
    policy = RetryPolicy(attempts=3, delaySeconds=600)
    end1 = T0 + timedelta(minutes=1)
    waiting = fold_attempts([], [record("s-100", "Failed", end=end1, exit_code=3, message="upstream 503")], set(),
                            policy, "s", now=end1)
    assert waiting.final == () and len(waiting.retrying) == 1
    run1 = waiting.retrying[0]
    assert (run1.first_job, run1.next_attempt_time, run1.max_attempts) == ("s-100", end1 + timedelta(minutes=10), 3)
    assert waiting.scheduled == (run1,)
    # The same record again (a restart before the Job was marked): nothing changes, no new Event.
    again = fold_attempts(waiting.retrying, [record("s-100", "Failed", end=end1, exit_code=3)], set(), policy, "s",
                          now=end1 + timedelta(minutes=2))
    assert again.retrying == waiting.retrying and again.final == () and again.scheduled == ()
    # The retry's Job was created: attempt 2 runs, nothing waits.
    job2 = retry_job_name("s", "s-100", 2)
    running = fold_attempts(waiting.retrying, [], set(), policy, "s", now=end1 + timedelta(minutes=10),
                            created=[("s-100", 2, job2)])
    assert [(a.attempt, a.job_name, a.outcome) for a in running.retrying[0].attempts] == [
        (1, "s-100", "Failed"), (2, job2, None)]
    assert running.retrying[0].next_attempt_time is None
    # Attempt 2 succeeds: one run, final, with both attempts; nothing retrying any more.
    end2 = end1 + timedelta(minutes=12)
    done = fold_attempts(running.retrying, [record(job2, "Succeeded", end=end2, attempt_no=2)], set(), policy, "s",
                         now=end2)
    assert done.retrying == () and len(done.final) == 1
    final = done.final[0]
    assert (final.job_name, final.outcome, final.max_attempts, final.scheduled_time) == ("s-100", "Succeeded", 3, T0)
    assert [(a.attempt, a.job_name, a.outcome) for a in final.attempts] == [
        (1, "s-100", "Failed"), (2, job2, "Succeeded")]
    assert final.start_time == T0 and final.completion_time == end2 and final.duration_seconds == 780.0


def test_the_last_failed_attempt_makes_one_failed_run_with_the_reason():
    policy = RetryPolicy(attempts=2, delaySeconds=0)
    end1 = T0 + timedelta(minutes=1)
    job2 = retry_job_name("s", "s-100", 2)
    first = fold_attempts([], [record("s-100", "Failed", end=end1, exit_code=1)], set(), policy, "s", now=end1)
    assert first.retrying[0].next_attempt_time == end1  # delay 0: due at once
    folded = fold_attempts(first.retrying, [record(job2, "Failed", end=end1 + timedelta(minutes=2), attempt_no=2,
                                                   exit_code=1, message="exit code 1 (Error)")],
                           set(), policy, "s", now=end1 + timedelta(minutes=2))
    (final,) = folded.final
    assert final.outcome == "Failed" and final.exit_code == 1 and len(final.attempts) == 2
    assert final.message == "exit code 1 (Error); attempt 2 of 2 failed: no attempts left"


def test_exit_code_2_is_final_at_once_and_without_a_policy_records_are_unchanged():
    policy = RetryPolicy(attempts=3, delaySeconds=60)
    config = record("s-100", "Failed", end=T0, exit_code=2)
    folded = fold_attempts([], [config], set(), policy, "s", now=T0)
    assert folded.retrying == () and folded.final[0].attempts[0].exit_code == 2
    assert "exit code 2: a configuration error" in folded.final[0].message
    plain = fold_attempts([], [config], set(), None, "s", now=T0)
    assert plain.final == (config,)
    assert fold_attempts([], [config], {"s-100"}, policy, "s", now=T0).final == ()  # recorded already


def test_a_waiting_run_is_final_when_the_policy_is_removed():
    policy = RetryPolicy(attempts=3, delaySeconds=600)
    waiting = fold_attempts([], [record("s-100", "Failed", end=T0, exit_code=1)], set(), policy, "s", now=T0)
    folded = fold_attempts(waiting.retrying, [], set(), None, "s", now=T0 + timedelta(minutes=1))
    assert folded.retrying == () and folded.final[0].outcome == "Failed"
    assert folded.final[0].message.endswith("spec.retryPolicy is unset: no further attempts")


@given(crash=st.integers(0, 5), outcomes=st.lists(st.sampled_from(["Failed", "Succeeded"]), min_size=1, max_size=4))
def test_replaying_any_prefix_after_a_restart_never_doubles_an_attempt_or_a_run(crash, outcomes):
    """Restart-safety: the records of every Job seen so far replayed against the status at any
    point give the same retrying runs and final records (idempotent folds)."""
    policy = RetryPolicy(attempts=4, delaySeconds=0)
    now, retrying, finals, seen = T0, (), [], []
    for n, outcome in enumerate(outcomes, start=1):
        job = "s-100" if n == 1 else retry_job_name("s", "s-100", n)
        if n > 1:
            if not retrying:
                break
            retrying = fold_attempts(retrying, [], set(), policy, "s", now, created=[("s-100", n, job)]).retrying
        now += timedelta(minutes=1)
        seen.append(record(job, outcome, end=now, attempt_no=n, exit_code=1))
        folded = fold_attempts(retrying, seen[-1:], {f.job_name for f in finals}, policy, "s", now)
        retrying, finals = folded.retrying, finals + list(folded.final)
        if n == crash:  # a restart replays everything seen so far
            replay = fold_attempts(retrying, seen, {f.job_name for f in finals}, policy, "s", now)
            assert replay.retrying == retrying and replay.final == ()
    assert len(finals) <= 1 and len(retrying) + len(finals) == 1
    if finals:
        assert [a.attempt for a in finals[0].attempts] == list(range(1, len(finals[0].attempts) + 1))
