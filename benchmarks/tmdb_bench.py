"""Benchmark: the TMDB job at a server's rate limit, in four scenarios, against a sequential baseline.

Every scenario runs, in the same invocation, against the project's fake TMDB
with a fixed 50 ms latency a request and a token-bucket rate limit (429
beyond), once with the Thresher job and once with a sequential baseline
written like the old scheduler; each in its own child process (so peak
memory, ru_maxrss, is its own):

  (a)    server limit 10/s, no Retry-After (like TMDB's CDN); job at 30/s.
         Aim: wall time <= 1.25x of (requests needed) / 10.
  (a-ra) the same, with Retry-After: 1 on every 429. Same aim.
  (b)    server limit 40/s; job configured exactly at it (40/s).
         Aim: >= 90% of the limit, at most 3 429s.
  (c)    server limit 40/s; job at its defaults. Aim: >= 85% of the limit, no 429s.

"Requests needed" are the requests the server answered 200; "of the limit"
is that count over the job's run time (``durationSeconds`` of its run
result: preflight to catalog commit) over the limit. The bucket holds
``--bucket`` seconds of tokens (default 1 s: 10 tokens at 10/s).

Workload: the weekly collection (five genres via discover, top rated >=
7.5, trending week) with detail enrichment (append_to_response=credits),
every source's page count scaled by ``--scale`` (default 0.05: 7 list pages
and about 135 detail requests, like the ~120-150-request runs of issue 15).

    .venv/bin/python benchmarks/tmdb_bench.py --repeat 3

Prints one JSON line a run, then a table of medians with the aims; results
go to docs/benchmarks.md by hand. ``--timeline`` instead runs scenario (a) once
in-process and prints what the limiter did, second by second (the table in
docs/tmdb.md).
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

# name: (server limit/s, Retry-After on 429s, the job's requestsPerSecond or None for the default)
SCENARIOS = {
    "a": (10.0, None, 30.0),
    "a-ra": (10.0, "1", 30.0),
    "b": (40.0, None, 40.0),
    "c": (40.0, None, None),
}


def weekly_spec(scale: float, base_url: str, rps: float | None, workers: int | None) -> dict:
    """The weekly preset's sources, each scaled to max(1, round(pages * scale)), with enrichment."""
    from thresher.jobs.tmdb.plan import PRESETS

    sources = [{"endpoint": s.endpoint, "pages": max(1, round(s.pages * scale)), "params": s.params,
                **({"label": s.label} if s.label else {})} for s in PRESETS["weekly"]]
    spec = {"collection": "custom", "sources": sources, "enrich": True, "appendToResponse": ["credits"],
            "apiKeySecretRef": {"name": "bench"}, "apiBaseUrl": base_url}
    if rps is not None:
        spec["requestsPerSecond"] = rps
    if workers is not None:
        spec["workers"] = workers
    return spec


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

def run_child(args: list[str], env: dict[str, str], cwd: Path | str = REPO) -> tuple[float, int, int, str]:
    """Run a child process in ``cwd`` (``-m`` imports from there first); return (wall seconds, exit
    status, peak RSS in KiB, stdout)."""
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, proc.returncode, usage.ru_maxrss, out


def measure(server, variant: str, spec: dict, workdir: Path, limit: float, before: str | None = None) -> dict:
    """One run of ``variant``: thresher (this checkout), before (the job of another checkout, e.g. the
    code before a change) or baseline."""
    code_dir = before if variant == "before" else str(REPO)
    env = {**os.environ, "TMDB_API_KEY": KEY, "BENCH_OUT": str(workdir),
           "THRESHER_RESULT_PATH": str(workdir / "result.json"), "PYTHONPATH": code_dir}
    server.fake.reset_stats()
    if variant in ("thresher", "before"):
        args = [sys.executable, "-m", "thresher.cli", "job", "tmdb", "collect", "--spec", json.dumps(spec),
                "--data-dir", str(workdir / "data"), "--log-level", "WARNING"]
        wall, code, rss, _ = run_child(args, env, code_dir)
        result = json.loads((workdir / "result.json").read_text())
        seconds, items = result["durationSeconds"], result["items"]
        if code not in (0, 5):  # 5: partial, possible for an old limiter at a low server limit
            raise SystemExit(f"{variant} run failed ({code}): {result}")
    else:
        args = [sys.executable, __file__, "--child-baseline", json.dumps(spec)]
        wall, code, rss, out = run_child(args, env)
        if code != 0:
            raise SystemExit(f"baseline failed ({code})")
        child = json.loads(out)
        seconds, items = child["seconds"], child["items"]
    stats = server.stats()
    ok = stats["byStatus"].get("200", 0)
    return {"variant": variant, "seconds": round(seconds, 2), "wallSeconds": round(wall, 2), "items": items,
            "requests": stats["requests"], "needed": ok, "okPerSecond": round(ok / seconds, 2),
            "fractionOfLimit": round(ok / seconds / limit, 3), "idealSeconds": round(ok / limit, 2),
            "ofIdeal": round(seconds / (ok / limit), 3), "throttled429": stats["rateLimited"],
            "earlyDuringRetryAfter": stats["early"], "peakRssMiB": round(rss / 1024, 1)}


def aim(name: str, row: dict) -> tuple[str, bool]:
    """The scenario's aim in words, and whether the median row meets it."""
    if name.startswith("a"):
        return "<= 1.25x of needed/limit", row["ofIdeal"] <= 1.25
    if name == "b":
        return ">= 90% of limit, <= 3 429s", row["fractionOfLimit"] >= 0.90 and row["throttled429"] <= 3
    return ">= 85% of limit, no 429s", row["fractionOfLimit"] >= 0.85 and row["throttled429"] == 0


def timeline(opts) -> None:
    """Scenario (a) in-process, with a limiter that records every 429 and the rate each second."""
    from thresher.jobs.tmdb.client import Credentials, TmdbClient
    from thresher.jobs.tmdb.collect import run_collection
    from thresher.demo.fakes.tmdb_server import FakeConfig, running_fake_server
    from thresher.jobs.tmdb.ratelimit import RateLimiter
    from thresher.jobs.tmdb.retry import RetryPolicy
    from thresher.api.tmdb import TmdbJob

    events: list[tuple[float, str, float, float]] = []
    samples: list[tuple[float, float]] = []

    class Recording(RateLimiter):
        def on_throttled(self, retry_after=None, sent_at=None):
            before = self.rate
            cut = super().on_throttled(retry_after, sent_at)
            events.append((time.monotonic(), "cut" if cut else "same burst", before, self.rate))
            return cut

        def on_success(self, sent_at=None):
            super().on_success(sent_at)
            samples.append((time.monotonic(), self.rate))

    limit, retry_after, rps = SCENARIOS["a"]
    config = FakeConfig(api_key=KEY, latency_ms=opts.latency_ms, rate_limit=limit,
                        rate_limit_burst=limit * opts.bucket, rate_limit_retry_after=retry_after)
    with running_fake_server(config) as server, tempfile.TemporaryDirectory() as tmp:
        spec = TmdbJob.model_validate(weekly_spec(opts.scale, server.base_url, rps, None))
        limiter = Recording(spec.requests_per_second, burst=2)
        start = time.monotonic()
        with TmdbClient(Credentials(api_key=KEY), server.base_url, limiter=limiter,
                        policy=RetryPolicy(max_retries=spec.max_retries), pool_size=spec.workers) as client:
            outcome = run_collection(spec, client, Path(tmp))
        total = time.monotonic() - start
    print(f"run: {total:.2f} s, {server.stats()['byStatus'].get('200', 0)} answered 200, "
          f"{len([e for e in events])} 429s, {limiter.slowdowns} cuts, exit {int(outcome.exit_code)}")
    print("| t (s) | 429s | cuts | rate after (req/s) |")
    print("|---|---|---|---|")
    last_second = int(total) + 1
    for second in range(last_second):
        window = [e for e in events if second <= e[0] - start < second + 1]
        rate = [r for t, r in samples if t - start < second + 1]
        cut_text = ", ".join(f"{b:.1f} -> {a:.1f}" for _, kind, b, a in window if kind == "cut") or "-"
        print(f"| {second}-{second + 1} | {len(window)} | {cut_text} | {rate[-1] if rate else limiter.target_rate:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.05, help="fraction of the weekly preset's pages")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--bucket", type=float, default=1.0, help="token-bucket size, in seconds of the limit")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of a,a-ra,b,c")
    parser.add_argument("--no-baseline", action="store_true", help="skip the sequential baseline")
    parser.add_argument("--before", metavar="DIR", help="also run the job of the checkout at DIR (e.g. the main "
                        "branch before a change) as the variant 'before'")
    parser.add_argument("--timeline", action="store_true", help="what the limiter did in scenario (a), by second")
    parser.add_argument("--child-baseline", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child_baseline:
        print(json.dumps(baseline(json.loads(opts.child_baseline))))
        return
    if opts.timeline:
        timeline(opts)
        return

    from thresher.demo.fakes.tmdb_server import FakeConfig, running_fake_server

    names = [n for n in opts.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    variants = ("thresher",) + (("before",) if opts.before else ()) + (() if opts.no_baseline else ("baseline",))
    config = FakeConfig(api_key=KEY, latency_ms=opts.latency_ms)
    rows: list[dict] = []
    with running_fake_server(config) as server, tempfile.TemporaryDirectory() as tmp:
        for rep in range(opts.repeat):
            for name in names:
                limit, retry_after, rps = SCENARIOS[name]
                spec = weekly_spec(opts.scale, server.base_url, rps, None)
                for variant in variants:
                    server.fake.set_rate_limit(limit, limit * opts.bucket, retry_after)
                    workdir = Path(tmp) / f"{name}-{variant}-{rep}"
                    workdir.mkdir()
                    row = {"scenario": name, **measure(server, variant, spec, workdir, limit, opts.before)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)

    keys = ("seconds", "requests", "needed", "okPerSecond", "fractionOfLimit", "idealSeconds", "ofIdeal",
            "throttled429", "earlyDuringRetryAfter", "peakRssMiB", "items")
    summary: dict = {"workload": f"weekly x{opts.scale} ({sum(s['pages'] for s in spec['sources'])} pages) "
                                 "+ enrich (credits)",
                     "latencyMs": opts.latency_ms, "bucketSeconds": opts.bucket, "repeat": opts.repeat,
                     "scenarios": {}}
    print("\nscenario variant   seconds ideal-s  x-ideal needed requests  ok/s of-limit 429s early  aim")
    for name in names:
        limit, retry_after, rps = SCENARIOS[name]
        entry = {"limit": limit, "retryAfter": retry_after, "jobRequestsPerSecond": rps or "default"}
        for variant in variants:
            picked = [r for r in rows if r["scenario"] == name and r["variant"] == variant]
            med = {k: statistics.median(r[k] for r in picked) for k in keys}
            med["runs"] = [r["seconds"] for r in picked]
            entry[variant] = med
            text, met = aim(name, med) if variant == "thresher" else ("", True)
            print(f"{name:<8} {variant:<9} {med['seconds']:>7.2f} {med['idealSeconds']:>7.2f} {med['ofIdeal']:>8.3f} "
                  f"{med['needed']:>6} {med['requests']:>8} {med['okPerSecond']:>5.1f} {med['fractionOfLimit']:>8.3f} "
                  f"{med['throttled429']:>4} {med['earlyDuringRetryAfter']:>5}  {text + (': met' if met else ': MISSED') if text else ''}")
            if variant == "thresher":
                entry["aim"], entry["aimMet"] = text, met
        if "baseline" in entry:
            entry["speedup"] = round(entry["baseline"]["seconds"] / entry["thresher"]["seconds"], 2)
            print(f"{'':<8} wall-time ratio baseline/thresher: {entry['speedup']}x")
        if "before" in entry:
            entry["beforeRatio"] = round(entry["before"]["seconds"] / entry["thresher"]["seconds"], 2)
            print(f"{'':<8} wall-time ratio before/thresher: {entry['beforeRatio']}x")
        summary["scenarios"][name] = entry
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
