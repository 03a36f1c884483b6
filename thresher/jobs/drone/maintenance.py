"""Maintenance tasks: a report over a period, state backups, and retention cleanup.

Decisions (what to keep, what to delete) are pure functions of names, times and
``now``; the task functions only list, call them and act.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from thresher.api.drone import DroneJob
from thresher.jobs.drone import report as rp
from thresher.jobs.drone.pipeline import Paths
from thresher.jobs.drone.state import StateDB
from thresher.jobs.harness import ConfigError, atomic_write_text

DAY = 86400.0
BACKUP_RE = re.compile(r"^drone-(\d{8}T\d{6}Z)\.sqlite$")


# --- report -------------------------------------------------------------------------------

def run_report(spec: DroneJob, paths: Paths, now: float) -> dict:
    """Summary, CSV and HTML over inputs processed in the last reportPeriodDays; returns the summary."""
    if not paths.db.exists():
        raise ConfigError(f"no state database at {paths.db}: nothing was processed yet")
    start = now - spec.report_period_days * DAY
    with StateDB(paths.db) as db:
        rows = db.processed_between(start, now + 1)
    items = []
    for row in rows:
        if row["status"] == "done" and row["result"]:
            items.append(json.loads(row["result"]))
        else:
            items.append({"key": row["key"], "kind": row["kind"], "ok": False, "reason": row["reason"], "frames": []})
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    summary = rp.summarize(items, {
        "title": f"Drone crop-health report, last {spec.report_period_days} days",
        "period": f"{rp.iso(start)} .. {rp.iso(now)}", "generated": rp.iso(now),
    })
    folder = paths.output / "reports" / stamp
    atomic_write_text(folder / "summary.json", rp.to_json(summary))
    atomic_write_text(folder / "summary.csv", rp.to_csv(items))
    atomic_write_text(folder / "report.html", rp.to_html(summary, "../../"))
    summary["path"] = str(folder / "summary.json")
    return summary


# --- backup ---------------------------------------------------------------------------------

def backup_name(now: float) -> str:
    return "drone-" + datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".sqlite"


def backups_to_delete(names: list[str], keep: int) -> list[str]:
    """Snapshot names beyond the newest ``keep`` (names sort by their UTC timestamp); others ignored."""
    ours = sorted((n for n in names if BACKUP_RE.match(n)), reverse=True)
    return sorted(ours[keep:])


@dataclass
class BackupResult:
    path: Path
    rows: int
    deleted: list[str] = field(default_factory=list)


def run_backup(spec: DroneJob, paths: Paths, now: float) -> BackupResult:
    """Online snapshot with SQLite's backup API (consistent while a process run writes), checked with
    integrity_check before it is renamed into place, then retention to backupKeep snapshots."""
    if not paths.db.exists():
        raise ConfigError(f"no state database at {paths.db}: nothing to back up")
    paths.backups.mkdir(parents=True, exist_ok=True)
    target = paths.backups / backup_name(now)
    tmp = paths.backups / f".{target.name}.tmp"
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(paths.db, timeout=30)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            rows = dst.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"backup failed integrity_check: {check}")
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    deleted = backups_to_delete(os.listdir(paths.backups), spec.backup_keep)
    for name in deleted:
        (paths.backups / name).unlink(missing_ok=True)
    return BackupResult(target, rows, deleted)


# --- cleanup ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    path: str  # relative to the output root
    mtime: float


def expired(entries: list[Entry], now: float, retention_days: int) -> list[str]:
    cutoff = now - retention_days * DAY
    return sorted(e.path for e in entries if e.mtime < cutoff)


def _entries(root: Path, sub: str, depth_dirs: bool) -> list[Entry]:
    """Run/report folders (one entry per folder) or map/item files (one per file)."""
    base = root / sub
    if not base.is_dir():
        return []
    out = []
    if depth_dirs:
        for child in base.iterdir():
            if child.is_dir():
                out.append(Entry(f"{sub}/{child.name}", child.stat().st_mtime))
        return out
    for dirpath, _, files in os.walk(base):
        for name in files:
            p = Path(dirpath) / name
            out.append(Entry(p.relative_to(root).as_posix(), p.stat().st_mtime))
    return out


@dataclass
class CleanupPlan:
    outputs: list[str]  # relative to the output root
    state_rows: list[str]  # item keys whose inputs vanished before the cutoff
    expire_rows: list[str]  # item keys whose outputs expire (kept as done: never reprocessed)


def plan_cleanup(paths: Paths, spec: DroneJob, now: float) -> CleanupPlan:
    outputs = []
    for sub in ("runs", "reports"):
        outputs += expired(_entries(paths.output, sub, True), now, spec.retention_days)
    for sub in ("maps", "items"):
        outputs += expired(_entries(paths.output, sub, False), now, spec.retention_days)
    state_rows: list[str] = []
    expire_rows: list[str] = []
    if paths.db.exists():
        cutoff = now - spec.retention_days * DAY
        with StateDB(paths.db) as db:
            state_rows = [r["key"] for r in db.conn.execute(
                "SELECT key FROM items WHERE present=0 AND missing_since < ? ORDER BY key", (cutoff,))]
            expire_rows = [r["key"] for r in db.conn.execute(
                "SELECT key FROM items WHERE present=1 AND status='done' AND outputs_expired=0 "
                "AND processed_at < ? ORDER BY key", (cutoff,))]
    return CleanupPlan(sorted(outputs), state_rows, expire_rows)


def run_cleanup(spec: DroneJob, paths: Paths, now: float) -> CleanupPlan:
    """Delete what the plan lists (unless dryRun). Rows of inputs that still exist are kept (so they
    are not processed again); their outputs are only flagged expired."""
    plan = plan_cleanup(paths, spec, now)
    if spec.dry_run:
        return plan
    for rel in plan.outputs:
        target = paths.output / rel
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    if plan.state_rows or plan.expire_rows:
        with StateDB(paths.db) as db:
            db.conn.execute("BEGIN IMMEDIATE")
            db.conn.executemany("DELETE FROM items WHERE key=?", [(k,) for k in plan.state_rows])
            db.conn.executemany("UPDATE items SET outputs_expired=1 WHERE key=?", [(k,) for k in plan.expire_rows])
            db.conn.execute("COMMIT")
    return plan
