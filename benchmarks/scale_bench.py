"""The operator at scale and under kill -9, on a private local control plane.

Scenarios (each size runs them in this order; ``--scenarios`` picks a subset):

  baseline    the same CronJobs the operator would build, server-side applied straight to the
              API server by ``--threads`` client threads, the operator stopped: the API server's
              own cost of the CronJobs
  alone       the same N CollectionSchedules (bodies, threads, watchers) created with the operator
              stopped: the API server's own cost of the creates. "alone + baseline" is the floor
              every create-path figure is given as a ratio to
  create      N CollectionSchedules created by ``--threads`` client threads; time until every
              CronJob exists and every schedule is Ready, create->CronJob latency percentiles
              (from watch receive times), operator CPU seconds and peak RSS (/proc); API requests
              by verb and resource (the API server's ``apiserver_request_total``) and the watch
              events of schedules and CronJobs, so the operator's share is "create - alone"

``--repeat R`` runs baseline, alone and create R times, interleaved (each create on a freshly
started operator), and adds their medians; the later scenarios use the last create's schedules.
  kopf-floor-event, kopf-floor-create (only when named)
              a bare kopf operator (kopf_floor.py: no-op handlers, on.event only or also
              on.create) while the benchmark itself creates each schedule, applies its CronJob
              and writes one status, the events Thresher's create path makes: kopf's own floor
  steady      nothing changes for ``--steady-seconds``: operator CPU and status writes (the
              per-schedule 60 s timers must not be a busy loop nor rewrite status)
  restart     (only when named; after burst) the operator stopped, one finished and recorded Job per schedule
              created (``spec.managedBy`` keeps the Job controller off them), the operator
              started again: peak RSS, CPU and API requests until it has been idle for 5 s
  burst       run-now on every schedule; kwok completes the pods; time until every run is in
              status AND in /metrics, none twice
  kill-storm  N more schedules created, the operator is kill -9'd a third of the way in and
              restarted: exactly one CronJob per schedule, every schedule Ready
  kill-burst  run-now on those, kill -9 a third of the way through the recording, restart:
              every run recorded exactly once, every Job marked recorded

Usage (starts and stops its own cluster in --state-dir; never point it at the shared one):

  .venv/bin/python benchmarks/scale_bench.py --sizes 1000 --json /tmp/scale.json
  .venv/bin/python benchmarks/scale_bench.py --sizes 1000 --scenarios baseline,alone,create --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opcost import Cost, per, subtract  # noqa: E402
from scalelib import (  # noqa: E402
    GROUP_PATH, Api, Operator, Profile, Recorder, Watch, parallel, runs_in_metrics, schedule_body, summary,
    wait_until,
)

from thresher.api.schedule import parse_schedule  # noqa: E402
from thresher.devcluster.cluster import DevCluster  # noqa: E402
from thresher.operator.builders import JobImages, build_cronjob  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROFILE_DIR: Path | None = None  # --profile: py-spy records of the operators during create
SCENARIOS = ("baseline", "alone", "create", "steady", "burst", "kill-storm", "kill-burst")
# only when named: "restart" (after burst: schedules with a run from it get no extra Job)
OPTIONAL = ("kopf-floor-event", "kopf-floor-create")  # only when named in --scenarios


def names_for(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


def schedules_path(ns: str, name: str = "") -> str:
    return f"{GROUP_PATH}/namespaces/{ns}/collectionschedules" + (f"/{name}" if name else "")


def fresh_namespace(api: Api, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:5]}"
    api.create_namespace(ns)
    api.wait_service_account(ns)
    return ns


def watchers(api: Api, ns: str, rec: Recorder) -> list[Watch]:
    ws = [Watch(api, f"/apis/batch/v1/namespaces/{ns}/cronjobs", rec.on_cronjob),
          Watch(api, schedules_path(ns), rec.on_schedule),
          Watch(api, f"/apis/batch/v1/namespaces/{ns}/jobs", rec.on_job)]
    for w in ws:
        w.start()
    for w in ws:
        w.ready.wait(10)
    return ws


def create_schedules(api: Api, ns: str, names: list[str], threads: int) -> dict[str, float]:
    created: dict[str, float] = {}

    def one(item):
        i, name = item
        api.request("POST", schedules_path(ns), schedule_body(i, name))
        created[name] = time.time()

    parallel(one, list(enumerate(names)), threads)
    return created


# --- scenarios --------------------------------------------------------------------------------


def baseline(api: Api, n: int, threads: int) -> dict:
    """Server-side apply of the operator's CronJobs, without the operator."""
    ns = fresh_namespace(api, f"base-{n}")
    bodies = []
    for i, name in enumerate(names_for("s", n)):
        body = schedule_body(i, name)
        body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()))
        cj = build_cronjob(body, parse_schedule(body), JobImages())
        del cj["metadata"]["ownerReferences"]  # no owner exists: the GC would delete them
        bodies.append(cj)

    def apply(cj):
        api.request("PATCH", f"/apis/batch/v1/namespaces/{ns}/cronjobs/{cj['metadata']['name']}", cj,
                    content_type="application/apply-patch+yaml", fieldManager="bench", force="true")

    with Cost(api) as cost:
        start = time.time()
        parallel(apply, bodies, threads)
        wall = time.time() - start
    api.delete_namespace(ns, wait=300)
    return {"n": n, "threads": threads, "wall_s": round(wall, 2), "per_s": round(n / wall, 1),
            **cost.result(n)}


def creates_alone(api: Api, n: int, threads: int) -> dict:
    """The create scenario's CollectionSchedule creates (same bodies, threads and watchers) with
    the operator stopped: what the API server's create path costs by itself."""
    ns = fresh_namespace(api, f"alone-{n}")
    rec = Recorder()
    ws = watchers(api, ns, rec)
    with Cost(api) as cost:
        start = time.time()
        create_schedules(api, ns, names_for("s", n), threads)
        wall = time.time() - start
        wait_until(lambda: rec.events["collectionschedules ADDED"] >= n, timeout=60, what="the creates' events")
    for w in ws:
        w.stop()
    api.delete_namespace(ns, wait=300)
    return {"n": n, "threads": threads, "wall_s": round(wall, 2), "per_s": round(n / wall, 1),
            "watch_events": dict(rec.events), **cost.result(n)}


def create(api: Api, op: Operator, n: int, threads: int, prefix: str = "scale") -> tuple[dict, str, Recorder]:
    ns = fresh_namespace(api, f"{prefix}-{n}")
    rec = Recorder()
    ws = watchers(api, ns, rec)
    names = names_for("s", n)
    profile = Profile(op.pid, PROFILE_DIR / f"create-{n}-{op.log_path.stem}.txt" if PROFILE_DIR else None)
    profile.__enter__()
    cost = Cost(api, op).__enter__()
    cpu0, start = op.cpu_seconds(), time.time()
    created = create_schedules(api, ns, names, threads)
    created_by = time.time()
    done = wait_until(lambda: len(rec.cronjob_added) >= n and len(rec.ready_at) >= n,
                      timeout=max(300, n * 0.5), what=f"{n} CronJobs and Ready schedules")
    cpu = op.cpu_seconds() - cpu0
    time.sleep(2)  # the operator's last echoes (its own writes coming back) belong to the count
    cost.stop()
    profile.__exit__()
    listed = api.list(f"/apis/batch/v1/namespaces/{ns}/cronjobs")["items"]
    to_cronjob = [rec.cronjob_added[k] - created[k] for k in names]
    to_ready = [rec.ready_at[k] - created[k] for k in names]
    result = {
        "n": n, "threads": threads,
        "create_calls_s": round(created_by - start, 2),
        "wall_s": round(max(max(rec.cronjob_added.values()), max(rec.ready_at.values())) - start, 2),
        "cronjobs_listed": len(listed),
        "latency_to_cronjob_s": {k: _r(v) for k, v in summary(to_cronjob).items()},
        "latency_to_ready_s": {k: _r(v) for k, v in summary(to_ready).items()},
        "operator_cpu_s": round(cpu, 2), "operator_mem_mib": op.memory(),
        "waited_s": round(done - start, 2),
        "watch_events": dict(rec.events), "watch_events_per_schedule": per(dict(rec.events), n),
        "cost": cost.result(n),
    }
    for w in ws:
        w.stop()
    return result, ns, rec


def steady(api: Api, op: Operator, ns: str, seconds: float) -> dict:
    rec = Recorder()
    writes = {"n": 0}

    def count(type_, obj, at):
        writes["n"] += 1

    w = Watch(api, schedules_path(ns), count)
    w.start()
    w.ready.wait(10)
    cpu0, t0 = op.cpu_seconds(), time.monotonic()
    time.sleep(seconds)  # deliberate: the measurement window of an idle operator
    cpu, elapsed = op.cpu_seconds() - cpu0, time.monotonic() - t0
    w.stop()
    del rec
    return {"seconds": round(elapsed, 1), "operator_cpu_s": round(cpu, 2),
            "cpu_percent_of_one_core": round(100 * cpu / elapsed, 2),
            "schedule_writes": writes["n"], "operator_mem_mib": op.memory()}


def burst(api: Api, op: Operator, ns: str, threads: int, kill_at: float | None = None) -> dict:
    """run-now on every schedule of ``ns``; optionally kill -9 the operator once ``kill_at``
    of the runs are recorded, and restart it."""
    rec = Recorder()
    names = [s["metadata"]["name"] for s in api.list(schedules_path(ns))["items"]]
    before = {s["metadata"]["name"]: len((s.get("status") or {}).get("recentRuns") or [])
              for s in api.list(schedules_path(ns))["items"]}
    rec.expect_runs = {k: v + 1 for k, v in before.items()}
    ws = watchers(api, ns, rec)
    n = len(names)
    metrics0 = runs_in_metrics(op.metrics_text(), ns)
    cpu0, start = op.cpu_seconds(), time.time()

    def trigger(name):
        api.request("PATCH", schedules_path(ns, name),
                    {"metadata": {"annotations": {"thresher.dev/run-now": uuid.uuid4().hex}}},
                    content_type="application/merge-patch+json")

    parallel(trigger, names, threads)
    triggered = time.time()
    killed = None
    if kill_at is not None:
        wait_until(lambda: len(rec.runs_complete_at) >= n * kill_at, timeout=600, what="runs before the kill")
        op.kill()
        killed = {"recorded_at_kill": len(rec.runs_complete_at), "at_s": round(time.time() - start, 2)}
        op.start()
        metrics0 = {}
    recorded = wait_until(lambda: len(rec.runs_complete_at) >= n, timeout=600, what=f"{n} runs in status")
    expected_metrics = {k: metrics0.get(k, 0) + 1 for k in names} if kill_at is None else None

    def metrics_done():
        got = runs_in_metrics(op.metrics_text(), ns)
        if expected_metrics is None:  # restarted: the new process counts what it recorded itself
            return True
        return all(got.get(k, 0) >= v for k, v in expected_metrics.items())

    in_metrics = wait_until(metrics_done, timeout=300, what="runs in /metrics", interval=1.0)
    cpu = op.cpu_seconds() - cpu0
    schedules = api.list(schedules_path(ns))["items"]
    jobs = api.list(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]
    runs_per = {s["metadata"]["name"]: [r["jobName"] for r in (s.get("status") or {}).get("recentRuns") or []]
                for s in schedules}
    duplicates = sum(len(v) - len(set(v)) for v in runs_per.values())
    wrong_count = [k for k, v in runs_per.items() if len(v) != rec.expect_runs[k]]
    recorded_jobs = {j for v in runs_per.values() for j in v}
    unrecorded = [j["metadata"]["name"] for j in jobs if j["metadata"]["name"] not in recorded_jobs]
    unmarked = [j["metadata"]["name"] for j in jobs
                if (j["metadata"].get("annotations") or {}).get("thresher.dev/recorded") != "true"]
    got_metrics = runs_in_metrics(op.metrics_text(), ns)
    over_counted = ([k for k, v in expected_metrics.items() if got_metrics.get(k, 0) != v]
                    if expected_metrics else [])
    for w in ws:
        w.stop()
    return {
        "n": n, "trigger_calls_s": round(triggered - start, 2),
        "all_jobs_finished_s": round(max(rec.jobs_done_at.values()) - start, 2) if rec.jobs_done_at else None,
        "all_in_status_s": round(max(rec.runs_complete_at.values()) - start, 2),
        "all_in_metrics_s": round(in_metrics - start, 2), "waited_status_s": round(recorded - start, 2),
        "duplicate_records": duplicates, "schedules_with_wrong_run_count": len(wrong_count),
        "jobs_not_in_status": len(unrecorded), "jobs_not_marked_recorded": len(unmarked),
        "metrics_mismatch": len(over_counted), "jobs": len(jobs), "kill": killed,
        "operator_cpu_s": round(cpu, 2), "operator_mem_mib": op.memory(),
    }


def kill_storm(api: Api, op: Operator, n: int, threads: int) -> tuple[dict, str]:
    ns = fresh_namespace(api, f"kill-{n}")
    rec = Recorder()
    ws = watchers(api, ns, rec)
    names = names_for("k", n)
    start = time.time()
    creator = threading.Thread(target=create_schedules, args=(api, ns, names, threads))
    creator.start()
    wait_until(lambda: len(rec.cronjob_added) >= n / 3, timeout=300, what="a third of the CronJobs")
    op.kill()
    killed_at, at_kill = time.time(), len(rec.cronjob_added)
    op.start()
    creator.join()
    wait_until(lambda: len(rec.cronjob_added) >= n and len(rec.ready_at) >= n, timeout=max(300, n * 0.5),
               what="every CronJob after the restart")
    converged = time.time()
    listed = [c["metadata"]["name"] for c in api.list(f"/apis/batch/v1/namespaces/{ns}/cronjobs")["items"]]
    for w in ws:
        w.stop()
    return {"n": n, "cronjobs_at_kill": at_kill, "kill_to_converged_s": round(converged - killed_at, 2),
            "wall_s": round(converged - start, 2), "cronjobs": len(listed),
            "exactly_one_per_schedule": sorted(listed) == sorted(names),
            "cronjob_added_events": len(rec.cronjob_added)}, ns


def finished_job(schedule: dict, i: int, recorded: bool = True) -> dict:
    """A finished run of ``schedule`` as its CronJob would have made it (``build_cronjob``'s job
    template: labels, pod template), marked recorded when ``recorded``. ``spec.managedBy`` keeps
    the Job controller away, so its status can be written as finished without pods."""
    cronjob = build_cronjob(schedule, parse_schedule(schedule), JobImages())
    template = cronjob["spec"]["jobTemplate"]
    name = f"{schedule['metadata']['name']}-{29000000 + i}"
    meta = {**template.get("metadata", {}), "name": name, "namespace": schedule["metadata"]["namespace"]}
    meta["labels"] = dict(meta.get("labels") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), **({"thresher.dev/recorded": "true"} if recorded else {})}
    meta.pop("ownerReferences", None)  # no owner exists here: the GC would delete them
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {**template["spec"], "managedBy": "thresher.dev/benchmark"}}


FINISHED_STATUS = {"status": {
    "startTime": "2026-11-30T03:17:00Z", "completionTime": "2026-11-30T03:18:00Z", "succeeded": 1,
    "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-11-30T03:18:00Z"}
                   for t in ("SuccessCriteriaMet", "Complete")]}}


def restart(api: Api, op: Operator, ns: str, threads: int, settle_s: float = 5.0) -> dict:
    """The operator stopped, one finished (and recorded) Job per schedule of ``ns`` that has none
    (after a burst, its runs are those), the
    operator started again: its peak RSS, CPU and API requests until it has been idle for
    ``settle_s`` (every schedule resumed and every Job seen)."""
    op.stop()
    schedules = api.list(schedules_path(ns))["items"]
    n = len(schedules)
    jobs_path = f"/apis/batch/v1/namespaces/{ns}/jobs"
    have = {(j["metadata"].get("labels") or {}).get("thresher.dev/schedule") for j in api.list(jobs_path)["items"]}

    def one(item):
        i, schedule = item
        job = finished_job(schedule, i)
        if schedule["metadata"]["name"] not in have:  # a schedule with a run (burst) keeps that one
            api.request("POST", jobs_path, job)
            api.request("PATCH", f"{jobs_path}/{job['metadata']['name']}/status", FINISHED_STATUS,
                        content_type="application/merge-patch+json")

    made = time.time()
    parallel(one, list(enumerate(schedules)), threads)
    jobs_made_s = time.time() - made
    jobs = len(api.list(jobs_path, labelSelector="app.kubernetes.io/managed-by=thresher")["items"])
    with Cost(api) as cost:
        start = time.time()
        op.start(timeout=300)
        healthy = time.time()
        last, idle_since = op.cpu_seconds(), time.monotonic()
        while time.monotonic() - idle_since < settle_s and time.time() - start < max(600, n * 0.2):
            time.sleep(0.5)
            now = op.cpu_seconds()
            if now - last > 0.02:  # busy: more than 4% of a core in the half second
                idle_since = time.monotonic()
            last = now
        settled = time.monotonic() - idle_since
    return {"n": n, "jobs": jobs, "jobs_created_s": round(jobs_made_s, 2),
            "healthy_s": round(healthy - start, 2), "settled_s": round(time.time() - start - settled, 2),
            "operator_cpu_s": round(op.cpu_seconds(), 2), "operator_mem_mib": op.memory(),
            "cost": cost.result(n)}


STATUS_TEMPLATE = {  # about what Thresher writes for a new schedule: five conditions and the times
    "observedGeneration": 1, "cronJobRef": {"name": ""}, "effectiveSchedule": "17 3 * * *",
    "nextScheduleTime": "2030-01-01T03:17:00Z", "consecutiveFailures": 0,
    "conditions": [{"type": t, "status": v, "reason": r, "message": m, "lastTransitionTime": "2026-12-01T00:00:00Z",
                    "observedGeneration": 1}
                   for t, v, r, m in (("Ready", "True", "CronJobReady", "CronJob s runs '17 3 * * *' in UTC"),
                                      ("Stale", "False", "Fresh", ""),
                                      ("Failing", "False", "BelowThreshold", "0 consecutive failed runs (threshold 3)"),
                                      ("RunBlocked", "False", "Running", ""),
                                      ("PrerequisitesMissing", "False", "AllFound", "all exist"))]}


def kopf_floor(api: Api, kubeconfig: Path, n: int, threads: int, mode: str) -> dict:
    """kopf's minimum for the create path's events: a bare kopf operator (``kopf_floor.py``,
    no-op handlers) while the benchmark itself makes what Thresher's operator makes, per
    schedule: the create, the CronJob's server-side apply and one status write."""
    floor = Operator(kubeconfig, Path(tempfile.gettempdir()) / f"thresher-kopf-floor-{os.getpid()}.log",
                     command=[str(REPO / "benchmarks" / "kopf_floor.py"), "--mode", mode])
    floor.start()
    ns = fresh_namespace(api, f"floor-{n}")

    def one(item):
        i, name = item
        created = api.request("POST", schedules_path(ns), schedule_body(i, name))
        cj = build_cronjob(created, parse_schedule(created), JobImages())
        api.request("PATCH", f"/apis/batch/v1/namespaces/{ns}/cronjobs/{name}", cj,
                    content_type="application/apply-patch+yaml", fieldManager="bench", force="true")
        status = {**STATUS_TEMPLATE, "cronJobRef": {"name": name}}
        api.request("PATCH", schedules_path(ns, name) + "/status", {"status": status},
                    content_type="application/merge-patch+json")

    profile = PROFILE_DIR / f"kopf-floor-{mode}-{n}.txt" if PROFILE_DIR else None
    with Cost(api, floor) as cost, Profile(floor.pid, profile):
        start = time.time()
        parallel(one, list(enumerate(names_for("s", n))), threads)
        wall = time.time() - start
        last = [floor.cpu_seconds(), time.monotonic()]

        def settled():  # the bare operator has caught up: no CPU for a second
            now = floor.cpu_seconds()
            if now - last[0] > 0.02:
                last[:] = [now, time.monotonic()]
            return time.monotonic() - last[1] >= 1.0

        wait_until(settled, timeout=300, what="the bare kopf operator to settle", interval=0.25)
    result = {"n": n, "mode": mode, "wall_s": round(wall, 2), **cost.result(n)}
    floor.stop()
    api.delete_namespace(ns, wait=600)
    return result


def create_path(api: Api, ops: dict[str, Operator], n: int, threads: int, scenarios: list[str],
                keep_last: bool = True) -> tuple[dict, str | None]:
    """One run of the floor (baseline and alone, every operator stopped) and of create on each
    operator variant in turn (freshly started, alone on the cluster), with the ratios to the
    floor. The last variant's schedules stay (for the later scenarios) when ``keep_last``."""
    one: dict = {}
    if "baseline" in scenarios or "alone" in scenarios:
        for op in ops.values():
            op.stop()
        if "baseline" in scenarios:
            one["baseline"] = baseline(api, n, threads)
            _show(n, "baseline", one["baseline"])
        if "alone" in scenarios:
            one["alone"] = creates_alone(api, n, threads)
            _show(n, "alone", one["alone"])
    ns = None
    for i, (label, op) in enumerate(ops.items()):
        for other in ops.values():
            if other is not op:
                other.stop()
        if not op.running():
            op.start()
        if "create" not in scenarios:
            continue
        suffix = "" if len(ops) == 1 else f":{label}"
        one["create" + suffix], ns, _ = create(api, op, n, threads)
        _show(n, "create" + suffix, one["create" + suffix])
        one["ratios" + suffix] = ratios(one, "create" + suffix)
        _show(n, "ratios" + suffix, one["ratios" + suffix])
        if i < len(ops) - 1 or not keep_last:  # the next variant starts on an empty cluster
            api.delete_namespace(ns, wait=600)
            ns = None
    return one, ns


def ratios(one: dict, key: str = "create") -> dict:
    """The create path as ratios to its floor (creates alone, CronJob SSA alone, same run), and
    the requests the operator added: create's less alone's."""
    create, base, alone = one[key], one.get("baseline"), one.get("alone")
    out: dict = {}
    if base:
        out["wall_vs_baseline"] = round(create["wall_s"] / base["wall_s"], 2)
    if alone:
        out["create_calls_vs_alone"] = round(create["create_calls_s"] / alone["wall_s"], 2)
        # positive differences only: the namespace controller finishing an earlier namespace's
        # deletion lands in either window (negative counts of DELETE/LIST of every kind)
        operator = {k: v for k, v in subtract(create["cost"]["api_requests"], alone["api_requests"]).items() if v > 0}
        out["operator_api_requests"] = operator
        out["operator_api_requests_per_schedule"] = per(operator, create["n"])
        out["operator_watch_events_per_schedule"] = per(subtract(create["watch_events"], alone["watch_events"]),
                                                        create["n"])
    if base and alone:
        floor = base["wall_s"] + alone["wall_s"]
        out["floor_s"] = round(floor, 2)
        out["wall_vs_floor"] = round(create["wall_s"] / floor, 2)
        out["create_calls_vs_floor"] = round(create["create_calls_s"] / floor, 2)
    return out


MEDIAN_FIGURES = {  # name -> path into one run
    "baseline_wall_s": ("baseline", "wall_s"), "alone_wall_s": ("alone", "wall_s"),
    "floor_s": ("ratios", "floor_s"), "create_calls_s": ("create", "create_calls_s"),
    "create_wall_s": ("create", "wall_s"), "wall_vs_floor": ("ratios", "wall_vs_floor"),
    "create_calls_vs_floor": ("ratios", "create_calls_vs_floor"),
    "create_calls_vs_alone": ("ratios", "create_calls_vs_alone"),
    "to_cronjob_p50_s": ("create", "latency_to_cronjob_s", "p50"),
    "to_cronjob_p99_s": ("create", "latency_to_cronjob_s", "p99"),
    "to_ready_p99_s": ("create", "latency_to_ready_s", "p99"),
    "operator_cpu_ms_per_schedule": ("create", "cost", "operator_cpu_ms_per_item"),
    "operator_peak_rss_mib": ("create", "operator_mem_mib", "VmHWM"),
}


def medians(runs: list[dict], labels: list[str]) -> dict:
    """Medians of the headline figures over the runs, per operator variant."""
    out: dict = {"n_runs": len(runs)}
    for label in labels:
        suffix = "" if len(labels) == 1 else f":{label}"
        for name, path in MEDIAN_FIGURES.items():
            path = tuple(k + suffix if k in ("create", "ratios") else k for k in path)
            values = []
            for run in runs:
                v = run
                for k in path:
                    v = v.get(k) if isinstance(v, dict) else None
                if isinstance(v, (int, float)):
                    values.append(v)
            if values:
                key = name + suffix if name not in ("baseline_wall_s", "alone_wall_s") else name
                out[key] = round(statistics.median(values), 3)
                out[key + "_runs"] = values
    return out


def _r(v):
    return round(v, 3) if isinstance(v, float) else v


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in load],
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000", help="comma-separated schedule counts")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--threads", type=int, default=4, help="client threads (creates, baseline)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of baseline, alone and create (medians)")
    parser.add_argument("--steady-seconds", type=float, default=120)
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/bench-cluster"))
    parser.add_argument("--keep-cluster", action="store_true", help="leave the private cluster running")
    parser.add_argument("--operator-arg", action="append", default=[], help="extra `operator run` argument")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="an operator to compare, run from that checkout (repeatable; each create "
                             "runs on each in turn, side by side in one run); default: this one")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--profile", type=Path, help="py-spy records (raw) of each create into this folder")
    args = parser.parse_args(argv)
    if args.state_dir.resolve() == (Path.home() / ".local/state/thresher/dev").resolve():
        parser.error("refusing to load the shared dev cluster; pick a private --state-dir")
    scenarios = args.scenarios.split(",")
    # kill -TERM (a background run ignores SIGINT): the finally below still stops the operators,
    # writes --json with what was measured and removes the cluster
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    global PROFILE_DIR
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE_DIR = args.profile

    dev = DevCluster(args.state_dir, node=False)  # kwok nodes only, whatever THRESHER_DEV_NODE says
    dev.up(log=lambda m: print(f"[cluster] {m}", file=sys.stderr))
    for path in sorted((REPO / "manifests" / "crds").glob("*.yaml")):
        dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    dev.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/collectionschedules.thresher.dev")
    api = Api(args.state_dir)
    results: dict = {"machine": machine(), "command": " ".join(sys.argv), "sizes": {}}
    log_path = Path(tempfile.gettempdir()) / f"thresher-scale-operator-{os.getpid()}.log"
    results["operator_log"] = str(log_path)
    ops = {}
    for variant in args.variant or ["operator="]:
        label, _, path = variant.partition("=")
        # PYTHONSAFEPATH: `python -m` would otherwise import thresher from the working directory
        env = {"PYTHONPATH": str(Path(path).resolve()), "PYTHONSAFEPATH": "1"} if path else {}
        ops[label] = Operator(dev.kubeconfig, log_path.with_suffix(f".{label}.log"), args.operator_arg, env=env)
    op = list(ops.values())[-1]  # the later scenarios' operator
    try:
        op.start()
        results["operator_idle_mem_mib"] = op.memory()
        sizes = [int(s) for s in args.sizes.split(",")]
        for n in sizes:
            out: dict = {"runs": []}
            results["sizes"][n] = out
            ns = None
            for _ in range(args.repeat):
                if ns:  # an earlier repeat's schedules: gone before the operator restarts
                    api.delete_namespace(ns, wait=300)
                one, ns = create_path(api, ops, n, args.threads, scenarios)
                out["runs"].append(one)
            if not op.running():
                op.start()
            out["median"] = medians(out["runs"], list(ops))
            _show(n, "median", out["median"])
            out.update(out["runs"][-1])  # the last run's figures at the top level, as before
            for mode in ("event", "create"):
                if f"kopf-floor-{mode}" in scenarios:
                    for each in ops.values():
                        each.stop()
                    out[f"kopf_floor_{mode}"] = kopf_floor(api, dev.kubeconfig, n, args.threads, mode)
                    _show(n, f"kopf-floor-{mode}", out[f"kopf_floor_{mode}"])
            if not op.running():
                op.start()
            if ns and "steady" in scenarios:
                out["steady"] = steady(api, op, ns, args.steady_seconds)
                _show(n, "steady", out["steady"])
            if ns and "burst" in scenarios:
                out["burst"] = burst(api, op, ns, args.threads * 2)
                _show(n, "burst", out["burst"])
            if ns and "restart" in scenarios:
                out["restart"] = restart(api, op, ns, args.threads * 2)
                _show(n, "restart", out["restart"])
            kns = None
            if "kill-storm" in scenarios:
                out["kill_storm"], kns = kill_storm(api, op, n, args.threads)
                _show(n, "kill-storm", out["kill_storm"])
                if "kill-burst" in scenarios:
                    out["kill_burst"] = burst(api, op, kns, args.threads * 2, kill_at=1 / 3)
                    _show(n, "kill-burst", out["kill_burst"])
            results["operator_mem_mib_final"] = op.memory()
            if n != sizes[-1]:  # the next size starts from an empty cluster (a restart resumes them all)
                for left in filter(None, (ns, kns)):
                    api.delete_namespace(left, wait=600)
    finally:
        for each in ops.values():
            each.stop()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        if not args.keep_cluster:
            dev.down(log=lambda m: None)
            shutil.rmtree(args.state_dir, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str))
    return 0


def _show(n: int, name: str, result: dict) -> None:
    print(f"[{n}] {name}: {json.dumps(result, default=str)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
