"""Drone crop-health benchmark: Thresher's process run vs the obvious per-image NumPy loop.

Generates its own 12-megapixel JPEG fields (4000x3000, GPS EXIF) in a temporary folder,
then, in the same run:

* baseline: PIL open, float64 NumPy, nan-aware statistics, full-size health map resized
  with PIL, one image at a time (how one would write it first);
* thresher: ``run_process`` with the chosen backend (cpu: NumPy float32 + threads;
  cuda: nvJPEG batched decode + torch; torch-cpu: the torch code on the CPU);
* a single-threaded breakdown of Thresher's CPU path: decode, index maths + statistics,
  health map + writing;
* for torch backends, the largest difference from the NumPy numbers.

    .venv/bin/python benchmarks/drone_bench.py [--images 6] [--backend cpu|cuda|torch-cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.api.drone import DroneJob  # noqa: E402
from thresher.jobs.drone import compute as cp  # noqa: E402
from thresher.jobs.drone import decode as dc  # noqa: E402
from thresher.demo.fakes import drone_fields as sm  # noqa: E402
from thresher.jobs.drone.pipeline import NumpyEngine, Paths, TorchEngine, run_process  # noqa: E402


def make_images(folder: Path, count: int, height: int, width: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        labels, _ = sm.field_labels(height, width, 0.3 + 0.05 * i, 0.3, seed=i)
        rgb = sm.rgb_field(labels, noise=12, seed=i)  # texture so the JPEG is camera-sized, not trivially small
        p = folder / f"field_{i:03d}.jpg"
        p.write_bytes(sm.jpeg_bytes(rgb, sm.gps_exif(52.0 + i * 1e-4, 5.0, 60.0), quality=92))
        paths.append(p)
    return paths


# --- the baseline: written the obvious way ------------------------------------------------------

def baseline_one(path: Path, out_dir: Path, thresholds: dict[str, tuple[float, float]]) -> dict:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255.0
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        total = r + g + b
        idx = {
            "VARI": (g - r) / (g + r - b),
            "GLI": (2 * g - r - b) / (2 * g + r + b),
            "ExG": 2 * (g / total) - r / total - b / total,
            "TGI": g - 0.39 * r - 0.61 * b,
        }
    out = {}
    for name, v in idx.items():
        v = np.where(np.isfinite(v), v, np.nan)
        veg_t, str_t = thresholds[name]
        valid = ~np.isnan(v)
        veg = (v >= veg_t) & valid
        out[name] = {"mean": float(np.nanmean(v)), "median": float(np.nanmedian(v)),
                     "p10": float(np.nanpercentile(v, 10)), "p90": float(np.nanpercentile(v, 90)),
                     "cover": float(veg.sum() / valid.sum()),
                     "stressed": float((veg & (v < str_t)).sum() / max(veg.sum(), 1))}
    gli = np.nan_to_num(idx["GLI"], nan=0.0)
    colours = (np.clip((gli + 1) / 2, 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([255 - colours, colours, np.zeros_like(colours)], axis=-1)
    Image.fromarray(rgb).resize((1024, 768)).save(out_dir / f"{path.stem}.png")
    return out


def run_baseline(paths: list[Path], out_dir: Path, thresholds) -> tuple[float, list[dict]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = [baseline_one(p, out_dir, thresholds) for p in paths]
    return time.perf_counter() - t0, results


# --- thresher --------------------------------------------------------------------------------------

def run_thresher(paths_in: Path, root: Path, engine, spec: DroneJob) -> tuple[float, list[dict]]:
    paths = Paths.resolve(spec, root)
    paths = Paths(paths.data_dir, paths_in, paths.output, paths.state, paths.backups)
    t0 = time.perf_counter()
    stats = run_process(spec, paths, engine)
    elapsed = time.perf_counter() - t0
    assert stats.failed == 0, [i["reason"] for i in stats.items if not i["ok"]]
    return elapsed, stats.items


def breakdown(paths: list[Path], spec: DroneJob) -> dict[str, float]:
    """Seconds per image, single-threaded, of each stage of the CPU path."""
    params = cp.ComputeParams.from_spec(spec)
    stages = {"decode": [], "math": [], "map+write": []}
    tmp = Path(tempfile.mkdtemp())
    for p in paths:
        t0 = time.perf_counter()
        frame = dc.decode_image(p, p.name, "jpg")
        t1 = time.perf_counter()
        computed = cp.compute_numpy(frame, params)
        t2 = time.perf_counter()
        veg, stressed = params.threshold(computed.primary)
        (tmp / f"{p.stem}.png").write_bytes(cp.png_bytes(cp.colorize(computed.map_index, veg, stressed)))
        t3 = time.perf_counter()
        stages["decode"].append(t1 - t0)
        stages["math"].append(t2 - t1)
        stages["map+write"].append(t3 - t2)
    return {k: statistics.median(v) for k, v in stages.items()}


def max_difference(a: list[dict], b: list[dict]) -> dict[str, float]:
    by = {i["key"]: i for i in b}
    diffs = {"mean": 0.0, "median": 0.0, "cover": 0.0, "stressed": 0.0}
    for item in a:
        fa, fb = item["frames"][0], by[item["key"]]["frames"][0]
        for name, sa in fa["indices"].items():
            sb = fb["indices"][name]
            for k in diffs:
                if sa[k] is not None and sb[k] is not None:
                    diffs[k] = max(diffs[k], abs(sa[k] - sb[k]))
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3008)  # 3000 rounded up to the 16-px field grid
    parser.add_argument("--backend", choices=["cpu", "cuda", "torch-cpu"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="Print one JSON line with the results.")
    args = parser.parse_args()

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spec = DroneJob(backend="cpu", batchSize=args.batch_size, healthMapMaxSize=1024)
    thresholds = {n: (spec.thresholds.for_index(n).vegetation, spec.thresholds.for_index(n).stressed)
                  for n in ("VARI", "GLI", "ExG", "TGI")}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        images = make_images(tmp / "input", args.images, args.height, args.width)
        gen = time.perf_counter() - t0
        mp = args.width * args.height / 1e6
        size_mb = sum(p.stat().st_size for p in images) / len(images) / 1e6
        print(f"{len(images)} JPEGs of {mp:.1f} MP ({size_mb:.1f} MB each) generated in {gen:.1f}s; {cpus} CPUs",
              file=sys.stderr)

        base_s, _ = run_baseline(images, tmp / "baseline", thresholds)
        cpu_s, cpu_items = run_thresher(tmp / "input", tmp / "thresher-cpu", NumpyEngine(), spec)
        result = {
            "images": len(images), "megapixels": round(mp, 1), "cpus": cpus,
            "baseline_images_per_s": round(len(images) / base_s, 3),
            "thresher_cpu_images_per_s": round(len(images) / cpu_s, 3),
            "speedup_cpu_vs_baseline": round(base_s / cpu_s, 2),
        }
        if args.backend != "cpu":
            engine = TorchEngine("cuda" if args.backend == "cuda" else "cpu")
            run_thresher(tmp / "input", tmp / "warmup", engine, spec)  # CUDA context, kernels, nvJPEG handles
            t_s, t_items = run_thresher(tmp / "input", tmp / f"thresher-{args.backend}", engine, spec)
            result[f"thresher_{args.backend}_images_per_s"] = round(len(images) / t_s, 3)
            result[f"speedup_{args.backend}_vs_baseline"] = round(base_s / t_s, 2)
            result[f"max_abs_diff_{args.backend}_vs_cpu"] = max_difference(cpu_items, t_items)
            result["gpu_jpeg_decode"] = engine.decodes_jpeg
        stages = breakdown(images[: min(3, len(images))], spec)
        result["cpu_seconds_per_image_single_thread"] = {k: round(v, 3) for k, v in stages.items()}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:40s} {v}")


if __name__ == "__main__":
    main()
