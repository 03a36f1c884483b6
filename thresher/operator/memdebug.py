"""Opt-in memory diagnostics: ``THRESHER_TRACEMALLOC=/path/prefix`` makes the operator trace
allocations and, on SIGUSR1, write the top allocation sites, the most numerous object types and
the process's VmRSS/VmHWM to ``/path/prefix.<n>.txt``. Off by default (tracing costs memory and
CPU); used to find what the operator keeps per schedule (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import tracemalloc
from collections import Counter
from pathlib import Path

FRAMES = 10


def install(prefix: str) -> None:
    tracemalloc.start(FRAMES)
    counter = itertools.count()
    signal.signal(signal.SIGUSR1, lambda *_: dump(Path(f"{prefix}.{next(counter)}.txt")))


def dump(path: Path) -> None:
    snapshot = tracemalloc.take_snapshot()
    lines = [_proc_status(), f"traced now/peak MiB: {_mib(tracemalloc.get_traced_memory())}, "
             f"tracemalloc's own: {tracemalloc.get_tracemalloc_memory() / 2**20:.1f}",
             f"asyncio tasks: {_tasks()}", "", "== top lines"]
    lines += [str(s) for s in snapshot.statistics("lineno")[:40]]
    lines += ["", "== top tracebacks (innermost last)"]
    for s in snapshot.statistics("traceback")[:25]:
        lines.append(f"{s.size / 2**20:.1f} MiB in {s.count} blocks")
        lines += [f"    {f.filename}:{f.lineno}" for f in s.traceback]
    lines += ["", "== object types"]
    lines += [f"{n:9d} {t}" for t, n in Counter(type(o).__qualname__ for o in gc.get_objects()).most_common(40)]
    path.write_text("\n".join(lines) + "\n")


def _proc_status() -> str:
    wanted = ("VmRSS", "VmHWM", "RssAnon", "Threads")
    return ", ".join(line.replace("\t", " ") for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines()
                     if line.split(":")[0] in wanted)


def _mib(pair: tuple[int, int]) -> str:
    return "/".join(f"{v / 2**20:.1f}" for v in pair)


def _tasks() -> int | str:
    try:
        return len(asyncio.all_tasks(asyncio.get_running_loop()))
    except RuntimeError:  # the signal arrived outside the loop
        return "?"
