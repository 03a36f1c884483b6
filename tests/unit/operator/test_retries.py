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
from thresher.operator.retries import (
    CONFIG_BLOCKED_REASONS,
    TRANSIENT_BLOCKED_REASONS,
    Final,
    Retry,
    consecutive_failures,
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
        "Failed", "attempt 1 of 1 failed: no attempts left")


def test_the_retry_timeout_ends_the_run():
    policy = RetryPolicy(attempts=5, delaySeconds=600, backoffFactor=1, timeoutSeconds=1800)
    r = run(attempt(1, "Failed", start=T0, end=T0 + timedelta(minutes=15)), max_attempts=5)
    assert isinstance(next_step(policy, r, "s", now=T0), Retry)  # starts at 25 min: inside
    r = run(attempt(1, "Failed", start=T0, end=T0 + timedelta(minutes=25)), max_attempts=5)
    assert next_step(policy, r, "s", now=T0) == Final(
        "Failed", "attempt 2 would start after retryPolicy.timeoutSeconds=1800 from the first attempt")


def test_consecutive_failures_count_runs_not_attempts():
    failed_thrice = run(attempt(1, "Failed"), attempt(2, "Failed"), attempt(3, "Failed"), outcome="Failed")
    waiting = run(attempt(1, "Failed"), outcome=None)
    ok = run(attempt(1, "Failed"), attempt(2, "Succeeded"), outcome="Succeeded")
    assert consecutive_failures([waiting, failed_thrice, failed_thrice, ok, failed_thrice]) == 2
    assert consecutive_failures([ok, failed_thrice]) == 0
    assert consecutive_failures([]) == 0
