"""The operator's shortcuts at scale give the same answers as the long way round."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from thresher.api import cron
from thresher.operator.reconciler import (
    FireTimes, InSync, cronjob_needs_check, expected_interval, in_sync_marker, slim_cronjob,
)

EXPRS = ("17 3 * * *", "5 2 * * 1-5", "0 0 * * 0", "0 0 1 * *", "12 4 1 * *", "30 4 * * *",
         "*/15 0-1 1 1 *", "21 9 15 * *", "0 0 29 2 *", "* * * * *", "*/5 9-17 * * 1-5", "30 2 * * *")
ZONES = (None, "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata")


def test_expected_interval_matches_the_general_search():
    """Pins: the forward-stepping shortcut must equal cron.expected_interval everywhere,
    DST changes, weekday gaps, leap days and sub-hour bursts included."""
    rng = random.Random(7)
    for _ in range(300):
        expr, tz = rng.choice(EXPRS), rng.choice(ZONES)
        now = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
        upcoming = cron.next_run(expr, tz, now)
        assert expected_interval(expr, tz, now, upcoming) == cron.expected_interval(expr, tz, now), (expr, tz, now)


@pytest.mark.parametrize("expr", ["17 3 * * *", "*/15 0-1 1 1 *", "5 2 * * 1-5"])
def test_fire_times_are_reused_only_until_the_next_fire(expr):
    times = FireTimes()
    start = datetime(2026, 3, 28, 23, 0, tzinfo=timezone.utc)
    for minutes in range(0, 3 * 24 * 60, 37):  # across a DST change in Berlin
        now = start + timedelta(minutes=minutes)
        assert times.next_run(expr, "Europe/Berlin", now) == cron.next_run(expr, "Europe/Berlin", now)
        assert times.expected_interval(expr, "Europe/Berlin", now) == cron.expected_interval(expr, "Europe/Berlin", now)


def cronjob(generation=3, labels=None):
    return {"metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": generation,
                         "labels": labels if labels is not None else {"thresher.dev/schedule": "s", "x": "y"}},
            "spec": {"schedule": "0 * * * *"}, "status": {"lastScheduleTime": "2026-11-22T10:00:00Z"}}


def test_cronjob_events_worth_a_schedule_read():
    mine = in_sync_marker(cronjob(), {"thresher.dev/schedule": "s"})
    assert mine == InSync(3, (("thresher.dev/schedule", "s"),))
    assert not cronjob_needs_check("MODIFIED", cronjob(), mine)  # status update or our own apply
    assert cronjob_needs_check("MODIFIED", cronjob(generation=4), mine)  # spec edited by someone
    assert cronjob_needs_check("MODIFIED", cronjob(labels={"thresher.dev/schedule": "t"}), mine)
    assert cronjob_needs_check("DELETED", cronjob(), mine)
    assert cronjob_needs_check("DELETED", cronjob(), None)
    assert not cronjob_needs_check(None, cronjob(), None)  # not applied here yet: its schedule's handler will


def test_slim_cronjob_keeps_what_a_refresh_reads():
    slim = slim_cronjob(cronjob())
    assert slim == {"metadata": {"name": "s", "namespace": "ns", "uid": "u"},
                    "status": {"lastScheduleTime": "2026-11-22T10:00:00Z"}}
