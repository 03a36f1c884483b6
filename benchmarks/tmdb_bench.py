"""Benchmark: the TMDB job against a sequential baseline written like the old scheduler.

Both run, in the same invocation, against the fake TMDB with 50 ms latency a
request and a 40 requests/s limit (429 beyond, no Retry-After, like TMDB's
CDN): the weekly collection (five genres via discover, top rated >= 7.5,
trending week) with detail enrichment (append_to_response=credits). Each
variant runs in its own child process, so peak memory (ru_maxrss) is its own.

The full weekly collection is 96 list pages plus ~1,400 detail requests: about
80 s for the baseline per repetition. ``--scale`` shrinks every source's page
count by the same factor for both variants (default 0.25: 26 pages + ~500
details), which keeps three repetitions within a few minutes.

    .venv/bin/python benchmarks/tmdb_bench.py --repeat 3 --scale 0.25

Prints a table and a JSON summary; results go to docs/benchmarks.md by hand.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = "bench-key"
LIMIT = 40.0


def weekly_spec(scale: float, base_url: str, rps: float, workers: int) -> dict:
    """The weekly preset's sources, each scaled to max(1, round(pages * scale)), with enrichment."""
    from thresher.jobs.tmdb.plan import PRESETS

    sources = [{"endpoint": s.endpoint, "pages": max(1, round(s.pages * scale)), "params": s.params,
                **({"label": s.label} if s.label else {})} for s in PRESETS["weekly"]]
    return {"collection": "custom", "sources": sources, "enrich": True, "appendToResponse": ["credits"],
            "apiKeySecretRef": {"name": "bench"}, "apiBaseUrl": base_url, "requestsPerSecond": rps,
            "workers": workers}


# --- the baseline: one request after another, as the old in-process scheduler did ------------------

def baseline(spec: dict) -> dict:
    """Sequential fetches with requests.get (no pooled session, no concurrency), retrying 429/5xx
    after a fixed pause; the same pages and the same detail requests as the Thresher run."""
    import requests

    from thresher.jobs.tmdb.plan import ENDPOINT_PATHS

    base = spec["apiBaseUrl"]
    requests_made = 0

    def get(path: str, params: dict) -> dict:
        nonlocal requests_made
        for _ in range(6):
            requests_made += 1
            response = requests.get(f"{base}/{path}", params={**params, "api_key": KEY, "language": "en-US"},
                                    timeout=10)
            if response.status_code == 429 or response.status_code >= 500:
                time.sleep(1.0)
                continue
            response.raise_for_status()
            return response.json()
        raise RuntimeError(f"{path} kept failing")

    started = time.monotonic()
    get("genre/movie/list", {})
    movies: dict[int, dict] = {}
    for source in spec["sources"]:
        for page in range(1, source["pages"] + 1):
            for movie in get(ENDPOINT_PATHS[source["endpoint"]], {**source["params"], "page": page})["results"]:
                movies.setdefault(movie["id"], movie)
    for movie_id in list(movies):
        movies[movie_id].update(get(f"movie/{movie_id}", {"append_to_response": "credits"}))
    out = Path(os.environ["BENCH_OUT"]) / "baseline.json"
    out.write_text(json.dumps(list(movies.values())))
    return {"seconds": time.monotonic() - started, "items": len(movies), "clientRequests": requests_made}


# --- the driver -------------------------------------------------------------------------------------

def run_child(args: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """Run a child process; return (wall seconds, exit status, peak RSS in KiB, stdout)."""
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, proc.returncode, usage.ru_maxrss, out


def measure(server, variant: str, spec: dict, workdir: Path) -> dict:
    env = {**os.environ, "TMDB_API_KEY": KEY, "BENCH_OUT": str(workdir),
           "THRESHER_RESULT_PATH": str(workdir / "result.json"), "PYTHONPATH": str(REPO)}
    server.fake.reset_stats()
    if variant == "thresher":
        args = [sys.executable, "-m", "thresher.cli", "job", "tmdb", "collect", "--spec", json.dumps(spec),
                "--data-dir", str(workdir / "data"), "--log-level", "WARNING"]
        wall, code, rss, _ = run_child(args, env)
        result = json.loads((workdir / "result.json").read_text())
        seconds, items = result["durationSeconds"], result["items"]
        if code != 0:
            raise SystemExit(f"thresher run failed ({code}): {result}")
    else:
        args = [sys.executable, __file__, "--child-baseline", json.dumps(spec)]
        wall, code, rss, out = run_child(args, env)
        if code != 0:
            raise SystemExit(f"baseline failed ({code})")
        child = json.loads(out)
        seconds, items = child["seconds"], child["items"]
    stats = server.stats()
    return {"variant": variant, "seconds": round(seconds, 2), "wallSeconds": round(wall, 2), "items": items,
            "requests": stats["requests"], "requestsPerSecond": round(stats["requests"] / seconds, 2),
            "fractionOfLimit": round(stats["requests"] / seconds / LIMIT, 3),
            "throttled429": stats["rateLimited"], "peakRssMiB": round(rss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.25, help="fraction of the weekly preset's pages")
    parser.add_argument("--rps", type=float, default=38.0, help="the job's requestsPerSecond (TMDB limit: 40)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--child-baseline", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child_baseline:
        print(json.dumps(baseline(json.loads(opts.child_baseline))))
        return

    from thresher.demo.fakes.tmdb_server import FakeConfig, running_fake_server

    config = FakeConfig(api_key=KEY, latency_ms=opts.latency_ms, rate_limit=LIMIT)
    rows: list[dict] = []
    with running_fake_server(config) as server, tempfile.TemporaryDirectory() as tmp:
        spec = weekly_spec(opts.scale, server.base_url, opts.rps, opts.workers)
        for rep in range(opts.repeat):
            for variant in ("thresher", "baseline"):
                workdir = Path(tmp) / f"{variant}-{rep}"
                workdir.mkdir()
                row = measure(server, variant, spec, workdir)
                rows.append(row)
                print(json.dumps(row), flush=True)

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["variant"] == variant)

    summary = {
        "workload": f"weekly x{opts.scale} ({sum(s['pages'] for s in spec['sources'])} pages) + enrich (credits)",
        "latencyMs": opts.latency_ms, "limitPerSecond": LIMIT, "jobRequestsPerSecond": opts.rps,
        "workers": opts.workers, "repeat": opts.repeat,
        "thresher": {k: median("thresher", k) for k in ("seconds", "requests", "requestsPerSecond",
                                                        "fractionOfLimit", "throttled429", "peakRssMiB", "items")},
        "baseline": {k: median("baseline", k) for k in ("seconds", "requests", "requestsPerSecond",
                                                        "fractionOfLimit", "throttled429", "peakRssMiB", "items")},
    }
    summary["speedup"] = round(summary["baseline"]["seconds"] / summary["thresher"]["seconds"], 2)
    print("\nvariant    seconds  requests  req/s  of-limit  429s  peak-RSS-MiB  movies")
    for name in ("thresher", "baseline"):
        m = summary[name]
        print(f"{name:<10} {m['seconds']:>7.2f} {m['requests']:>9} {m['requestsPerSecond']:>6.2f} "
              f"{m['fractionOfLimit']:>9.3f} {m['throttled429']:>5} {m['peakRssMiB']:>13.1f} {m['items']:>7}")
    print(f"wall-time ratio baseline/thresher: {summary['speedup']}x (medians of {opts.repeat})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
