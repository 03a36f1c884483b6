"""The operator's shortcuts at scale give the same answers as the long way round."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from thresher.api import cron
from thresher.api.schedule import parse_schedule
from thresher.operator.builders import JobImages, build_cronjob
from thresher.operator.metrics import OperatorMetrics
from thresher.operator.caches import (
    FireTimes, InSync, cronjob_needs_check, expected_interval, in_sync_marker, slim_cronjob, slim_schedule,
)
from thresher.operator.reconciler import Reconciler

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


def full_schedule(**meta):
    """A schedule as the watch delivers it: managedFields and kopf's diff-base annotation."""
    spec = {"schedule": "H 3 * * *", "timeZone": "Europe/Berlin",
            "job": {"container": {"image": "busybox:1.36", "command": ["true"]}}}
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u-1", "generation": 2,
                         "resourceVersion": "42", "creationTimestamp": "2026-11-20T10:00:00Z",
                         "labels": {"team": "data"},
                         "annotations": {"kopf.thresher.dev/last-handled-configuration": json.dumps({"spec": spec})},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}], **meta},
            "spec": spec,
            "status": {"consecutiveFailures": 1, "lastSuccessfulTime": "2026-11-21T02:03:00Z"}}


def test_slim_schedule_keeps_what_a_refresh_reads():
    """Pins: the resync works on slim copies, so they must parse and build exactly as the full
    object does, and keep the resourceVersion its compare-and-swap write uses."""
    full = full_schedule()
    slim = slim_schedule(full)
    assert "managedFields" not in slim["metadata"] and "annotations" not in slim["metadata"]
    assert slim["metadata"]["resourceVersion"] == "42" and slim["status"] == full["status"]
    parsed = parse_schedule(slim)
    assert (parsed.spec, parsed.status) == (parse_schedule(full).spec, parse_schedule(full).status)
    assert build_cronjob(slim, parsed, JobImages()) == build_cronjob(full, parse_schedule(full), JobImages())
    assert len(json.dumps(slim)) < len(json.dumps(full))


class FakeKube:
    """Records the calls a resync makes; the CronJob starts missing (deleted by hand)."""

    def __init__(self):
        self.calls = []

    def get_cronjob(self, namespace, name):
        self.calls.append(("get_cronjob", name))
        return None

    def apply_cronjob(self, body):
        self.calls.append(("apply_cronjob", body["metadata"]["name"]))
        return {**body, "metadata": {**body["metadata"], "uid": "cj-1", "generation": 1}}

    def list_jobs(self, namespace, selector):
        self.calls.append(("list_jobs", selector))
        return []

    def patch_status(self, namespace, name, fields, resource_version=None):
        self.calls.append(("patch_status", resource_version))
        return {"metadata": {"namespace": namespace, "name": name}, "status": fields}


def test_resync_refreshes_known_schedules_from_their_slim_copy():
    """Pins what the per-schedule kopf timer did, now one loop: a deleted CronJob restored, a
    deferred recording retried, next run and conditions written; nothing for schedules that are
    unknown or being deleted."""
    now = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
    kube = FakeKube()
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: now)
    rec.resync("ns", "s")
    rec.observe_schedule(full_schedule(deletionTimestamp="2026-11-22T11:59:00Z"))
    rec.resync("ns", "s")
    assert kube.calls == []

    rec.observe_schedule(full_schedule())
    rec.caches.unrecorded.add(("ns", "s"))
    rec.resync("ns", "s")
    assert kube.calls == [("list_jobs", "thresher.dev/schedule=s"), ("get_cronjob", "s"),
                          ("apply_cronjob", "s"), ("patch_status", "42")]
    assert rec.caches.unrecorded == set()
    rec.forget("ns", "s")
    assert rec.caches.schedules == {}


def test_memory_dump_names_allocation_sites_and_types(tmp_path):
    """The opt-in THRESHER_TRACEMALLOC dump (how docs/benchmarks.md found the per-schedule cost)."""
    import tracemalloc

    from thresher.operator import memdebug

    tracemalloc.start(memdebug.FRAMES)
    try:
        kept = [{"n": i} for i in range(1000)]  # something to find
        memdebug.dump(tmp_path / "dump.txt")
        assert len(kept) == 1000
    finally:
        tracemalloc.stop()
    text = (tmp_path / "dump.txt").read_text()
    assert "VmHWM" in text and "== top lines" in text and "== object types" in text
    assert "test_scale_helpers.py" in text


def test_bounded_session_keeps_kopfs_credentials_and_caps_connections(tmp_path):
    """Cluster-wide, kopf gets a session of at most KOPF_CONNECTIONS connections that carries
    the same server, token and CA as kopf's own login would."""
    import asyncio
    import ssl

    import kopf

    from thresher.devcluster import pki
    from thresher.operator.cli import KOPF_CONNECTIONS, bounded_session

    pki.ensure_pki(tmp_path)
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", scheme="Bearer", token="t0k3n",
                               ca_path=str(tmp_path / "ca.crt"), default_namespace="ns")

    async def check():
        creds = bounded_session(info, KOPF_CONNECTIONS)
        try:
            assert isinstance(creds, kopf.AiohttpSession)
            assert (creds.server, creds.default_namespace) == (info.server, "ns")
            session = creds.aiohttp_session
            assert session.connector.limit == KOPF_CONNECTIONS > 3  # above the 3 watch streams
            assert session.headers["Authorization"] == "Bearer t0k3n"
            assert isinstance(session.connector._ssl, ssl.SSLContext)
            assert session.connector._ssl.verify_mode == ssl.CERT_REQUIRED
        finally:
            await creds.aiohttp_session.close()

    asyncio.run(check())
