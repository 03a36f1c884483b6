"""Report over a period, state backups with retention, and cleanup with a dry run."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path


from thresher.jobs.drone import maintenance as mt
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.pipeline import run_process
from thresher.jobs.drone.state import StateDB

DAY = 86400.0


def seed_inputs(root: Path, n: int = 3) -> None:
    for i in range(n):
        labels, _ = sm.field_labels(32, 32, 0.5, 0.25, seed=i)
        sm.write_rgb(root / f"f{i}.png", sm.rgb_field(labels, seed=i))


def test_backups_to_delete_keeps_newest_and_ignores_foreign_files():
    names = ["drone-20240101T000000Z.sqlite", "drone-20240103T000000Z.sqlite", "notes.txt",
             "drone-20240102T000000Z.sqlite", ".drone-20240104T000000Z.sqlite.tmp"]
    assert mt.backups_to_delete(names, 2) == ["drone-20240101T000000Z.sqlite"]
    assert mt.backups_to_delete(names, 5) == []


def test_backup_is_a_consistent_snapshot_and_keeps_n(data_dir, spec, paths, engine):
    seed_inputs(data_dir / "input")
    run_process(spec, paths, engine)
    spec = spec.model_copy(update={"backup_keep": 2})
    t0 = 1_700_000_000.0
    made = [mt.run_backup(spec, paths, t0 + i * DAY) for i in range(3)]
    assert made[-1].rows == 3 and made[-1].deleted == [made[0].path.name]
    assert sorted(p.name for p in paths.backups.iterdir()) == sorted(m.path.name for m in made[1:])
    with sqlite3.connect(made[-1].path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM items WHERE status='done'").fetchone()[0] == 3


def test_backup_while_a_writer_commits(data_dir, spec, paths, engine):
    """Online backup: a writer inserting rows concurrently never yields a torn copy."""
    seed_inputs(data_dir / "input", 1)
    run_process(spec, paths, engine)
    stop = threading.Event()

    def writer():
        with StateDB(paths.db) as db:
            i = 0
            while not stop.is_set():
                db.conn.execute("INSERT INTO runs (run_id, task, started_at) VALUES (?, 'process', 0)", (f"w{i}",))
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        results = [mt.run_backup(spec, paths, 1_700_000_000.0 + i) for i in range(5)]
    finally:
        stop.set()
        thread.join()
    for r in results:
        with sqlite3.connect(r.path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cleanup_dry_run_then_delete(data_dir, spec, paths, engine):
    seed_inputs(data_dir / "input")
    stats = run_process(spec, paths, engine)
    old = time.time() - 40 * DAY
    run_dir = stats.summary_path.parent
    os.utime(run_dir, (old, old))
    old_map = data_dir / "output" / "maps" / "f0.png.png"
    os.utime(old_map, (old, old))
    (data_dir / "input" / "f2.png").unlink()
    run_process(spec, paths, engine)  # notices f2 vanished
    with StateDB(paths.db) as db:
        db.conn.execute("UPDATE items SET missing_since=?, processed_at=? WHERE key='f2.png'", (old, old))
        db.conn.execute("UPDATE items SET processed_at=? WHERE key='f0.png'", (old,))
    now = time.time()
    dry = mt.run_cleanup(spec.model_copy(update={"dry_run": True}), paths, now)
    assert f"runs/{run_dir.name}" in dry.outputs and "maps/f0.png.png" in dry.outputs
    assert dry.state_rows == ["f2.png"] and dry.expire_rows == ["f0.png"]
    assert run_dir.exists() and old_map.exists()  # dry run deleted nothing
    done = mt.run_cleanup(spec, paths, now)
    assert done.outputs == dry.outputs
    assert not run_dir.exists() and not old_map.exists()
    with StateDB(paths.db) as db:
        assert db.row("f2.png") is None
        assert db.row("f0.png")["status"] == "done" and db.row("f0.png")["outputs_expired"] == 1
    assert run_process(spec, paths, engine).items == []  # expired outputs are not reprocessed


def test_report_covers_only_the_period(data_dir, spec, paths, engine):
    seed_inputs(data_dir / "input")
    (data_dir / "input" / "bad.jpg").write_bytes(b"nope")
    run_process(spec, paths, engine)
    with StateDB(paths.db) as db:
        db.conn.execute("UPDATE items SET processed_at=? WHERE key='f0.png'", (time.time() - 10 * DAY,))
    summary = mt.run_report(spec, paths, time.time())  # default 7 days
    assert summary["items"] == 3 and summary["valid"] == 2 and summary["failed"] == 1
    html = (Path(summary["path"]).parent / "report.html").read_text()
    assert "f1.png" in html and "f0.png" not in html and "bad.jpg" in html
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert (Path(summary["path"]).parent / "summary.csv").read_text().startswith("key,kind,frame_time")
