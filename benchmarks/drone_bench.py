"""Drone crop-health benchmark: decode-only vs Thresher's process run vs the naive NumPy loop.

Generates its own 12-megapixel JPEG fields (4000x3008, GPS EXIF, camera-sized: ~7 MB at
quality 92) in a temporary folder, then measures, interleaved in rounds so that machine
load hits all three alike:

* decode-only: the job's own decoder (``decode.decode_image``: read + Pillow decode, pixels
  viewed where Pillow wrote them) on ``--workers`` threads: the ceiling, what the job would
  reach if its maths were free;
* decode + array: read + Pillow decode + ``np.asarray`` (a packed H x W x 3 copy), the usual
  way to get a photo's pixels, and how issue 14 first measured decode speed;
* thresher: ``run_process`` with the CPU backend and ``--workers`` threads (decode, the
  fused numba pass, health map PNG with legend, item JSON, SQLite commits, run report);
* naive: the obvious per-image float64 NumPy loop (nan-aware percentiles per index,
  full-size map resized with PIL), single-threaded, as one would write it first.

It prints img/s of each (median over rounds), thresher / decode-only (the issue-14 target
is >= 0.70), thresher / decode + array and thresher / naive, plus the largest difference of Thresher's statistics
from an exact float64 computation on the same decoded pixels (quantiles may differ by the
documented histogram error, 0.001). ``--backend cuda|torch-cpu`` adds that backend's run
and its largest difference from the CPU numbers.

    .venv/bin/python benchmarks/drone_bench.py [--images 8] [--workers 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.api.drone import DroneJob  # noqa: E402
from thresher.jobs.drone import compute as cp  # noqa: E402
from thresher.jobs.drone import decode as dc  # noqa: E402
from thresher.jobs.drone import indices as ix  # noqa: E402
from thresher.demo.fakes import drone_fields as sm  # noqa: E402
from thresher.jobs.drone.pipeline import NumpyEngine, Paths, TorchEngine, run_process  # noqa: E402
from thresher.jobs.drone.stats import QUANTILE_ERROR  # noqa: E402

RGB_INDICES = ("VARI", "GLI", "ExG", "TGI")


def make_images(folder: Path, count: int, height: int, width: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        labels, _ = sm.field_labels(height, width, 0.3 + 0.05 * (i % 8), 0.3, seed=i)
        rgb = sm.rgb_field(labels, noise=12, seed=i)  # texture so the JPEG is camera-sized, not trivially small
        p = folder / f"field_{i:03d}.jpg"
        p.write_bytes(sm.jpeg_bytes(rgb, sm.gps_exif(52.0 + i * 1e-4, 5.0, 60.0), quality=92))
        paths.append(p)
    return paths


# --- decode-only: the ceiling ------------------------------------------------------------------

def run_decode_only(paths: list[Path], workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for frame in pool.map(lambda p: dc.decode_image(p, p.name, "jpg"), paths):
            assert frame.width > 0
    return time.perf_counter() - t0


def decode_to_array(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(dc.read_file(path))) as image:
        return np.asarray(image)


def run_decode_to_array(paths: list[Path], workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for arr in pool.map(decode_to_array, paths):
            assert arr.shape[2] == 3
    return time.perf_counter() - t0


@contextlib.contextmanager
def cpu_time(into: list[float]):
    """Append the process's CPU seconds (user + system, every thread) spent in the block."""
    t0 = os.times()
    yield
    t1 = os.times()
    into.append((t1.user - t0.user) + (t1.system - t0.system))


# --- the naive loop: written the obvious way ----------------------------------------------------

def naive_one(path: Path, out_dir: Path, cuts: dict[str, tuple[float, float]]) -> dict:
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
        veg_t, str_t = cuts[name]
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


def run_naive(paths: list[Path], out_dir: Path, cuts) -> float:
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for p in paths:
        naive_one(p, out_dir, cuts)
    return time.perf_counter() - t0


# --- thresher --------------------------------------------------------------------------------------

def run_thresher(input_dir: Path, root: Path, engine, spec: DroneJob) -> tuple[float, list[dict]]:
    if root.exists():
        shutil.rmtree(root)
    p = Paths.resolve(spec, root)
    paths = Paths(p.data_dir, input_dir, p.output, p.state, p.backups)
    t0 = time.perf_counter()
    stats = run_process(spec, paths, engine)
    elapsed = time.perf_counter() - t0
    assert stats.failed == 0, [i["reason"] for i in stats.items if not i["ok"]]
    return elapsed, stats.items


def exactness(path: Path, spec: DroneJob, items: list[dict]) -> dict[str, float]:
    """Largest |Thresher - exact| over the RGB indices of one image: float64 NumPy on the same pixels."""
    frame = dc.decode_image(path, path.name, "jpg")
    got = next(i for i in items if i["key"] == path.name)["frames"][0]["indices"]
    bands = {b: p.astype(np.float32) for b, p in frame.planes.items()}
    sat = np.any([p == 255 for p in frame.planes.values()], axis=0)
    worst = {"mean": 0.0, "quantiles": 0.0}
    for name in got:
        v = ix.values(name, bands, np, 255.0, spec.min_denominator)
        v = v[np.isfinite(v) & ~sat].astype(np.float64)
        worst["mean"] = max(worst["mean"], abs(got[name]["mean"] - v.mean()))
        exact = np.percentile(v, [10, 50, 90])
        ours = [got[name][k] for k in ("p10", "median", "p90")]
        worst["quantiles"] = max(worst["quantiles"], float(np.max(np.abs(np.array(ours) - exact))))
    return worst


def breakdown(paths: list[Path], spec: DroneJob) -> dict[str, float]:
    """Median CPU seconds (this thread's, user + system) per image of the stages of the CPU path, one
    thread; "decode + np.asarray" is the decode-to-array baseline for comparison (the job makes no copy)."""
    from thresher.jobs.drone import healthmap as hm

    params = cp.ComputeParams.from_spec(spec)
    stages: dict[str, list[float]] = {"decode": [], "fused pass": [], "map png": [], "decode + np.asarray": []}
    for p in paths * 2:  # the first of each image warms the page cache
        t0 = time.thread_time()
        frame = dc.decode_image(p, p.name, "jpg")
        t1 = time.thread_time()
        computed = cp.compute_numpy(frame, params)
        t2 = time.thread_time()
        hm.render(computed.primary, computed.stats[computed.primary], computed.map_index)
        t3 = time.thread_time()
        del frame
        decode_to_array(p)
        t4 = time.thread_time()
        for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[k].append(v)
    return {k: statistics.median(v[len(paths):]) for k, v in stages.items()}


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
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3008)  # 3000 rounded up to the 16-px field grid
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true", help="Skip the (slow) naive loop.")
    parser.add_argument("--backend", choices=["cpu", "cuda", "torch-cpu"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--indices", default="", help="Comma-separated indices for Thresher (default: all four).")
    parser.add_argument("--json", action="store_true", help="Print one JSON line with the results.")
    args = parser.parse_args()

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spec = DroneJob(backend="cpu", batchSize=args.batch_size, workers=args.workers, healthMapMaxSize=1024,
                    indices=[i for i in args.indices.split(",") if i])
    params = cp.ComputeParams.from_spec(spec)
    cuts = {n: spec.thresholds.cuts(n, "photo8") for n in RGB_INDICES}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        images = make_images(tmp / "input", args.images, args.height, args.width)
        gen = time.perf_counter() - t0
        mp = args.width * args.height / 1e6
        size_mb = sum(p.stat().st_size for p in images) / len(images) / 1e6
        print(f"{len(images)} JPEGs of {mp:.1f} MP ({size_mb:.1f} MB each) generated in {gen:.1f}s; {cpus} CPUs; "
              f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        cp.compute_numpy(dc.decode_image(images[0], "warm", "jpg"), params)  # numba: load or compile once
        decode_s, array_s, thresher_s, naive_s = [], [], [], []
        cpu: dict[str, list[float]] = {"decode-only": [], "thresher": [], "decode + array": []}
        items: list[dict] = []
        for r in range(args.rounds):
            with cpu_time(cpu["decode-only"]):
                decode_s.append(run_decode_only(images, args.workers))
            with cpu_time(cpu["thresher"]):
                elapsed, items = run_thresher(tmp / "input", tmp / "thresher", NumpyEngine(), spec)
            thresher_s.append(elapsed)
            with cpu_time(cpu["decode + array"]):
                array_s.append(run_decode_to_array(images, args.workers))
            if not args.no_naive and r == 0:  # slow; one round is enough to place it
                naive_s.append(run_naive(images, tmp / "naive", cuts))
            print(f"round {r + 1}: decode-only {len(images) / decode_s[-1]:.2f} img/s, thresher "
                  f"{len(images) / thresher_s[-1]:.2f} img/s ({decode_s[-1] / thresher_s[-1]:.2f}), decode + array "
                  f"{len(images) / array_s[-1]:.2f} img/s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        n = len(images)
        dec, thr = n / statistics.median(decode_s), n / statistics.median(thresher_s)
        arr = n / statistics.median(array_s)
        result = {
            "images": n, "megapixels": round(mp, 1), "cpus": cpus, "workers": args.workers, "rounds": args.rounds,
            "load_average_end": round(os.getloadavg()[0], 2),
            "decode_only_images_per_s": round(dec, 3),
            "thresher_cpu_images_per_s": round(thr, 3),
            "thresher_over_decode_only": round(thr / dec, 3),
            "thresher_over_decode_only_by_round": [round(d / t, 2) for d, t in zip(decode_s, thresher_s)],
            "decode_to_array_images_per_s": round(arr, 3),
            "thresher_over_decode_to_array": round(thr / arr, 3),
            # CPU seconds (all threads, user + system) per image: what the ratio would be with both cores to
            # ourselves, since each variant keeps its 2 workers busy; steadier than wall time under load.
            "cpu_seconds_per_image": {k: round(statistics.median(v) / n, 4) for k, v in cpu.items()},
            "thresher_over_decode_only_by_cpu": round(statistics.median(cpu["decode-only"])
                                                      / statistics.median(cpu["thresher"]), 3),
            "thresher_over_decode_to_array_by_cpu": round(statistics.median(cpu["decode + array"])
                                                          / statistics.median(cpu["thresher"]), 3),
        }
        if naive_s:
            nai = n / statistics.median(naive_s)
            result["naive_images_per_s"] = round(nai, 3)
            result["thresher_over_naive"] = round(thr / nai, 2)
        diff = exactness(images[0], spec, items)
        result["max_abs_diff_vs_exact"] = {k: float(f"{v:.2g}") for k, v in diff.items()}
        result["documented_quantile_error"] = QUANTILE_ERROR
        if args.backend != "cpu":
            engine = TorchEngine("cuda" if args.backend == "cuda" else "cpu")
            run_thresher(tmp / "input", tmp / "warmup", engine, spec)  # CUDA context, kernels, nvJPEG handles
            t_s, t_items = run_thresher(tmp / "input", tmp / f"thresher-{args.backend}", engine, spec)
            result[f"thresher_{args.backend}_images_per_s"] = round(n / t_s, 3)
            result[f"max_abs_diff_{args.backend}_vs_cpu"] = max_difference(items, t_items)
            result["gpu_jpeg_decode"] = engine.decodes_jpeg
        stages = breakdown(images[: min(3, n)], spec)
        result["cpu_seconds_per_image_single_thread"] = {k: round(v, 3) for k, v in stages.items()}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:36s} {v}")


if __name__ == "__main__":
    main()
