"""Discovery and the durable state: each input processed exactly once, whatever point a run dies at."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.discovery import FileInfo, group, scan
from thresher.jobs.drone.pipeline import run_process
from thresher.jobs.drone.state import StateDB, StateLock
from thresher.jobs.harness import UpstreamError


def small_rgb(path: Path, seed: int = 0, size=(32, 48)) -> None:
    labels, _ = sm.field_labels(*size, 0.5, 0.3, seed=seed)
    sm.write_rgb(path, sm.rgb_field(labels, seed=seed))


def completions(db_path: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(db_path) as conn:
        return {k: (s, c) for k, s, c in conn.execute("SELECT key, status, completions FROM items")}


# --- discovery (pure) ------------------------------------------------------------------------

def f(rel: str, size: int = 10, mtime: int = 1) -> FileInfo:
    return FileInfo(rel, size, mtime)


def test_group_micasense_dji_and_plain_images():
    items = group([f("a/IMG_0001_1.tif"), f("a/IMG_0001_2.tif"), f("a/IMG_0001_3.tif"), f("a/IMG_0001_4.tif"),
                   f("a/IMG_0001_5.tif"), f("a/IMG_0001_6.tif"), f("b/DJI_0010.JPG"), f("b/DJI_0011.TIF"),
                   f("b/DJI_0015.TIF"), f("c/DJI_0123.JPG"), f("d/clip.MP4")])
    by = {i.key: i for i in items}
    assert set(by) == {"a/IMG_0001", "b/DJI_001", "b/DJI_0010.JPG", "c/DJI_0123.JPG", "d/clip.MP4"}
    assert dict(by["a/IMG_0001"].members) == {"B": "a/IMG_0001_1.tif", "G": "a/IMG_0001_2.tif",
                                             "R": "a/IMG_0001_3.tif", "N": "a/IMG_0001_4.tif",
                                             "RE": "a/IMG_0001_5.tif"}
    assert by["a/IMG_0001"].ignored == ("a/IMG_0001_6.tif",)  # Altum thermal band is not used
    assert dict(by["b/DJI_001"].members) == {"B": "b/DJI_0011.TIF", "N": "b/DJI_0015.TIF"}  # 5 is NIR on DJI
    assert by["b/DJI_001"].missing_bands() == ["G", "R", "RE"]
    assert by["c/DJI_0123.JPG"].kind == "image" and by["d/clip.MP4"].kind == "video"


def test_fingerprint_changes_with_size_mtime_or_a_new_band():
    base = group([f("IMG_0001_1.tif")])[0].fingerprint
    assert group([f("IMG_0001_1.tif", size=11)])[0].fingerprint != base
    assert group([f("IMG_0001_1.tif", mtime=2)])[0].fingerprint != base
    assert group([f("IMG_0001_1.tif"), f("IMG_0001_2.tif")])[0].fingerprint != base
    assert group([f("IMG_0001_1.tif")])[0].fingerprint == base


def test_scan_filters_extensions_hidden_and_recursion(tmp_path: Path):
    for rel in ("a.JPG", "b.txt", ".c.jpg.tmp", "sub/d.png", ".hidden/e.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()  # a folder named like an image is not an input
    assert [x.rel for x in scan(tmp_path, frozenset({"jpg", "png"}))] == ["a.JPG", "sub/d.png"]
    assert [x.rel for x in scan(tmp_path, frozenset({"jpg", "png"}), recursive=False)] == ["a.JPG"]


# --- exactly once ----------------------------------------------------------------------------

def test_second_run_processes_nothing_and_changed_file_is_redone(data_dir, spec, paths, engine):
    for i in range(3):
        small_rgb(data_dir / "input" / f"f{i}.png", i)
    assert len(run_process(spec, paths, engine).items) == 3
    assert run_process(spec, paths, engine).items == []
    target = data_dir / "input" / "f1.png"
    small_rgb(target, 99)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = run_process(spec, paths, engine)
    assert [i["key"] for i in again.items] == ["f1.png"]
    assert all(c == ("done", 1) for c in completions(paths.db).values())


class Crash(BaseException):
    """Stands in for SIGKILL inside the process (BaseException: nothing may swallow it)."""


@pytest.mark.parametrize("point", ["during_processing", "after_outputs_before_commit", "after_commit"])
def test_crash_at_any_point_neither_loses_nor_repeats(data_dir, spec, paths, engine, point, monkeypatch):
    for i in range(5):
        small_rgb(data_dir / "input" / f"img{i}.png", i)
    spec = spec.model_copy(update={"batch_size": 2})
    from thresher.jobs.drone import pipeline

    original = pipeline.Processor.process_item
    calls = {"n": 0}

    def process_item(self, item):
        calls["n"] += 1
        if point == "during_processing" and calls["n"] == 4:
            raise Crash()
        return original(self, item)

    def after_outputs(claimed):
        if point == "after_outputs_before_commit" and calls["n"] >= 4:
            raise Crash()

    monkeypatch.setattr(pipeline.Processor, "process_item", process_item)
    committed = []
    if point == "after_commit":
        real_complete = StateDB.complete

        def complete(self, run_id, outcomes, now):
            n = real_complete(self, run_id, outcomes, now)
            committed.append(n)
            if len(committed) == 2:
                raise Crash()
            return n

        monkeypatch.setattr(StateDB, "complete", complete)
    with pytest.raises(Crash):
        run_process(spec, paths, engine, after_outputs=after_outputs)
    monkeypatch.undo()
    state = completions(paths.db)
    done_before = {k for k, (s, _) in state.items() if s == "done"}
    assert len(done_before) == (4 if point == "after_commit" else 2)  # batches of 2 committed before the crash
    if point != "after_commit":
        assert sum(1 for s, _ in state.values() if s == "claimed") == 2  # the batch in flight
    second = run_process(spec, paths, engine)
    assert sorted(i["key"] for i in second.items) == sorted(set(state) - done_before)
    assert completions(paths.db) == {f"img{i}.png": ("done", 1) for i in range(5)}
    assert len(list((data_dir / "output" / "items").glob("*.json"))) == 5


def test_sigkill_mid_run_then_rerun_completes_each_file_once(data_dir):
    """A real kill -9 of the CLI while it works, then a second run: all done, each completed once."""
    for i in range(24):
        small_rgb(data_dir / "input" / f"k{i:02d}.png", i, size=(256, 256))
    env = {**os.environ, "THRESHER_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "thresher.cli", "job", "drone", "run", "--spec",
           '{"batchSize": 1, "workers": 1, "backend": "cpu"}', "--result-path", str(data_dir / "r.json")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = data_dir / "state" / "drone.sqlite"
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = sum(1 for s, _ in completions(db).values() if s == "done")
        except sqlite3.Error:
            done = 0
        if done >= 3:
            break
        time.sleep(0.02)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    state = completions(db)
    assert state == {f"k{i:02d}.png": ("done", 1) for i in range(24)}
    if killed:  # the usual case; if the first run won the race, the check above still holds
        assert 0 < done < 24
        statuses = sorted(s for s, _ in runs(db).values())
        assert statuses == ["finished", "interrupted"]  # the killed run is closed, not unfinished forever
        result = json.loads((data_dir / "r.json").read_text())
        summary = json.loads(Path(result["output"]).read_text())
        assert summary["recovered_items"] + summary["items"] == 24  # every file in exactly one summary


def test_state_lock_refuses_a_second_concurrent_run(tmp_path: Path):
    with StateLock(tmp_path):
        with pytest.raises(UpstreamError):
            with StateLock(tmp_path):
                pass
    with StateLock(tmp_path):  # released on exit
        pass


def test_band_arriving_later_completes_a_failed_capture(data_dir, spec, paths, engine):
    labels, truth = sm.field_labels(32, 32, 0.5, 0.5, seed=3)
    files = sm.write_micasense(data_dir / "input", 1, labels)
    held = files[-1].read_bytes()
    files[-1].unlink()
    first = run_process(spec, paths, engine)
    assert not first.items[0]["ok"] and "missing band(s) RE" in first.items[0]["reason"]
    files[-1].write_bytes(held)
    second = run_process(spec, paths, engine)
    assert second.items[0]["ok"] and second.items[0]["frames"][0]["cover"] == pytest.approx(0.5)


def runs(db_path: Path) -> dict[str, tuple]:
    with sqlite3.connect(db_path) as conn:
        return {r: (s, i) for r, s, i in conn.execute("SELECT run_id, status, items FROM runs")}


def test_killed_run_is_closed_as_interrupted_and_its_items_reported_next(data_dir, paths, engine):
    """Issue 14: items finished by a run that was then killed appeared in no summary, and the run stayed
    unfinished in the state database forever."""
    from thresher.api.drone import DroneJob

    spec = DroneJob(workers=1, batchSize=2, healthMapMaxSize=64)
    for i in range(5):
        small_rgb(data_dir / "input" / f"img{i}.png", i)
    batches = {"n": 0}

    def after_outputs(claimed):
        batches["n"] += 1
        if batches["n"] == 2:
            raise Crash()

    with pytest.raises(Crash):
        run_process(spec, paths, engine, after_outputs=after_outputs, run_id="dead-run")
    assert runs(paths.db)["dead-run"] == ("running", None)
    assert not (paths.output / "runs" / "dead-run").exists()
    second = run_process(spec, paths, engine, run_id="next-run")
    assert runs(paths.db) == {"dead-run": ("interrupted", 2), "next-run": ("finished", 3)}
    summary = json.loads(second.summary_path.read_text())
    recovered = [r for r in summary["results"] if r.get("recovered_from") == "dead-run"]
    assert sorted(r["key"] for r in recovered) == ["img0.png", "img1.png"]
    assert summary["recovered_items"] == 2 and summary["items"] == 3 and summary["frames"] == 5
    assert summary["recovered_runs"][0]["run_id"] == "dead-run"
    assert any("dead-run was interrupted" in w for w in second.warnings)
    third = run_process(spec, paths, engine, run_id="third-run")  # reported once, not again
    assert third.recovered == [] and third.summary_path is None


def test_empty_run_writes_no_run_folder(data_dir, spec, paths, engine):
    small_rgb(data_dir / "input" / "a.png")
    first = run_process(spec, paths, engine)
    second = run_process(spec, paths, engine)
    assert first.summary_path is not None and second.summary_path is None
    assert [p.name for p in (paths.output / "runs").iterdir()] == [first.run_id]
    assert runs(paths.db)[second.run_id] == ("finished", 0)


def test_state_database_from_before_run_status_is_upgraded(tmp_path: Path):
    db = tmp_path / "drone.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT NOT NULL, started_at REAL NOT NULL, "
                     "finished_at REAL, items INTEGER, valid INTEGER, failed INTEGER, exit_code INTEGER, "
                     "summary_path TEXT)")
        conn.execute("INSERT INTO runs (run_id, task, started_at) VALUES ('old', 'process', 1.0)")
    with StateDB(db) as state:
        closed = state.close_interrupted("process", 2.0)
        assert [r.run_id for r in closed] == ["old"] and state.run_row("old")["status"] == "interrupted"


def test_outputs_written_on_threads_are_on_disk_before_the_batch_is_committed(data_dir, spec, paths, engine,
                                                                              monkeypatch):
    """Map PNGs and item JSONs go to writer threads (their fsyncs no longer stall a worker), yet a batch is
    committed only once all of them are on disk: slow writes are waited for, a failed one fails the batch."""
    from thresher.jobs.drone import pipeline

    for i in range(4):
        small_rgb(data_dir / "input" / f"img{i}.png", i)
    spec = spec.model_copy(update={"batch_size": 2, "workers": 2})
    real_write = pipeline.atomic_write_bytes

    threads = set()

    def slow_write(path, data):
        threads.add(threading.current_thread().name)
        time.sleep(0.2)
        real_write(path, data)

    monkeypatch.setattr(pipeline, "atomic_write_bytes", slow_write)
    seen = []

    def after_outputs(claimed):
        for c in claimed:
            key = c.item.key
            seen.append((paths.output / "items" / f"{key}.json").is_file()
                        and (paths.output / "maps" / f"{key}.png").is_file())

    run_process(spec, paths, engine, after_outputs=after_outputs)
    assert seen == [True] * 4
    assert threads and all(name.startswith("drone-write") for name in threads), threads

    small_rgb(data_dir / "input" / "late.png", 9)

    def failing_write(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "atomic_write_bytes", failing_write)
    with pytest.raises(OSError, match="No space left"):
        run_process(spec, paths, engine)
    assert completions(paths.db)["late.png"][0] == "claimed"  # not committed as done
