"""`make bench`: every benchmark, one after another, each in its own process.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only tmdb,drone,scale,scale5000]

Default settings are the ones docs/benchmarks.md quotes; ``--quick`` shrinks each to a
smoke-sized run (minutes, not tens of minutes). The scale benchmark starts and stops its own
control plane in /tmp/bench-cluster; it never touches the shared dev cluster. Exit status: the
first failing benchmark's, after all of them ran.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = {
    "tmdb": (["tmdb_bench.py", "--repeat", "3"], ["tmdb_bench.py", "--repeat", "1", "--scenarios", "b,c"]),
    "drone": (["drone_bench.py", "--images", "8", "--rounds", "5"], ["drone_bench.py", "--images", "2", "--rounds", "1"]),
    "scale": (["scale_bench.py", "--sizes", "1000", "--json", "/tmp/thresher-scale-bench.json"],
              ["scale_bench.py", "--sizes", "100", "--steady-seconds", "20",
               "--json", "/tmp/thresher-scale-bench.json"]),
    # docs/benchmarks.md "Memory and 5,000 schedules"; the burst and kill scenarios run at 1,000.
    "scale5000": (["scale_bench.py", "--sizes", "5000", "--scenarios", "baseline,create,steady",
                   "--steady-seconds", "120", "--json", "/tmp/thresher-scale5000-bench.json"],
                  ["scale_bench.py", "--sizes", "300", "--scenarios", "baseline,create,steady",
                   "--steady-seconds", "20", "--json", "/tmp/thresher-scale5000-bench.json"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args(argv)
    status = 0
    for name in args.only.split(","):
        full, quick = BENCHMARKS[name]
        argv_ = quick if args.quick else full
        print(f"=== {name}: {' '.join(argv_)}", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / argv_[0]), *argv_[1:]])
        print(f"=== {name}: exit {rc} after {time.monotonic() - start:.0f}s", flush=True)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
