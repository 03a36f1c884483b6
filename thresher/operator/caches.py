"""What the operator remembers between events, beside its logic: caches and cron memoisation.

None of it is the record (status is rebuilt from the Jobs and CronJobs observed); it saves API
calls and CPU at thousands of schedules (docs/benchmarks.md). Each cache is keyed by
(namespace, schedule), and ``Caches.forget`` drops a deleted schedule from all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from thresher.api import cron
from thresher.operator.runs import finished_condition, parse_time

Key = tuple[str, str]  # (namespace, schedule); a CronJob has its schedule's name


def key_of(body: dict) -> Key:
    return body["metadata"].get("namespace"), body["metadata"].get("name")


@dataclass
class Caches:
    # Start times of running Jobs per schedule, kept from Job events, so the "run too long"
    # metric needs no extra API call per refresh.
    active_starts: dict[Key, dict[str, float]] = field(default_factory=dict)
    # The CronJobs as the watch last showed them (name, uid, status only): refreshes read
    # these instead of GETting each CronJob every 60 s per schedule.
    cronjobs: dict[Key, dict] = field(default_factory=dict)
    # Per CronJob, the generation and labels this process applied or found matching its
    # schedule: a CronJob event with the same ones needs no GET of the schedule to compare.
    in_sync: dict[Key, InSync] = field(default_factory=dict)
    # Schedules with a finished Job whose recording failed (API unreachable): a Job event is
    # not delivered again, so the schedule's next resync lists its Jobs and records them.
    unrecorded: set[Key] = field(default_factory=set)
    # The schedules as the watch last showed them, slimmed (``slim_schedule``) and kept as
    # compact JSON (1.4 KiB instead of 6.5 KiB of dicts per schedule; decoded once a minute by
    # the resync): the periodic resync walks these, instead of kopf keeping a timer task and a
    # full body per schedule.
    schedules: dict[Key, bytes] = field(default_factory=dict)
    fire_times: FireTimes = field(default_factory=lambda: FireTimes())
    # The unfinished Jobs and the Pods of each schedule as their watches last showed them
    # (slimmed): status.active is classified from these, so a schedule without an unfinished
    # Job costs no API call at all. Job name -> Job; Pod name -> Pod.
    jobs: dict[Key, dict[str, dict]] = field(default_factory=dict)
    pods: dict[Key, dict[str, dict]] = field(default_factory=dict)
    # Nodes read for the active runs' pods, with the monotonic time they were read (None: gone).
    nodes: dict[str, tuple[float, dict | None]] = field(default_factory=dict)
    # Events of an active run's Pod or Job, keyed (namespace, object name), with the time they
    # were read (``Reconciler._events``); entries older than their age are dropped as it grows.
    events: dict[tuple[str, str], tuple[datetime, list[dict]]] = field(default_factory=dict)
    _events_prune_at: int = 256
    # Schedules to look at again soon, with the monotonic time when: a run without a pod whose
    # events are worth reading, a blocked run whose startup timeout runs out.
    soon: dict[Key, float] = field(default_factory=dict)

    def keep_schedule(self, body: dict) -> None:
        self.schedules[key_of(body)] = json.dumps(slim_schedule(body), separators=(",", ":")).encode()

    def schedule(self, key: Key) -> dict | None:
        """The schedule as last watched (slim, a fresh copy), or None if not known."""
        kept = self.schedules.get(key)
        return None if kept is None else json.loads(kept)

    def remember_events(self, key: tuple[str, str], now: datetime, events: list[dict], max_age: timedelta) -> None:
        self.events[key] = (now, events)
        if len(self.events) >= self._events_prune_at:  # amortised: at most one scan per doubling
            self.events = {k: v for k, v in self.events.items() if now - v[0] < max_age}
            self._events_prune_at = max(256, 2 * len(self.events))

    def observe_cronjob(self, cronjob: dict, deleted: bool = False) -> None:
        key = key_of(cronjob)
        if deleted:
            self.cronjobs.pop(key, None)
            self.in_sync.pop(key, None)
        else:
            self.cronjobs[key] = slim_cronjob(cronjob)

    def observe_job(self, key: Key, job: dict, deleted: bool = False) -> None:
        """Track the schedule's unfinished Jobs, and since when each runs."""
        running = self.active_starts.setdefault(key, {})
        name = job["metadata"]["name"]
        start = parse_time((job.get("status") or {}).get("startTime"))
        unfinished = not deleted and finished_condition(job) is None
        if unfinished and start is not None:
            running[name] = start.timestamp()
        else:
            running.pop(name, None)
        if unfinished:
            self.jobs.setdefault(key, {})[name] = slim_job(job)
        else:
            self.jobs.get(key, {}).pop(name, None)
            pods = self.pods.get(key, {})
            for pod in [p for p, body in pods.items() if _job_of(body) == name]:
                pods.pop(pod)  # its pods matter no more (a late pod event is ignored below)

    def observe_pod(self, key: Key, pod: dict, deleted: bool = False) -> bool:
        """Keep a live Pod of the schedule (terminal ones do not count for ``active_run``, so
        only running pods take memory); True when its Job is unfinished (worth a refresh). A
        pod seen before its Job is kept: the Job's event may come second."""
        name = pod["metadata"]["name"]
        pods = self.pods.setdefault(key, {})
        if deleted or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            pods.pop(name, None)
        else:
            pods[name] = slim_pod(pod)
        return _job_of(pod) in self.jobs.get(key, {})

    def unfinished(self, key: Key) -> list[tuple[dict, list[dict]]]:
        """The schedule's unfinished Jobs, each with its Pods, as last watched."""
        jobs = self.jobs.get(key) or {}
        pods = list((self.pods.get(key) or {}).values())
        return [(job, [p for p in pods if _job_of(p) == name]) for name, job in jobs.items()]

    def running_since(self, key: Key) -> tuple[float, ...]:
        return tuple(self.active_starts.get(key, {}).values())

    def forget(self, key: Key) -> None:
        self.schedules.pop(key, None)
        self.active_starts.pop(key, None)
        self.cronjobs.pop(key, None)
        self.in_sync.pop(key, None)
        self.jobs.pop(key, None)
        self.pods.pop(key, None)
        self.soon.pop(key, None)


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods


def _job_of(pod: dict) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(JOB_NAME_LABEL)


def slim_job(job: dict) -> dict:
    """What ``activeruns.active_run`` and a stop read of a Job: name, times, annotations, status."""
    meta = job["metadata"]
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations", "creationTimestamp")
                         if k in meta},
            "status": dict(job.get("status") or {})}


def slim_pod(pod: dict) -> dict:
    """What ``activeruns.active_run`` reads of a Pod: its node, claims and status."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "labels", "creationTimestamp",
                                              "deletionTimestamp") if k in meta},
            "spec": {"nodeName": spec.get("nodeName"),
                     "volumes": [v for v in spec.get("volumes") or [] if v.get("persistentVolumeClaim")]},
            "status": dict(pod.get("status") or {})}


class FireTimes:
    """``cron.next_run`` and ``cron.expected_interval`` at ``now``, remembered per expression.

    Both are the same for every ``now`` from the moment they were computed up to (excluding)
    the next fire time: no fire time lies in between. So a refresh every 60 s recomputes them
    once per fire instead of each time (the interval's backward search is most of a refresh's
    CPU). Exact, not an approximation; thread-safe because entries are replaced whole."""

    MAX_ENTRIES = 100_000  # distinct (expression, zone) pairs; cleared beyond, never wrong

    def __init__(self) -> None:
        self._window: dict[tuple[str, str | None], tuple[datetime, datetime, timedelta | None]] = {}

    def _lookup(self, expr: str, tz: str | None, now: datetime) -> tuple[datetime | None, timedelta | None]:
        hit = self._window.get((expr, tz))
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[1], hit[2]
        upcoming = cron.next_run(expr, tz, now)
        interval = expected_interval(expr, tz, now, upcoming) if upcoming is not None else None
        if upcoming is not None:
            if len(self._window) >= self.MAX_ENTRIES:
                self._window.clear()
            self._window[(expr, tz)] = (now, upcoming, interval)
        return upcoming, interval

    def next_run(self, expr: str, tz: str | None, now: datetime) -> datetime | None:
        return self._lookup(expr, tz, now)[0]

    def expected_interval(self, expr: str, tz: str | None, now: datetime) -> timedelta | None:
        return self._lookup(expr, tz, now)[1]


def expected_interval(expr: str, tz: str | None, now: datetime, upcoming: datetime) -> timedelta | None:
    """``cron.expected_interval(expr, tz, now)`` given its next fire time, usually in 3-4 cron
    steps instead of a backward bisection: for a schedule as regular as its next gap, the last
    fire time lies within that gap before ``now``. Irregular cases take the general search."""
    following = cron.next_run(expr, tz, upcoming)
    window = max(timedelta(minutes=1), following - upcoming) if following else timedelta(minutes=1)
    for _ in range(3):
        fires = cron.missed_runs(expr, tz, now - window, now, limit=8)
        if 0 < len(fires) < 8:
            return upcoming - fires[-1]
        if fires:  # many fire times in the window: not worth stepping through
            break
        window *= 2
    return cron.expected_interval(expr, tz, now)


@dataclass(frozen=True)
class InSync:
    generation: int | None
    labels: tuple[tuple[str, str], ...]


def in_sync_marker(cronjob: dict, schedule_labels: dict) -> InSync:
    return InSync(cronjob["metadata"].get("generation"), tuple(sorted(schedule_labels.items())))


def slim_cronjob(cronjob: dict) -> dict:
    """The part of a CronJob a refresh reads (name, uid, status), so thousands stay small."""
    meta = cronjob["metadata"]
    return {"metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "status": dict(cronjob.get("status") or {})}


SLIM_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp",
                 "deletionTimestamp", "labels")


def slim_schedule(body: dict) -> dict:
    """The part of a schedule a refresh reads: metadata without managedFields and annotations
    (kopf's diff base repeats the whole spec there), spec and status. Under half of the
    object, and the full bodies are not kept alive."""
    meta = body["metadata"]
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {k: meta[k] for k in SLIM_METADATA if k in meta},
            "spec": body.get("spec"), "status": body.get("status")}


def cronjob_needs_check(event_type: str | None, cronjob: dict, known: InSync | None) -> bool:
    """Whether a CronJob event may mean drift, worth reading the schedule to compare.

    The spec changes only with ``metadata.generation``, and labels are compared directly, so
    an event with the generation and labels this process applied (or already verified) is the
    CronJob controller updating status or our own apply echoing back. A CronJob this process
    has not applied yet is left to its schedule's create/resume handler, which applies the
    desired state anyway."""
    if event_type == "DELETED":
        return True
    if known is None:
        return False
    labels = cronjob["metadata"].get("labels") or {}
    return (cronjob["metadata"].get("generation") != known.generation
            or any(labels.get(k) != v for k, v in known.labels))
