"""CPU of the operator's status path for one schedule with 20 recorded runs, API faked in memory.

* refresh: ``Reconciler.refresh`` of a schedule whose status is current (the once-a-minute
  resync of every schedule; nothing to write);
* record: ``Reconciler.record_job`` of a finished Job (one run folded in and written).

Only the operator's own code runs (parse, desired status, patch, metrics): API latency is not
part of it. It uses the Reconciler's public methods only, so the same file measures another
checkout for a ratio in the same run:

    PYTHONPATH=/path/to/other/checkout python benchmarks/status_bench.py   # baseline
    PYTHONPATH=. python benchmarks/status_bench.py
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta, timezone

from thresher.operator.metrics import OperatorMetrics
from thresher.operator.reconciler import Reconciler

NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=timezone.utc)
RUNS = 20


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def recorded_runs(n: int) -> list[dict]:
    """Runs as stored, newest first; each with a small result."""
    out = []
    for i in range(n):
        end = _stamp(NOW - timedelta(hours=i + 1))
        out.append({"jobName": f"s-{i}", "manual": False, "scheduledTime": end, "startTime": end,
                    "completionTime": end, "outcome": "Succeeded", "durationSeconds": 12.5,
                    "result": {"items": 100, "valid": 99, "quality": 0.99, "warnings": ["w"] * 3}})
    return out


class MemoryKube:
    """The calls the status path makes, against one schedule held in memory."""

    def __init__(self, body: dict):
        self.body, self.calls, self.writes = body, 0, 0

    def get_cronjob(self, namespace, name):
        self.calls += 1
        return {"metadata": {"name": name, "namespace": namespace, "uid": "c"},
                "status": {"lastScheduleTime": "2026-11-22T11:00:00Z"}}

    def get_schedule(self, namespace, name):
        self.calls += 1
        return self.body

    def job_pods(self, namespace, name):
        self.calls += 1
        return []

    def patch_status(self, namespace, name, fields, resource_version=None):
        self.calls += 1
        self.writes += 1
        self.body = {**self.body, "status": {**self.body["status"], **fields}}
        return self.body

    def annotate_job(self, *args):
        self.calls += 1

    def post_event(self, *args):
        self.calls += 1


def schedule() -> dict:
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": {"schedule": "H * * * *", "timeZone": "Europe/Berlin",
                     "job": {"container": {"image": "busybox"}}},
            "status": {"recentRuns": recorded_runs(RUNS)}}


def finished_job(i: int) -> dict:
    end = _stamp(NOW + timedelta(seconds=i))
    return {"metadata": {"name": f"s-new{i}", "namespace": "ns", "labels": {"thresher.dev/schedule": "s"},
                         "creationTimestamp": end},
            "status": {"startTime": end, "completionTime": end,
                       "conditions": [{"type": "Complete", "status": "True"}]}}


def measure(step, reps: int = 7, per_rep: int = 200) -> float:
    """Median CPU microseconds of one ``step(i)`` over ``reps`` batches."""
    samples, i = [], 0
    for _ in range(reps):
        start = time.process_time()
        for _ in range(per_rep):
            i += 1
            step(i)
        samples.append((time.process_time() - start) / per_rep * 1e6)
    return statistics.median(samples)


def main() -> None:
    clock = [NOW]
    kube = MemoryKube(schedule())
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: clock[0])
    rec.refresh(kube.body)
    rec.refresh(kube.body)  # settled: the stored status is what the operator wants
    kube.calls = kube.writes = 0

    def refresh(i: int) -> None:
        clock[0] = NOW + timedelta(seconds=i % 60)
        rec.refresh(kube.body)

    refresh_us = measure(refresh)
    refresh_writes = kube.writes
    kube.calls = kube.writes = 0

    def record(i: int) -> None:
        clock[0] = NOW + timedelta(seconds=i)
        assert rec.record_job(finished_job(i)) is not None

    record_us = measure(record, per_rep=100)
    print(json.dumps({"refresh_us": round(refresh_us, 1), "refresh_writes": refresh_writes,
                      "record_us": round(record_us, 1), "record_api_calls": kube.calls / 700,
                      "record_writes": kube.writes / 700}))


if __name__ == "__main__":
    main()
