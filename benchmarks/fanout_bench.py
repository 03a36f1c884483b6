"""Fan-out benchmark (issue 18, point 3): one orthomosaic run with parallelism 1 vs N, as processes.

Writes a synthetic 4-band 16-bit orthomosaic (thresher/demo/fakes/orthomosaic.py), then for
``--rounds`` interleaved rounds runs ``thresher job drone run`` on it:

* parallelism 1: one process, as a one-pod run;
* parallelism N (``--parallelism``): N processes started together, as the N pods of an Indexed Job
  (each with its own ``JOB_COMPLETION_INDEX`` and the same ``THRESHER_RUN_ID``); the last to finish
  merges (pass 2, class COG, zones, summary).

Each run gets a fresh data folder (a copy of the mosaic). Prints the wall time of each (start to the
last process's exit), the median speed-up, each index's own duration (from its RunResult; an index
that finishes while another merges waits for the merge lock), checks that the zones of both are the
same, and times pass 1 against the whole item in this process: fan-out spreads pass 1, the merge
(pass 2, COG, zones) runs once.

    .venv/bin/python benchmarks/fanout_bench.py [--size 8000] [--parallelism 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.demo.fakes import orthomosaic as om

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"workers": 1, "backend": "cpu", "extensions": ["tif"], "orthomosaic": {"minZoneAreaM2": 1}}


def run(mosaic: Path, folder: Path, parallelism: int) -> tuple[float, list[dict]]:
    """Wall time of one run with ``parallelism`` processes, and their RunResults."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "input").mkdir(parents=True)
    shutil.copy2(mosaic, folder / "input" / mosaic.name)
    spec = json.dumps({**SPEC, "parallelism": parallelism})
    started = time.monotonic()
    procs = []
    for i in range(parallelism):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JOB_COMPLETION_INDEX": str(i), "THRESHER_RUN_ID": "bench"}
        procs.append(subprocess.Popen([sys.executable, "-m", "thresher.cli", "job", "drone", "run", "--spec", spec,
                                       "--data-dir", str(folder), "--result-path", str(folder / f"result-{i}.json"),
                                       "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a process of the parallelism {parallelism} run exited {p.returncode}")
    wall = time.monotonic() - started
    return wall, [json.loads((folder / f"result-{i}.json").read_text()) for i in range(parallelism)]


def pass_split(mosaic: Path, out: Path) -> tuple[float, float]:
    """(pass 1 seconds, whole item seconds) of one process: the share fan-out spreads over the indexes."""
    from thresher.api.drone import DroneJob
    from thresher.jobs.drone import compute as cp
    from thresher.jobs.drone import ortho

    spec = DroneJob.model_validate(SPEC)
    params = cp.ComputeParams.from_spec(spec)
    started = time.monotonic()
    ortho.process_part(mosaic, mosaic.name, spec, params, 0, 1)
    first = time.monotonic() - started
    started = time.monotonic()
    ortho.process(mosaic, mosaic.name, spec, params, out)
    return first, time.monotonic() - started


def zones(folder: Path, name: str) -> list[tuple[float, float, float]]:
    doc = json.loads((folder / "output" / "orthomosaics" / name / "zones.geojson").read_text())
    return [(f["properties"]["area_m2"], f["properties"]["centroid_col"], f["properties"]["centroid_row"])
            for f in doc["features"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
        base = Path(tmp)
        mosaic = om.write(base / "field.tif", size=args.size)
        load_before = os.getloadavg()
        # Warm-up: numba compiles (and caches) its kernels once, outside the timings.
        run(mosaic.path, base / "warm", 1)
        one, many, indexes = [], [], []
        for _ in range(args.rounds):
            wall, _ = run(mosaic.path, base / "one", 1)
            one.append(wall)
            wall, results = run(mosaic.path, base / "many", args.parallelism)
            many.append(wall)
            indexes.append([r["durationSeconds"] for r in results])
        same = zones(base / "one", "field.tif") == zones(base / "many", "field.tif")
        first, whole = pass_split(mosaic.path, base / "split")
        report = {
            "size": args.size, "megapixels": args.size * args.size / 1e6, "parallelism": args.parallelism,
            "rounds": args.rounds, "cpus": os.cpu_count(), "load_before": [round(x, 1) for x in load_before],
            "load_after": [round(x, 1) for x in os.getloadavg()],
            "wall_p1_s": [round(x, 2) for x in one], "wall_pN_s": [round(x, 2) for x in many],
            "median_p1_s": round(statistics.median(one), 2), "median_pN_s": round(statistics.median(many), 2),
            "speedup": round(statistics.median(one) / statistics.median(many), 2),
            "index_durations_s": indexes, "zones_identical": same,
            "pass1_s": round(first, 2), "item_s": round(whole, 2), "pass1_share": round(first / whole, 2),
        }
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
