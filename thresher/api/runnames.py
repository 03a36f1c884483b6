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
from datetime import datetime

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
