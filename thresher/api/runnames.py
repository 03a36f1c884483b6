"""Deterministic Job names for the runs the operator creates itself (issue 17).

The name is a function of what the run is for, so creating it twice creates one Job (the
second create answers AlreadyExists): that is what makes firing, backfill and retries
idempotent across operator restarts. Like the CronJob controller (and
``thresher/operator/builders.py``'s manual runs) every suffix is at most 11 characters, so a
schedule name within the CronJob limit of 52 characters always gives a valid Job name (63).

* a due time (interval or ``runAt``): ``NAME-<minutes since the epoch>``, exactly the name the
  CronJob controller gives the Job of that schedule time, so a due time fired by the operator
  and one fired by the CronJob can never both run;
* a backfilled logical time: ``NAME-b<minutes since the epoch>`` (its own namespace of names: a
  backfill of a time whose scheduled Job still exists is still one new run, asked for by hand);
* a retry: ``NAME-r<9 hex of SHA-256(first Job name, attempt)>``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from thresher.api.names import LOGICAL_TIME_ANNOTATION, LOGICAL_TIME_ENV  # noqa: F401 - re-exported

MAX_SCHEDULE_NAME = 52  # CronJob name limit: Kubernetes appends 11 characters for its Jobs
MAX_JOB_NAME = 63  # a Job's name becomes a label value on its pods


def _minutes(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("a run's time must be timezone-aware")
    return int(t.timestamp()) // 60


def scheduled_job_name(schedule: str, due: datetime) -> str:
    """The Job of a due time: the CronJob controller's own ``getJobName``."""
    return f"{schedule}-{_minutes(due)}"


def backfill_job_name(schedule: str, logical_time: datetime) -> str:
    """The Job that backfills one logical time."""
    return f"{schedule}-b{_minutes(logical_time)}"


def retry_job_name(schedule: str, first_job: str, attempt: int) -> str:
    """The Job of attempt ``attempt`` (2, 3, ...) of the run whose first attempt was ``first_job``."""
    if attempt < 2:
        raise ValueError("attempt 1 is the run's own Job; retries are attempts 2 and up")
    digest = hashlib.sha256(f"{first_job}\x00{attempt}".encode()).hexdigest()[:9]
    return f"{schedule}-r{digest}"


# The logical time of a run: the schedule time it stands for (its due time, its backfilled
# time, or the first attempt's time for a retry). Jobs get it in this variable, in RFC 3339 UTC,
# so a payload can compute its data window from it instead of from the clock (the TMDB
# ``changes`` collection does); the operator puts the same value on the Job as an annotation.
# (LOGICAL_TIME_ENV and LOGICAL_TIME_ANNOTATION live in thresher/api/names.py.)


def format_logical_time(t: datetime) -> str:
    """``2026-05-01T06:00:00Z``: the value of THRESHER_LOGICAL_TIME and of the annotation."""
    if t.tzinfo is None:
        raise ValueError("a run's time must be timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(value: str, what: str) -> datetime:
    """An RFC 3339 time with an offset, in UTC; ValueError with one line naming ``what`` otherwise."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} is not an RFC 3339 time with an offset, such as 2026-05-01T06:00:00Z "
                         "or 2026-05-01T08:00:00+02:00")
    return parsed.astimezone(UTC)


def parse_logical_time(value: str) -> datetime:
    """The inverse of ``format_logical_time`` (any offset accepted)."""
    return parse_instant(value, LOGICAL_TIME_ENV)
