"""The process task: discover -> claim -> decode/compute -> write outputs atomically -> mark done.

Outputs under the output root (all file names derive from the item key, so redoing an
item rewrites the same files):

* ``maps/<key>.png`` (video frames: ``maps/<key>/t<seconds>.png``): colour health map;
* ``items/<key>.json``: the item's full result;
* ``runs/<run id>/summary.json``, ``summary.csv``, ``report.html``: the run.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp
from thresher.jobs.drone import decode as dc
from thresher.jobs.drone import healthmap as hm
from thresher.jobs.drone import ortho
from thresher.jobs.drone import report as rp
from thresher.jobs.drone import shards as sh
from thresher.jobs.drone.discovery import Item, extension, group, scan
from thresher.jobs.drone.state import DB_NAME, Claimed, Outcome, RecoveredRun, StateDB, StateLock
from thresher.jobs.harness import ConfigError, atomic_write_bytes, atomic_write_text

log = logging.getLogger("thresher.drone")


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    input: Path
    output: Path
    state: Path
    backups: Path

    @property
    def db(self) -> Path:
        return self.state / DB_NAME

    @classmethod
    def resolve(cls, spec: DroneJob, data_dir: Path) -> Paths:
        data_dir = Path(data_dir)
        pick = lambda p: Path(p) if Path(p).is_absolute() else data_dir / p  # noqa: E731
        return cls(data_dir, pick(spec.input_path), pick(spec.output_path), pick(spec.state_path),
                   pick(spec.backup_path))


def new_run_id(now: float) -> str:
    return datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def map_rel(key: str, frame_time: float | None) -> str:
    return f"maps/{key}.png" if frame_time is None else f"maps/{key}/t{frame_time:010.3f}.png"


def chunked(iterable: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for x in iterable:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- backends -------------------------------------------------------------------------------

class NumpyEngine:
    name = "cpu"
    decodes_jpeg = False

    def compute(self, frames: list[dc.Decoded], params: cp.ComputeParams) -> list[cp.Computed]:
        return [cp.compute_numpy(f, params) for f in frames]


class TorchEngine:
    def __init__(self, device: str):
        from thresher.jobs.drone.torch_backend import TorchBackend

        self.backend = TorchBackend(device)
        self.name = "cuda" if device == "cuda" else f"torch-{device}"
        self.decodes_jpeg = self.backend.gpu_decode
        self._lock = threading.Lock()  # one batch on the device at a time

    def compute(self, frames: list[dc.Decoded], params: cp.ComputeParams) -> list[cp.Computed]:
        with self._lock:
            return self.backend.compute_batch(frames, params)


def select_engine(choice: str):
    """cpu -> NumPy; cuda -> PyTorch on the GPU or a ConfigError; auto -> cuda when available.
    torch-cpu (hand use and tests only) -> the PyTorch code on the CPU."""
    from thresher.jobs.drone.torch_backend import cuda_available, torch_available

    if choice == "cpu":
        return NumpyEngine()
    if choice == "torch-cpu":
        if not torch_available():
            raise ConfigError("backend torch-cpu needs PyTorch: pip install 'thresher[gpu]'")
        return TorchEngine("cpu")
    if choice == "cuda":
        if not cuda_available():
            raise ConfigError("backend cuda needs PyTorch with a visible GPU (request nvidia.com/gpu and use "
                              "the jobs-gpu image), or set backend: auto/cpu")
        return TorchEngine("cuda")
    return TorchEngine("cuda") if cuda_available() else NumpyEngine()


# --- one run ----------------------------------------------------------------------------------

@dataclass
class RunStats:
    run_id: str
    items: list[dict] = field(default_factory=list)  # item results (ok and failed)
    warnings: list[str] = field(default_factory=list)
    summary_path: Path | None = None  # None: nothing to report, no run folder written
    unsettled: list[str] = field(default_factory=list)  # files left for later (still being written)
    recovered: list[RecoveredRun] = field(default_factory=list)  # interrupted runs closed by this one

    @property
    def valid(self) -> int:
        return sum(1 for i in self.items if i["ok"])

    @property
    def failed(self) -> int:
        return sum(1 for i in self.items if not i["ok"])


class Processor:
    """Processes claimed items with an engine and writes their outputs.

    Map PNGs and item JSONs are written (atomically, fsynced: a few ms each on a disk) by ``writer``
    threads when one is given, so a worker goes on to decode its next image instead of waiting for the
    disk; ``process_batch`` returns only once every write of the batch is done (the batch is committed
    after it), and a failed write fails the batch as it did when written in line."""

    def __init__(self, spec: DroneJob, paths: Paths, engine, workers: int | None = None,
                 shard: sh.Shard | None = None, writer: ThreadPoolExecutor | None = None):
        self.spec = spec
        self.shard = shard
        self.paths = paths
        self.engine = engine
        self.params = cp.ComputeParams.from_spec(spec)
        self.workers = workers or spec.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                  else (os.cpu_count() or 1))
        self.writer = writer
        self._writes: list[Future] = []
        self._writes_lock = threading.Lock()

    def write(self, path: Path, data: bytes) -> None:
        if self.writer is None:
            atomic_write_bytes(path, data)
            return
        future = self.writer.submit(atomic_write_bytes, path, data)
        with self._writes_lock:
            self._writes.append(future)

    def wait_for_writes(self) -> None:
        """Block until every write handed to the writer so far is on disk; re-raise the first failure."""
        with self._writes_lock:
            pending, self._writes = self._writes, []
        for future in pending:
            future.result()

    def frames(self, item: Item) -> Iterator[dc.Decoded]:
        if item.kind == "video":
            yield from dc.iter_video_frames(self.paths.input / item.members[0][1], item.key,
                                            self.spec.video_frame_interval_seconds, self.spec.max_video_frames)
        else:
            yield from dc.load(item, self.paths.input, backend_decodes_jpeg=self.engine.decodes_jpeg)

    def frame_result(self, item: Item, frame: dc.Decoded, computed: cp.Computed) -> dict:
        rel = None
        primary = computed.stats.get(computed.primary) if computed.primary else None
        if computed.map_index is not None and primary is not None:
            rel = map_rel(item.key, frame.frame_time)
            self.write(self.paths.output / rel, hm.render(computed.primary, primary, computed.map_index))
        return {
            "frame_time": frame.frame_time, "width": frame.width, "height": frame.height, "gps": frame.gps,
            "pixels": computed.pixels, "saturated": computed.saturated, "nodata": computed.nodata,
            "input_kind": computed.kind, "primary": computed.primary,
            # cover is a share of the field's valid pixels, stressed a share of its vegetation (docs/drone.md)
            "cover": primary.cover if primary else None, "stressed": primary.stressed if primary else None,
            "stressed_of_field": primary.stressed_of_field if primary else None,
            "indices": {name: s.to_dict() for name, s in computed.stats.items()},
            "map": rel,
        }

    def is_orthomosaic(self, item: Item) -> bool:
        return (item.kind == "image" and extension(item.members[0][1]) in ortho.TIFF_EXTENSIONS
                and ortho.is_orthomosaic(self.paths.input / item.members[0][1], self.spec.orthomosaic.min_pixels))

    def process_orthomosaic(self, item: Item) -> dict:
        """A GeoTIFF orthomosaic: read window by window (``ortho.py``), one frame of whole-mosaic statistics
        plus the class COG, the zones GeoJSON and the zone report. A shard of a fanned-out run does pass 1
        of its strips only (``process_part``)."""
        if self.shard is not None:
            return self.process_part(item)
        return self.orthomosaic_result(item, lambda path: ortho.process(path, item.key, self.spec, self.params,
                                                                        self.paths.output))

    def process_part(self, item: Item) -> dict:
        """Pass 1 of this shard's strips into a part file; the item itself is merged (and counted) once all
        shards' parts exist. A mosaic this shard cannot read leaves the reason as its part."""
        try:
            part = ortho.process_part(self.paths.input / item.members[0][1], item.key, self.spec, self.params,
                                      self.shard.index, self.shard.count)
        except dc.BadInput as err:
            part = str(err)
        sh.save_part(self.paths.output, item.key, item.fingerprint, self.shard, part)
        return {"key": item.key, "kind": "orthomosaic", "ok": True, "reason": None, "part": self.shard.name,
                "frames": [], "warnings": []}

    def merge_orthomosaic(self, item: Item, parts: Iterable[dict] | str) -> dict:
        """The shards' parts of one orthomosaic into its outputs, as ``process_orthomosaic`` writes them."""
        if isinstance(parts, str):
            return {"key": item.key, "kind": "orthomosaic", "ok": False, "reason": parts, "frames": [],
                    "warnings": []}
        return self.orthomosaic_result(item, lambda path: ortho.merge_parts(path, item.key, self.spec, self.params,
                                                                            self.paths.output, parts))

    def orthomosaic_result(self, item: Item, produce: Callable[[Path], dict]) -> dict:
        try:
            out = produce(self.paths.input / item.members[0][1])
        except dc.BadInput as err:
            return {"key": item.key, "kind": "orthomosaic", "ok": False, "reason": str(err), "frames": [],
                    "warnings": []}
        result = {"key": item.key, "kind": "orthomosaic", "ok": True, "reason": None, **out}
        atomic_write_text(self.paths.output / f"items/{item.key}.json", rp.to_json(result))
        return result

    def process_item(self, item: Item) -> dict:
        """One item, end to end; bad input becomes a failed result, never an exception."""
        if self.is_orthomosaic(item):
            return self.process_orthomosaic(item)
        frames: list[dict] = []
        warnings: list[str] = [f"ignored band file {p}" for p in item.ignored]
        try:
            for chunk in chunked(self.frames(item), self.spec.batch_size):
                for frame, computed in zip(chunk, self.engine.compute(chunk, self.params)):
                    warnings.extend(frame.warnings)
                    frames.append(self.frame_result(item, frame, computed))
        except dc.BadInput as err:
            return {"key": item.key, "kind": item.kind, "ok": False, "reason": str(err), "frames": [],
                    "warnings": warnings}
        result = {"key": item.key, "kind": item.kind, "ok": True, "reason": None, "frames": frames,
                  "warnings": warnings}
        self.write(self.paths.output / f"items/{item.key}.json", rp.to_json(result).encode("utf-8"))
        return result

    def process_batch(self, claimed: list[Claimed]) -> list[dict]:
        """Every item of a batch, its outputs on disk when this returns."""
        try:
            return self._process_batch([c.item for c in claimed])
        finally:
            self.wait_for_writes()

    def _process_batch(self, items: list[Item]) -> list[dict]:
        if isinstance(self.engine, TorchEngine):
            return self._process_batched(items)
        if self.workers <= 1 or len(items) <= 1:
            return [self.process_item(i) for i in items]
        # Orthomosaics one at a time (each bounds its own memory and reads with all CPUs), photos on threads.
        mosaics = {i.key: self.process_item(i) for i in items if self.is_orthomosaic(i)}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="drone") as pool:
            photos = dict(zip([i.key for i in items if i.key not in mosaics],
                              pool.map(self.process_item, [i for i in items if i.key not in mosaics])))
        return [mosaics.get(i.key) or photos[i.key] for i in items]

    def _process_batched(self, items: list[Item]) -> list[dict]:
        """Torch: decode still images on CPU threads (or only parse headers when nvJPEG decodes),
        compute all of them in one batch, then write outputs on threads. Videos and orthomosaics go one
        by one."""
        one_by_one = {i.key for i in items if i.kind == "video" or self.is_orthomosaic(i)}
        stills = [i for i in items if i.key not in one_by_one]

        def load(item: Item):
            try:
                return list(self.frames(item))
            except dc.BadInput as err:
                return err

        with ThreadPoolExecutor(self.workers, thread_name_prefix="drone-load") as pool:
            loaded = dict(zip([i.key for i in stills], pool.map(load, stills)))
        good = [(i, loaded[i.key]) for i in stills if not isinstance(loaded[i.key], dc.BadInput)]
        all_frames = [f for _, fs in good for f in fs]
        results: dict[str, dict] = {}
        computed_all: list[cp.Computed] | None
        try:
            computed_all = self.engine.compute(all_frames, self.params) if all_frames else []
        except Exception as err:  # noqa: BLE001 - e.g. nvJPEG rejects one image: redo one by one
            log.warning("batch compute failed, retrying items one by one", extra={"error": str(err)})
            computed_all = None
        if computed_all is None:
            for item, _ in good:
                results[item.key] = self.process_item(item)
        else:
            pos = 0

            def finish(entry):
                item, frames, computed = entry
                out = [self.frame_result(item, f, c) for f, c in zip(frames, computed)]
                result = {"key": item.key, "kind": item.kind, "ok": True, "reason": None, "frames": out,
                          "warnings": [w for f in frames for w in f.warnings]}
                self.write(self.paths.output / f"items/{item.key}.json", rp.to_json(result).encode("utf-8"))
                return result

            entries = []
            for item, frames in good:
                entries.append((item, frames, computed_all[pos:pos + len(frames)]))
                pos += len(frames)
            with ThreadPoolExecutor(self.workers, thread_name_prefix="drone-write") as pool:
                for result in pool.map(finish, entries):
                    results[result["key"]] = result
        for item in stills:
            if isinstance(loaded[item.key], dc.BadInput):
                results[item.key] = {"key": item.key, "kind": item.kind, "ok": False,
                                     "reason": str(loaded[item.key]), "frames": [], "warnings": []}
        for item in items:
            if item.key in one_by_one:
                results[item.key] = self.process_item(item)
        return [results[i.key] for i in items]


def run_process(spec: DroneJob, paths: Paths, engine=None, now: Callable[[], float] = time.time,
                settle_seconds: float = 0.0, run_id: str | None = None,
                after_outputs: Callable[[list[Claimed]], None] | None = None,
                shard: sh.Shard | None = None) -> RunStats:
    """One process run under the state lock. ``after_outputs`` runs between writing a batch's outputs
    and committing it (crash-injection point for tests; None in production). Runs that died before
    finishing are closed as interrupted and their completed items reported in this run's summary;
    a run with nothing to report writes no run folder. ``shard``: this process is one index of a
    fanned-out run (``shards.py``): its own state folder, its share of the inputs, and the merge when
    it finishes last."""
    if not paths.input.is_dir():
        raise ConfigError(f"input folder {paths.input} does not exist")
    if shard is not None:
        paths = replace(paths, state=shard.state_dir(paths.state))
    engine = engine or select_engine(spec.backend)
    started = now()
    run_id = run_id or new_run_id(started)
    stats = RunStats(run_id)
    # Outputs are written by two writer threads (Processor's docstring); leaving the block waits for them.
    with (StateLock(paths.state), StateDB(paths.db) as db,
          ThreadPoolExecutor(2, thread_name_prefix="drone-write") as writer):
        settle_ns = int((started - settle_seconds) * 1e9) if settle_seconds > 0 else None
        files = scan(paths.input, spec.normalized_extensions(), spec.recursive, settle_ns, stats.unsettled)
        processor = Processor(spec, paths, engine, shard=shard, writer=writer)
        items = group(files)
        mosaics: list[Item] = []
        if shard is not None:  # every shard reads its strips of every mosaic; other inputs by key hash
            mosaics = [i for i in items if processor.is_orthomosaic(i)]
            mosaic_keys = {i.key for i in mosaics}
            items = [i for i in items if i.key in mosaic_keys or shard.owns(i.key)]
        counts = db.sync(items, started)
        stats.recovered = db.close_interrupted("process", started)
        for run in stats.recovered:
            stats.warnings.append(f"run {run.run_id} was interrupted; its {len(run.items)} completed item(s) "
                                  "are reported in this run's summary")
        db.start_run(run_id, "process", started)
        log.info("discovered inputs", extra={"files": len(files), **counts, "run_id": run_id})
        while True:
            claimed = db.claim(run_id, spec.batch_size)
            if not claimed:
                break
            fingerprints = {c.item.key: c.item.fingerprint for c in claimed}
            results = processor.process_batch(claimed)
            if after_outputs is not None:
                after_outputs(claimed)
            db.complete(run_id, [Outcome(r["key"], fingerprints[r["key"]], r["ok"], r if r["ok"] else None,
                                         r.get("reason")) for r in results], now())
            stats.items.extend(results)
            for r in results:
                if not r["ok"]:
                    log.warning("skipped input", extra={"key": r["key"], "reason": r["reason"]})
        if shard is not None:
            stats.summary_path = finish_shard(spec, paths, stats, processor, mosaics, started, now)
        elif stats.items or any(run.items for run in stats.recovered):
            stats.summary_path = write_run_report(spec, paths, stats, engine.name, started, now())
        db.finish_run(run_id, now(), len(stats.items), stats.valid, stats.failed,
                      0 if not stats.failed else 5, str(stats.summary_path) if stats.summary_path else None)
    return stats


def finish_shard(spec: DroneJob, paths: Paths, stats: RunStats, processor: Processor, mosaics: list[Item],
                 started: float, now: Callable[[], float]) -> Path | None:
    """A shard's end: its run file, then (under the run's merge lock) the merge when every index's run file
    is there. ``stats.items`` becomes what this index counts: its own inputs plus the orthomosaics it
    merged (parts are counted where merged). Returns the run summary when this index wrote it."""
    shard = processor.shard
    own = [r for r in stats.items if not r.get("part")]
    recovered = [r for run in stats.recovered for r in run.items if not r.get("part")]
    sh.write_run_file(paths.output, shard, own + recovered)
    stats.items = own
    folder = sh.run_dir(paths.output, shard)
    with sh.MergeLock(folder / ".merge.lock"):
        runs = sh.read_run_files(paths.output, shard)
        if runs is None or (folder / "summary.json").is_file():
            return None
        merged = sh.merge_mosaics(paths.output, mosaics, shard.count, processor.merge_orthomosaic)
        stats.items = own + merged
        everything = RunStats(shard.run_id, items=[r for run in runs for r in run] + merged)
        if not everything.items:
            return None  # nothing new in any shard: no summary, as a run of one pod writes none
        log.info("merged the run's shards", extra={"run_id": shard.run_id, "shards": shard.count,
                                                   "items": len(everything.items), "orthomosaics": len(merged)})
        return write_run_report(spec, paths, everything, processor.engine.name, started, now())


def write_run_report(spec: DroneJob, paths: Paths, stats: RunStats, backend: str, started: float,
                     finished: float) -> Path:
    folder = paths.output / "runs" / stats.run_id
    recovered = [item for run in stats.recovered for item in run.items]
    summary = rp.summarize(stats.items, {
        "title": f"Drone crop-health run {stats.run_id}", "run_id": stats.run_id, "backend": backend,
        "generated": rp.iso(finished), "started": rp.iso(started), "duration_seconds": round(finished - started, 3),
        "recovered_runs": [{"run_id": run.run_id, "started": rp.iso(run.started_at), "items": len(run.items)}
                           for run in stats.recovered],
    }, recovered)
    atomic_write_text(folder / "summary.json", rp.to_json(summary))
    atomic_write_text(folder / "summary.csv", rp.to_csv(stats.items + recovered))
    atomic_write_text(folder / "report.html", rp.to_html(summary, "../../"))
    points = rp.photo_points(stats.items + recovered)
    if points["features"]:  # photos with EXIF GPS, one Point each (docs/drone.md, "Outputs")
        atomic_write_text(folder / "photos.geojson", rp.to_json(points))
    return folder / "summary.json"
