"""The operator at scale and under kill -9, on a private local control plane.

Scenarios (each size runs them in this order; ``--scenarios`` picks a subset):

  baseline    the same CronJobs the operator would build, server-side applied straight to the
              API server by ``--threads`` client threads: the API server's own cost
  create      N CollectionSchedules created by ``--threads`` client threads; time until every
              CronJob exists and every schedule is Ready, create->CronJob latency percentiles
              (from watch receive times), operator CPU seconds and peak RSS (/proc)
  steady      nothing changes for ``--steady-seconds``: operator CPU and status writes (the
              per-schedule 60 s timers must not be a busy loop nor rewrite status)
  burst       run-now on every schedule; kwok completes the pods; time until every run is in
              status AND in /metrics, none twice
  kill-storm  N more schedules created, the operator is kill -9'd a third of the way in and
              restarted: exactly one CronJob per schedule, every schedule Ready
  kill-burst  run-now on those, kill -9 a third of the way through the recording, restart:
              every run recorded exactly once, every Job marked recorded

Usage (starts and stops its own cluster in --state-dir; never point it at the shared one):

  .venv/bin/python benchmarks/scale_bench.py --sizes 1000 --json /tmp/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalelib import (  # noqa: E402
    GROUP_PATH, Api, Operator, Recorder, Watch, parallel, runs_in_metrics, schedule_body, summary,
    wait_until,
)

from thresher.api.schedule import parse_schedule  # noqa: E402
from thresher.devcluster.cluster import DevCluster  # noqa: E402
from thresher.operator.builders import JobImages, build_cronjob  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("baseline", "create", "steady", "burst", "kill-storm", "kill-burst")


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

    start = time.time()
    parallel(apply, bodies, threads)
    wall = time.time() - start
    api.delete_namespace(ns, wait=300)
    return {"n": n, "threads": threads, "wall_s": round(wall, 2), "per_s": round(n / wall, 1)}


def create(api: Api, op: Operator, n: int, threads: int, prefix: str = "scale") -> tuple[dict, str, Recorder]:
    ns = fresh_namespace(api, f"{prefix}-{n}")
    rec = Recorder()
    ws = watchers(api, ns, rec)
    names = names_for("s", n)
    cpu0, start = op.cpu_seconds(), time.time()
    created = create_schedules(api, ns, names, threads)
    created_by = time.time()
    done = wait_until(lambda: len(rec.cronjob_added) >= n and len(rec.ready_at) >= n,
                      timeout=max(300, n * 0.5), what=f"{n} CronJobs and Ready schedules")
    cpu = op.cpu_seconds() - cpu0
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
    parser.add_argument("--steady-seconds", type=float, default=120)
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/bench-cluster"))
    parser.add_argument("--keep-cluster", action="store_true", help="leave the private cluster running")
    parser.add_argument("--operator-arg", action="append", default=[], help="extra `operator run` argument")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.state_dir.resolve() == (Path.home() / ".local/state/thresher/dev").resolve():
        parser.error("refusing to load the shared dev cluster; pick a private --state-dir")
    scenarios = args.scenarios.split(",")

    dev = DevCluster(args.state_dir, node=False)  # kwok nodes only, whatever THRESHER_DEV_NODE says
    dev.up(log=lambda m: print(f"[cluster] {m}", file=sys.stderr))
    for path in sorted((REPO / "manifests" / "crds").glob("*.yaml")):
        dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    dev.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/collectionschedules.thresher.dev")
    api = Api(args.state_dir)
    results: dict = {"machine": machine(), "command": " ".join(sys.argv), "sizes": {}}
    log_path = Path(tempfile.gettempdir()) / f"thresher-scale-operator-{os.getpid()}.log"
    results["operator_log"] = str(log_path)
    op = Operator(dev.kubeconfig, log_path, args.operator_arg)
    op.start()
    results["operator_idle_mem_mib"] = op.memory()
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            out: dict = {}
            results["sizes"][n] = out
            if "baseline" in scenarios:
                out["baseline"] = baseline(api, n, args.threads)
                _show(n, "baseline", out["baseline"])
            ns = None
            if "create" in scenarios:
                out["create"], ns, _ = create(api, op, n, args.threads)
                _show(n, "create", out["create"])
                if "baseline" in out:
                    out["create_vs_baseline"] = round(out["create"]["wall_s"] / out["baseline"]["wall_s"], 2)
            if ns and "steady" in scenarios:
                out["steady"] = steady(api, op, ns, args.steady_seconds)
                _show(n, "steady", out["steady"])
            if ns and "burst" in scenarios:
                out["burst"] = burst(api, op, ns, args.threads * 2)
                _show(n, "burst", out["burst"])
            if "kill-storm" in scenarios:
                out["kill_storm"], kns = kill_storm(api, op, n, args.threads)
                _show(n, "kill-storm", out["kill_storm"])
                if "kill-burst" in scenarios:
                    out["kill_burst"] = burst(api, op, kns, args.threads * 2, kill_at=1 / 3)
                    _show(n, "kill-burst", out["kill_burst"])
            results["operator_mem_mib_final"] = op.memory()
    finally:
        op.stop()
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
