"""``--watch``: process files as they arrive.

File-system events (watchdog) only wake the loop; each pass is an ordinary
``run_process`` (discovery against the state database), so a missed or duplicated
event can neither lose nor repeat a file. A periodic rescan covers file systems
without inotify (NFS). Files modified in the last ``settle`` seconds are left for a
later pass so that half-copied files are not read.
"""

from __future__ import annotations

import logging
import threading
import time

from thresher.api.drone import DroneJob
from thresher.jobs.drone.pipeline import Paths, run_process

log = logging.getLogger("thresher.drone.watch")
RESCAN_SECONDS = 30.0


def watch(spec: DroneJob, paths: Paths, engine, stop: threading.Event, seconds: float = float("inf"),
          settle: float = 2.0, rescan: float = RESCAN_SECONDS) -> list[dict]:
    """Run passes until ``stop`` is set or ``seconds`` elapse; returns the item results of all passes."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    wake = threading.Event()

    class Wake(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            wake.set()

    paths.input.mkdir(parents=True, exist_ok=True)
    observer = Observer()
    observer.schedule(Wake(), str(paths.input), recursive=spec.recursive)
    observer.start()
    deadline = time.monotonic() + seconds
    results: list[dict] = []
    try:
        wake.set()  # first pass at once
        while not stop.is_set() and time.monotonic() < deadline:
            timeout = min(rescan, max(0.0, deadline - time.monotonic()))
            if not wake.wait(timeout) and time.monotonic() >= deadline:
                break
            if stop.is_set():
                break
            wake.clear()
            stats = run_process(spec, paths, engine, settle_seconds=settle)
            results.extend(stats.items)
            if stats.unsettled:
                # Files still settling were skipped: look again once they have settled.
                threading.Timer(settle, wake.set).start()
            log.info("watch pass", extra={"items": len(stats.items), "run_id": stats.run_id})
    finally:
        observer.stop()
        observer.join(timeout=5)
    return results
