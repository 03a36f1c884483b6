"""Orthomosaic benchmark (issue 18): field-scale memory, zone accuracy, throughput vs read-everything.

Generates synthetic 4-band 16-bit orthomosaics (thresher/demo/fakes/orthomosaic.py: tiled 512,
DEFLATE, EPSG:32633, 5 cm pixels, six stressed/bare patches of known pixel count and centroid)
in a temporary folder, then:

* field scale: ``ortho.process`` on a ``--size`` x ``--size`` mosaic (default 20,000) in a child
  process; its peak RSS (the child's own ``VmHWM`` from /proc/self/status; target < 1 GiB; not
  ``ru_maxrss``, which Linux carries over from the forking parent through exec), its
  wall time and megapixels/s, and every patch's zone: area error (target < 2 %) and centroid
  error in pixels (target < 2);
* throughput: on a ``--naive-size`` mosaic that fits in memory, ``--rounds`` interleaved rounds of
  the windowed path and the naive one (``dataset.read()`` of everything, then NumPy float64 NDVI,
  cuts and per-pixel classes written as one GTiff), each in a child process, both computing NDVI
  only (the field run computes all 8 indices the bands allow); medians of MP/s and peak RSS.

    .venv/bin/python benchmarks/ortho_bench.py [--size 20000] [--naive-size 6000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.demo.fakes import orthomosaic as om

ROOT = Path(__file__).resolve().parents[1]

PEAK = '''
def peak_rss_mib():
    # VmHWM: this process's own high-water mark. ru_maxrss is not: Linux carries it over from the
    # forked parent through exec, so a child would report the benchmark's own peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
'''

WINDOWED = PEAK + """
import json, sys, time
from pathlib import Path
from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp, ortho
spec = DroneJob.model_validate({"orthomosaic": {"minZoneAreaM2": 1}, "indices": json.loads(sys.argv[3])})
t = time.perf_counter()
out = ortho.process(Path(sys.argv[1]), "bench.tif", spec, cp.ComputeParams.from_spec(spec), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - t, "result": out,
                  "rss_mib": peak_rss_mib()}))
"""

NAIVE = PEAK + """
import json, sys, time
import numpy as np, rasterio
t = time.perf_counter()
with rasterio.open(sys.argv[1]) as ds:
    arr = ds.read().astype(np.float64)  # everything, then NumPy
    profile = ds.profile
b, g, r, n = arr
with np.errstate(invalid="ignore", divide="ignore"):
    ndvi = (n - r) / (n + r)
valid = np.isfinite(ndvi)
v = ndvi[valid]
ref = np.quantile(v[v >= 0.3], 0.95)
classes = np.where(~valid, 0, np.where(ndvi < 0.3, 1, np.where(ndvi < 0.8 * ref, 2, 3))).astype(np.uint8)
profile.update(count=1, dtype="uint8", nodata=0)
with rasterio.open(sys.argv[2] + "/naive.tif", "w", **profile) as dst:
    dst.write(classes, 1)
print(json.dumps({"seconds": time.perf_counter() - t, "mean": float(v.mean()),
                  "rss_mib": peak_rss_mib()}))
"""


def child(code: str, mosaic: Path, out: Path, indices: tuple[str, ...] = ()) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; (its JSON output, its peak RSS in MiB)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, str(mosaic), str(out), json.dumps(list(indices))],
                          capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return data, data["rss_mib"]  # the child's own VmHWM: its peak resident memory, all threads


def zone_errors(mosaic: om.Mosaic, zones_path: Path) -> list[dict]:
    feats = json.loads(zones_path.read_text())["features"]
    rows = []
    for p in mosaic.patches:
        col, row = p.centroid
        z = min(feats, key=lambda f: (f["properties"]["centroid_col"] - col) ** 2
                + (f["properties"]["centroid_row"] - row) ** 2)["properties"]
        true_m2 = p.pixels * mosaic.pixel_m ** 2
        rows.append({"patch": f"{p.kind} {p.shape}", "class": z["class"], "true_m2": round(true_m2, 2),
                     "zone_m2": z["area_m2"], "area_error": z["area_m2"] / true_m2 - 1,
                     "centroid_error_px": ((z["centroid_col"] - col) ** 2 + (z["centroid_row"] - row) ** 2) ** 0.5})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--naive-size", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report: dict = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="ortho-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        big = om.write(tmp / "field.tif", size=args.size)
        report["generate_seconds"] = round(time.perf_counter() - t, 1)
        report["file_mib"] = round(big.path.stat().st_size / 2**20, 1)
        out, rss = child(WINDOWED, big.path, tmp / "out-big")
        ortho_out = out["result"]["orthomosaic"]
        mp = args.size * args.size / 1e6
        report["field"] = {"size": args.size, "megapixels": mp, "seconds": round(out["seconds"], 1),
                           "mp_per_s": round(mp / out["seconds"], 2), "peak_rss_mib": round(rss),
                           "zone_cell_pixels": ortho_out["zone_cell_pixels"], "zones": ortho_out["zone_count"],
                           "patches": zone_errors(big, tmp / "out-big" / ortho_out["zones"])}
        big.path.unlink()
        small = om.write(tmp / "naive.tif", size=args.naive_size)
        mp = args.naive_size ** 2 / 1e6
        runs: dict[str, list] = {"windowed": [], "naive": []}
        for r in range(args.rounds):
            for name, code in (("windowed", WINDOWED), ("naive", NAIVE)):
                res, rss = child(code, small.path, tmp / f"out-{name}-{r}", ("NDVI",))
                runs[name].append((mp / res["seconds"], rss))
        report["throughput"] = {
            "size": args.naive_size, "rounds": args.rounds,
            **{f"{name}_mp_per_s": round(statistics.median(x for x, _ in v), 2) for name, v in runs.items()},
            **{f"{name}_peak_rss_mib": round(statistics.median(m for _, m in v)) for name, v in runs.items()},
        }
        report["throughput"]["windowed_over_naive"] = round(
            report["throughput"]["windowed_mp_per_s"] / report["throughput"]["naive_mp_per_s"], 2)
    report["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=1))
        return
    f = report["field"]
    print(f"field {f['size']}x{f['size']}: {f['seconds']} s, {f['mp_per_s']} MP/s, peak RSS {f['peak_rss_mib']} MiB, "
          f"zone cell {f['zone_cell_pixels']} px, {f['zones']} zones")
    for p in f["patches"]:
        print(f"  {p['patch']:16} {p['class']:8} true {p['true_m2']:>9} m2 zone {p['zone_m2']:>9} m2 "
              f"error {p['area_error']:+.2%} centroid {p['centroid_error_px']:.2f} px")
    t = report["throughput"]
    print(f"{t['size']}x{t['size']}, {t['rounds']} rounds: windowed {t['windowed_mp_per_s']} MP/s "
          f"({t['windowed_peak_rss_mib']} MiB), naive {t['naive_mp_per_s']} MP/s ({t['naive_peak_rss_mib']} MiB), "
          f"ratio {t['windowed_over_naive']}")
    print(f"load {report['load_before']} -> {report['load_after']}, generation {report['generate_seconds']} s, "
          f"file {report['file_mib']} MiB")


if __name__ == "__main__":
    main()
