"""The timestamp type of status fields: RFC 3339 in UTC at second precision, like metav1.Time.

Its own module so that both the schedule's status (``schedule.py``) and the models it nests
(``activerun.py``) use it without importing each other in a circle.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def utc_seconds(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (RFC 3339, e.g. 2025-01-01T00:00:00Z)")
    return value.astimezone(UTC).replace(microsecond=0)  # metav1.Time has whole seconds


Timestamp = Annotated[
    datetime,
    AfterValidator(utc_seconds),
    PlainSerializer(lambda v: v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), return_type=str, when_used="json"),
]
