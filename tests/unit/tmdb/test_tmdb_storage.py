"""Snapshots that are complete or absent, and an idempotent, recoverable catalog."""

from __future__ import annotations

import json
import sqlite3

import pytest

from thresher.jobs.harness import UpstreamError
from thresher.jobs.tmdb.storage import (
    Catalog, data_dir_lock, is_committed, list_snapshots, read_jsonl, remove_stale_tmp, write_snapshot,
)


def _movies(n: int, seen: float = 100.0, title: str = "T") -> list[dict]:
    return [{"id": i, "title": f"{title}{i}", "popularity": 1.0, "vote_average": 5.0, "vote_count": 1,
             "release_date": "2020-01-01", "_fetched_at": seen} for i in range(1, n + 1)]


def _snapshot(tmp_path, name="daily-20250601T000000Z", movies=None, started="2025-06-01T00:00:00Z"):
    return write_snapshot(tmp_path, name, movies if movies is not None else _movies(3), [{"x": 1}],
                          {"collection": "daily", "startedAt": started}, {"report.json": b"{}"})


def test_snapshot_is_committed_with_hashes_and_manifest_last(tmp_path):
    snap = _snapshot(tmp_path)
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["runId"] == snap.name
    assert manifest["files"]["movies.jsonl"]["lines"] == 3
    assert [m["id"] for m in read_jsonl(snap / "movies.jsonl")] == [1, 2, 3]
    assert is_committed(snap) and list_snapshots(tmp_path) == [snap]
    assert not list((tmp_path / "snapshots").glob(".tmp-*"))


def test_a_tampered_or_manifestless_snapshot_is_not_complete(tmp_path):
    snap = _snapshot(tmp_path)
    with open(snap / "movies.jsonl", "a") as f:
        f.write('{"id": 99}\n')
    assert not is_committed(snap)
    other = _snapshot(tmp_path, "daily-20250602T000000Z")
    (other / "manifest.json").unlink()
    assert not is_committed(other) and list_snapshots(tmp_path) == []


def test_same_second_runs_never_overwrite(tmp_path):
    first, second = _snapshot(tmp_path), _snapshot(tmp_path)
    assert first != second and second.name.endswith("-2") and is_committed(first) and is_committed(second)


def test_leftover_tmp_dirs_are_ignored_then_removed(tmp_path):
    leftover = tmp_path / "snapshots" / ".tmp-daily-x"
    leftover.mkdir(parents=True)
    (leftover / "movies.jsonl").write_text('{"id":1}\n')
    (leftover / "manifest.json").write_text('{"complete": true, "files": {}}')
    assert list_snapshots(tmp_path) == [] and not is_committed(leftover)
    assert remove_stale_tmp(tmp_path) == [".tmp-daily-x"] and not leftover.exists()


def test_catalog_apply_is_idempotent(tmp_path):
    snap = _snapshot(tmp_path)
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert catalog.apply_snapshot(snap, "now") is True
        before = catalog.conn.execute("SELECT * FROM movies ORDER BY id").fetchall()
        assert catalog.apply_snapshot(snap, "later") is False
        assert catalog.conn.execute("SELECT * FROM movies ORDER BY id").fetchall() == before
        assert catalog.count() == 3 and catalog.applied_runs() == {snap.name}


def test_catalog_keeps_the_latest_state_and_first_seen(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as catalog:
        catalog.apply("new", "daily", "t2", _movies(2, seen=200.0, title="New"), "h", "now")
        catalog.apply("old", "daily", "t1", _movies(3, seen=100.0, title="Old"), "h", "now")  # replayed late
        assert catalog.get(1)["movie"]["title"] == "New1"  # an older run never regresses a movie
        assert catalog.get(3)["movie"]["title"] == "Old3"
        catalog.apply("newest", "daily", "t3", _movies(1, seen=300.0, title="Newest"), "h", "now")
        row = catalog.get(1)
        assert row["movie"]["title"] == "Newest1" and row["lastSeen"] == 300.0 and row["lastRun"] == "newest"


def test_a_failing_apply_leaves_nothing_behind(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as catalog:
        broken = [*_movies(2), {"id": 3}]  # no title: NOT NULL fails midway
        with pytest.raises(KeyError):
            catalog.apply("r", "daily", "t", broken, "h", "now")
        assert catalog.count() == 0 and catalog.applied_runs() == set()


def test_sync_applies_committed_snapshots_the_catalog_missed(tmp_path):
    first = _snapshot(tmp_path, "daily-20250601T000000Z", _movies(2), "2025-06-01T00:00:00Z")
    second = _snapshot(tmp_path, "daily-20250602T000000Z", _movies(4), "2025-06-02T00:00:00Z")
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        catalog.apply_snapshot(first, "now")
        assert catalog.sync(tmp_path, "now") == [second.name]
        assert catalog.sync(tmp_path, "now") == []
        assert catalog.count() == 4
    assert sqlite3.connect(tmp_path / "catalog.sqlite").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_data_dir_lock_is_exclusive(tmp_path):
    with data_dir_lock(tmp_path):
        with pytest.raises(UpstreamError, match="another TMDB run"):
            with data_dir_lock(tmp_path):
                pass
    with data_dir_lock(tmp_path):  # released
        pass


def test_a_snapshot_with_holes_is_committed_but_not_complete(tmp_path):
    snap = write_snapshot(tmp_path, "daily-20250601T000000Z", _movies(2), [],
                          {"collection": "daily", "complete": False, "missing": {"pages": ["popular:2"]}})
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["committed"] is True and manifest["complete"] is False and manifest["manifestVersion"] == 2
    assert is_committed(snap) and list_snapshots(tmp_path) == [snap]


def test_version_1_manifests_still_count_as_committed(tmp_path):
    snap = _snapshot(tmp_path)
    manifest = json.loads((snap / "manifest.json").read_text())
    for key in ("committed", "manifestVersion"):
        manifest.pop(key)
    (snap / "manifest.json").write_text(json.dumps(manifest))  # as version 1 wrote it
    assert is_committed(snap)
    manifest["complete"] = False
    (snap / "manifest.json").write_text(json.dumps(manifest))
    assert not is_committed(snap)


def test_an_old_catalog_is_migrated_and_its_runs_get_status_and_exit_code(tmp_path):
    """Catalogs written before issue 15 had no run status: the migration adds the columns and fills
    them from the snapshots' manifests (exitCode), 'unknown' where the snapshot is gone."""
    snap = write_snapshot(tmp_path, "daily-20250601T000000Z", _movies(2), [], {"collection": "daily",
                                                                                "exitCode": 5})
    conn = sqlite3.connect(tmp_path / "catalog.sqlite")
    conn.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, collection TEXT NOT NULL, started_at TEXT NOT NULL,
                           movies INTEGER NOT NULL, movies_sha256 TEXT NOT NULL, applied_at TEXT NOT NULL);
    """)
    conn.execute("INSERT INTO runs VALUES (?, 'daily', '2025-06-01T00:00:00Z', 2, 'abc', 'x')", (snap.name,))
    conn.execute("INSERT INTO runs VALUES ('daily-20250501T000000Z', 'daily', '2025-05-01T00:00:00Z', 9, 'def', 'x')")
    conn.commit()
    conn.close()
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        runs = {r["runId"]: (r["status"], r["exitCode"]) for r in catalog.runs()}
        assert runs == {snap.name: ("partial", 5), "daily-20250501T000000Z": ("unknown", None)}
        assert catalog.conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with Catalog(tmp_path / "catalog.sqlite") as catalog:  # a second open changes nothing
        assert {r["runId"]: (r["status"], r["exitCode"]) for r in catalog.runs()} == runs
