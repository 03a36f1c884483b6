"""Fan-out on the real node (issue 18, point 3): the same orthomosaic run as a Job with parallelism
1 and as an Indexed Job with parallelism 2, on ``thresher-local`` (kubelet + containerd).

The Jobs are the operator's own (``builders.job_spec`` of a drone schedule pinned to the real node,
with a hostPath-backed claim), created directly so that the run is timed without the CronJob in
between: Job ``startTime`` to ``completionTime`` as the Job controller writes them, plus the wall
time from create to Complete.

The node runs the jobs image already built (``~/.cache/thresher/images``, from main); this branch's
``thresher`` package is put on the data volume and first on ``PYTHONPATH``, so the pods run this
branch's code with the image's Python and libraries (rebuilding the shared image archive would
replace it under other sessions). Needs root (``THRESHER_DEV_NODE=1`` rules) and a state folder of
its own:

    THRESHER_DEV_NODE=1 .venv/bin/python benchmarks/fanout_realnode.py --state /tmp/state-x/rn \
        [--size 8000] [--rounds 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.demo.fakes import orthomosaic as om

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "fanout-bench"


def schedule(parallelism: int, sub_path: str) -> dict:
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": f"ortho-p{parallelism}", "namespace": NAMESPACE, "uid": "bench"},
            "spec": {"schedule": "0 0 1 1 *", "retries": 0,
                     "nodeSelector": {"kubernetes.io/hostname": "thresher-local"},
                     "resources": {"cpu": "100m", "memory": "256Mi"},
                     "storage": {"claimName": "bench-data", "subPath": sub_path},
                     "job": {"drone": {"task": "process", "backend": "cpu", "extensions": ["tif"],
                                       "workers": 1, "parallelism": parallelism,
                                       "orthomosaic": {"minZoneAreaM2": 1}}}}}


def job_body(parallelism: int, name: str, sub_path: str) -> dict:
    from thresher.api.schedule import parse_schedule
    from thresher.devcluster import images
    from thresher.operator import builders

    parsed = parse_schedule(schedule(parallelism, sub_path))
    spec = builders.job_spec(parsed.spec, builders.JobImages(cpu=images.JOBS_IMAGE, gpu=images.JOBS_IMAGE), name)
    container = spec["template"]["spec"]["containers"][0]
    container["env"].append({"name": "PYTHONPATH", "value": "/data/src"})
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "fanout-bench"}}, "spec": spec}


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run(cluster, data: Path, mosaic: Path, parallelism: int, n: int) -> dict:
    sub = f"run-{n}-p{parallelism}"
    folder = data / sub
    (folder / "input").mkdir(parents=True)
    shutil.copy2(mosaic, folder / "input" / mosaic.name)
    shutil.copytree(ROOT / "thresher", folder / "src" / "thresher",
                    ignore=shutil.ignore_patterns("__pycache__", "demo"))
    subprocess.run(["chmod", "-R", "a+rwX", str(folder)], check=True)
    name = f"ortho-{n}-p{parallelism}"
    started = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(job_body(parallelism, name, sub)))
    while True:
        job = json.loads(cluster.kubectl("get", "job", name, "-n", NAMESPACE, "-o", "json").stdout)
        conds = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions") or []}
        if conds.get("Complete") == "True" or conds.get("Failed") == "True":
            break
        if time.monotonic() - started > 900:
            raise SystemExit(f"{name} did not finish in 15 minutes")
        time.sleep(0.5)
    wall = time.monotonic() - started
    status = job["status"]
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"batch.kubernetes.io/job-name={name}",
                                      "-o", "json").stdout)["items"]
    results = []
    for pod in pods:
        for cs in pod["status"].get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("message"):
                results.append(json.loads(term["message"]))
    zones = json.loads((folder / "output" / "orthomosaics" / mosaic.name / "zones.geojson").read_text())
    return {"parallelism": parallelism, "complete": conds.get("Complete") == "True", "wall_s": round(wall, 2),
            "job_s": round(stamp(status["completionTime"]) - stamp(status["startTime"]), 2)
            if status.get("completionTime") else None,
            "index_durations_s": sorted(r.get("durationSeconds") for r in results),
            "items": sum(r.get("items") or 0 for r in results),
            "zones": [(f["properties"]["area_m2"], f["properties"]["centroid_col"]) for f in zones["features"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from thresher.devcluster.cluster import DevCluster

    cluster = DevCluster(args.state, node=True)
    cluster.up(log=lambda m: print(f"[realnode] {m}", file=sys.stderr), timeout=300)
    try:
        data = args.state / "bench-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        mosaic = om.write(args.state / "field.tif", size=args.size).path
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        claim = [
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "fanout-bench-data"},
             "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                      "hostPath": {"path": str(data)},
                      "claimRef": {"namespace": NAMESPACE, "name": "bench-data"}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "bench-data", "namespace": NAMESPACE},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "fanout-bench-data",
                      "resources": {"requests": {"storage": "10Gi"}}}},
        ]
        for doc in claim:
            cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
        runs = []
        n = 0
        for _ in range(args.rounds):
            for p in (1, 2):
                n += 1
                runs.append(run(cluster, data, mosaic, p, n))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "zones"}), file=sys.stderr)
        one = [r["job_s"] for r in runs if r["parallelism"] == 1]
        two = [r["job_s"] for r in runs if r["parallelism"] == 2]
        print(json.dumps({"size": args.size, "runs": [{k: v for k, v in r.items() if k != "zones"} for r in runs],
                          "median_job_p1_s": statistics.median(one), "median_job_p2_s": statistics.median(two),
                          "speedup": round(statistics.median(one) / statistics.median(two), 2),
                          "zones_identical": len({json.dumps(r["zones"]) for r in runs}) == 1}))
    finally:
        if not args.keep:
            cluster.down(log=lambda m: print(f"[realnode] {m}", file=sys.stderr))


if __name__ == "__main__":
    main()
