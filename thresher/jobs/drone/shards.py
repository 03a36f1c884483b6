"""Fan-out: one process run split over the indexes of an Indexed Job (docs/drone.md "Fan-out").

Index ``i`` of ``N`` (``JOB_COMPLETION_INDEX``) of run ``R`` (``THRESHER_RUN_ID``, the Job's name):

* takes the photos, captures and videos whose key hashes to ``i`` (SHA-256 of the key modulo N:
  stable across runs, pods and Python versions) and, of every orthomosaic, its share of the strips
  (``ortho.shard_span``): every index computes the same split from the file's header alone;
* keeps its own state (``statePath/shard-i-of-N``: its own lock and database), so each shard's
  items are processed exactly once, and a retried index redoes only its own shard;
* writes pass 1 of each orthomosaic as a part file
  (``orthomosaics/<key>/.parts/<fingerprint>/<i>-of-<N>.npz``, atomically) and its run file
  (``runs/<R>/shards/<i>-of-<N>.json``: its item results, atomically);
* then, under a lock on ``runs/<R>/.merge.lock``, the index that finds every run file present
  merges: each orthomosaic whose parts are all there (and not yet merged) gets its statistics,
  class COG, zones, map and report (``ortho.merge_parts``), and the run gets its summary, CSV and
  HTML over every shard's items. The merge is idempotent (outputs are atomic and marked), so a
  retried or concurrent merger redoes nothing.

Each index's RunResult counts its own items plus the orthomosaics it merged; the operator sums the
indexes' results (``thresher/operator/runs.py``), so the run counts every shard once.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from thresher.api.names import COMPLETION_INDEX_ENV, RUN_ID_ENV
from thresher.jobs.harness import ConfigError, atomic_write_bytes, atomic_write_text

MERGED_MARKER = "merged.json"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    run_id: str

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def state_dir(self, state: Path) -> Path:
        return state / f"shard-{self.name}"

    def owns(self, key: str) -> bool:
        """Whether a photo, capture or video is this shard's (orthomosaics are every shard's)."""
        return shard_of_key(key, self.count) == self.index


def shard_of_key(key: str, count: int) -> int:
    """The shard of an input: SHA-256 of its key modulo ``count`` (stable; Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def from_env(parallelism: int, environ: Mapping[str, str]) -> Shard | None:
    """This pod's shard, from the variables Kubernetes (the index) and the operator (the run id) set;
    None for a run of one pod. ConfigError names what is missing."""
    if parallelism <= 1:
        return None
    raw = environ.get(COMPLETION_INDEX_ENV, "")
    run_id = environ.get(RUN_ID_ENV, "").strip()
    if not raw.strip().isdigit() or int(raw) >= parallelism:
        raise ConfigError(f"parallelism {parallelism} needs ${COMPLETION_INDEX_ENV} between 0 and "
                          f"{parallelism - 1} (an Indexed Job sets it), got {raw!r}")
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ConfigError(f"parallelism {parallelism} needs ${RUN_ID_ENV}, the run's id shared by its indexes "
                          f"(the operator sets the Job's name), got {run_id!r}")
    return Shard(int(raw), parallelism, run_id)


def parts_dir(output: Path, key: str, fingerprint: str) -> Path:
    return output / "orthomosaics" / key / ".parts" / fingerprint[:16]


def run_dir(output: Path, shard: Shard) -> Path:
    return output / "runs" / shard.run_id


def save_part(output: Path, key: str, fingerprint: str, shard: Shard, part: dict | str) -> None:
    """An orthomosaic's pass-1 part (arrays), or why the shard could not read it (a string)."""
    folder = parts_dir(output, key, fingerprint)
    if isinstance(part, str):
        atomic_write_text(folder / f"{shard.name}.json", json.dumps({"ok": False, "reason": part}))
        return
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **part)
    atomic_write_bytes(folder / f"{shard.name}.npz", buf.getvalue())


def load_parts(folder: Path, count: int) -> Iterator[dict] | str | None:
    """Every shard's part, loaded one at a time as the merge adds it (in index order, so the merge's float
    sums come out the same whoever merges); the first shard's reason when one could not read the mosaic;
    or None while some part is missing."""
    paths = []
    for i in range(count):
        failed = folder / f"{i}-of-{count}.json"
        if failed.is_file():
            return json.loads(failed.read_text())["reason"]
        path = folder / f"{i}-of-{count}.npz"
        if not path.is_file():
            return None
        paths.append(path)
    return _loaded(paths)


def _loaded(paths: list[Path]) -> Iterator[dict]:
    import numpy as np

    for path in paths:
        with np.load(path) as data:
            yield {name: data[name] for name in data.files}


class MergeLock:
    """Blocking flock on the run's merge lock: one merger at a time, released when its process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> MergeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def write_run_file(output: Path, shard: Shard, items: list[dict]) -> None:
    atomic_write_text(run_dir(output, shard) / "shards" / f"{shard.name}.json", json.dumps({"items": items}))


def read_run_files(output: Path, shard: Shard) -> list[list[dict]] | None:
    """Every index's item results, or None while some index has not finished."""
    files = [run_dir(output, shard) / "shards" / f"{i}-of-{shard.count}.json" for i in range(shard.count)]
    if not all(f.is_file() for f in files):
        return None
    return [json.loads(f.read_text())["items"] for f in files]


def merge_mosaics(output: Path, mosaics: list, count: int, merge_one: Callable[[object, Iterator[dict] | str], dict]
                  ) -> list[dict]:
    """Item results of the orthomosaics (items with ``key`` and ``fingerprint``) whose parts are complete
    and not yet merged; ``merge_one(item, parts or reason)`` writes one and returns its item result. Each
    is marked merged after its outputs, so a merge that dies midway is redone and a finished one is never
    repeated (nor counted twice)."""
    results = []
    for item in mosaics:
        folder = parts_dir(output, item.key, item.fingerprint)
        if (folder / MERGED_MARKER).is_file():
            continue
        parts = load_parts(folder, count)
        if parts is None:
            continue
        result = merge_one(item, parts)
        atomic_write_text(folder / MERGED_MARKER, json.dumps({"ok": result["ok"]}))
        for done in [*folder.glob("*.npz"), *folder.glob("*-of-*.json")]:
            done.unlink()  # the zone-grid rows of every shard: not needed once merged and marked
        results.append(result)
    return results
