"""Durable processing state in SQLite: which items exist, which are done, and their results.

The protocol that makes a run killable at any point:

1. ``sync``: record discovered items; a new or changed fingerprint makes the item pending;
2. ``claim``: mark up to N pending items (and claims left by a dead run) as claimed by this run;
3. the caller processes them and writes their outputs atomically (idempotent file names);
4. ``complete``: one transaction marks them done/failed with their results.

A kill before 4 leaves claims that the next run redoes (outputs are simply rewritten);
a kill after 4 leaves nothing to redo. A killed run never finishes its ``runs`` row: the
next run closes it as ``interrupted`` and reports the items it had completed
(``close_interrupted``), so they are neither lost from the reports nor counted twice. ``completions`` counts how often an item was
completed for its current fingerprint, so "exactly once" is checkable: it is 1.

Only one process may run the protocol at a time: ``StateLock`` holds an exclusive
``flock`` for the whole run, which the kernel releases when the process dies.
Because of that lock, any claim found at the start of a run belongs to a dead run.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from thresher.jobs.drone.discovery import Item
from thresher.jobs.harness import UpstreamError

DB_NAME = "drone.sqlite"
LOCK_NAME = "drone.lock"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    members TEXT NOT NULL,               -- JSON [[band, relpath], ...]
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    claimed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    completions INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    result TEXT,                         -- JSON of the item's result when done
    first_seen REAL NOT NULL,
    processed_at REAL,
    run_id TEXT,
    present INTEGER NOT NULL DEFAULT 1,
    missing_since REAL,
    outputs_expired INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_status ON items (status, present);
CREATE INDEX IF NOT EXISTS items_processed ON items (processed_at);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    items INTEGER, valid INTEGER, failed INTEGER,
    exit_code INTEGER,
    summary_path TEXT,
    status TEXT                          -- running | finished | interrupted (NULL: written before status existed)
);
"""


@dataclass
class Claimed:
    item: Item
    attempts: int


@dataclass
class RecoveredRun:
    """A run that died before finishing, and the item results it had committed."""

    run_id: str
    started_at: float
    items: list[dict]


def recovered_item(row: sqlite3.Row, run_id: str) -> dict:
    """An item result as the process run wrote it, tagged with the interrupted run that completed it."""
    if row["status"] == "done" and row["result"]:
        result = json.loads(row["result"])
    else:
        result = {"key": row["key"], "kind": row["kind"], "ok": False, "reason": row["reason"], "frames": [],
                  "warnings": []}
    return {**result, "recovered_from": run_id}


@dataclass
class Outcome:
    key: str
    fingerprint: str
    ok: bool
    result: dict | None = None
    reason: str | None = None


class StateLock:
    """Exclusive, non-blocking lock on the state folder for one run."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UpstreamError(f"another drone run holds {self.path}; try again when it ends") from None
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def connect(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # explicit BEGIN/COMMIT below
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")  # readers (report, backup) never block the writer
    conn.execute("PRAGMA synchronous=FULL")  # a committed 'done' survives power loss
    conn.executescript(SCHEMA)
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(runs)")}
    if "status" not in columns:  # databases from before run status: add the column, old rows stay NULL
        conn.execute("ALTER TABLE runs ADD COLUMN status TEXT")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


class StateDB:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.conn = connect(self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self):
        return _Transaction(self.conn)

    # --- the protocol ---------------------------------------------------------------

    def sync(self, items: Iterable[Item], now: float) -> dict[str, int]:
        """Record the items seen now; returns counts of new, changed and vanished items."""
        counts = {"new": 0, "changed": 0, "vanished": 0}
        seen: set[str] = set()
        with self._tx():
            known = {row["key"]: row for row in self.conn.execute("SELECT key, fingerprint, present FROM items")}
            for item in items:
                seen.add(item.key)
                members = json.dumps([list(m) for m in item.members])
                row = known.get(item.key)
                if row is None:
                    counts["new"] += 1
                    self.conn.execute(
                        "INSERT INTO items (key, kind, members, fingerprint, status, first_seen) "
                        "VALUES (?, ?, ?, ?, 'pending', ?)", (item.key, item.kind, members, item.fingerprint, now))
                elif row["fingerprint"] != item.fingerprint:
                    counts["changed"] += 1
                    self.conn.execute(
                        "UPDATE items SET kind=?, members=?, fingerprint=?, status='pending', claimed_by=NULL, "
                        "completions=0, reason=NULL, present=1, missing_since=NULL, outputs_expired=0 "
                        "WHERE key=?", (item.kind, members, item.fingerprint, item.key))
                elif not row["present"]:
                    self.conn.execute("UPDATE items SET present=1, missing_since=NULL WHERE key=?", (item.key,))
            for key, row in known.items():
                if key not in seen and row["present"]:
                    counts["vanished"] += 1
                    self.conn.execute("UPDATE items SET present=0, missing_since=? WHERE key=?", (now, key))
        return counts

    def claim(self, run_id: str, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` pending items, or items claimed by another (necessarily dead) run."""
        with self._tx():
            rows = self.conn.execute(
                "SELECT key, kind, members, fingerprint, attempts FROM items "
                "WHERE present=1 AND (status='pending' OR (status='claimed' AND claimed_by IS NOT ?)) "
                "ORDER BY key LIMIT ?", (run_id, limit)).fetchall()
            for row in rows:
                self.conn.execute("UPDATE items SET status='claimed', claimed_by=?, attempts=attempts+1 "
                                  "WHERE key=?", (run_id, row["key"]))
        return [Claimed(Item(row["key"], row["kind"], tuple(tuple(m) for m in json.loads(row["members"])),
                             row["fingerprint"]), row["attempts"] + 1) for row in rows]

    def complete(self, run_id: str, outcomes: Iterable[Outcome], now: float) -> int:
        """Mark claimed items done or failed in one transaction; returns how many were recorded."""
        recorded = 0
        with self._tx():
            for o in outcomes:
                cur = self.conn.execute(
                    "UPDATE items SET status=?, result=?, reason=?, processed_at=?, run_id=?, claimed_by=NULL, "
                    "completions=completions+1, outputs_expired=0 "
                    "WHERE key=? AND status='claimed' AND claimed_by=? AND fingerprint=?",
                    ("done" if o.ok else "failed", json.dumps(o.result) if o.result is not None else None,
                     o.reason, now, run_id, o.key, run_id, o.fingerprint))
                recorded += cur.rowcount
        return recorded

    # --- runs -----------------------------------------------------------------------

    def start_run(self, run_id: str, task: str, now: float) -> None:
        with self._tx():
            self.conn.execute("INSERT OR REPLACE INTO runs (run_id, task, started_at, status) "
                              "VALUES (?, ?, ?, 'running')", (run_id, task, now))

    def finish_run(self, run_id: str, now: float, items: int, valid: int, failed: int, exit_code: int,
                   summary_path: str | None) -> None:
        with self._tx():
            self.conn.execute("UPDATE runs SET finished_at=?, items=?, valid=?, failed=?, exit_code=?, "
                              "summary_path=?, status='finished' WHERE run_id=?",
                              (now, items, valid, failed, exit_code, summary_path, run_id))

    def close_interrupted(self, task: str, now: float) -> list[RecoveredRun]:
        """Close every unfinished run of ``task`` as interrupted (called with the state lock held, so
        such a run is dead) and return what each had completed, for the next summary."""
        out: list[RecoveredRun] = []
        with self._tx():
            dead = self.conn.execute("SELECT run_id, started_at FROM runs WHERE task=? AND finished_at IS NULL "
                                     "ORDER BY started_at", (task,)).fetchall()
            for run in dead:
                rows = self.conn.execute(
                    "SELECT key, kind, status, reason, result FROM items WHERE run_id=? "
                    "AND status IN ('done', 'failed') ORDER BY key", (run["run_id"],)).fetchall()
                items = [recovered_item(row, run["run_id"]) for row in rows]
                valid = sum(1 for i in items if i["ok"])
                self.conn.execute("UPDATE runs SET finished_at=?, items=?, valid=?, failed=?, status='interrupted' "
                                  "WHERE run_id=?", (now, len(items), valid, len(items) - valid, run["run_id"]))
                out.append(RecoveredRun(run["run_id"], run["started_at"], items))
        return out

    def run_row(self, run_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()

    # --- queries ----------------------------------------------------------------------

    def processed_between(self, start: float, end: float) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT key, kind, status, reason, result, processed_at, run_id FROM items "
            "WHERE processed_at >= ? AND processed_at < ? AND status IN ('done', 'failed') ORDER BY key",
            (start, end)).fetchall()

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) AS n FROM items GROUP BY status").fetchall()
        return {row["status"]: row["n"] for row in rows}

    def row(self, key: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM items WHERE key=?", (key,)).fetchone()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including KeyboardInterrupt)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def now() -> float:
    return time.time()
