"""Durable output of a run: self-describing snapshot directories and a SQLite catalog.

Snapshot: ``<data-dir>/snapshots/<collection>-<YYYYMMDD>T<HHMMSS>Z/`` with
``movies.jsonl`` (valid movies), ``rejects.jsonl`` (invalid records and why),
optional ``report.json``/``report.html``, ``ids.jsonl`` (a sweep's export ids),
and ``manifest.json``. It is built in
a hidden ``.tmp-*`` sibling, every file fsynced, the manifest (with the sha256
of every other file) written last, the directory fsynced and then renamed into
place. A crash leaves at most a ``.tmp-*`` directory, which readers ignore and
the next run deletes; a directory without a manifest whose hashes match is
never taken as committed (``is_committed``). Committed is not the same as
complete: a run that lost pages or detail requests commits its snapshot with
``"complete": false`` and the holes listed under ``missing``.

Catalog: ``<data-dir>/catalog.sqlite`` (WAL), the latest state of every movie
ever seen, and a ``runs`` table with every run's status and exit code (runs
that committed no snapshot too). A run is applied in one transaction, keyed by
its run id, so applying it twice changes nothing; a run whose snapshot
committed but whose catalog update did not (a crash in between) is applied by
the next run (``sync``). Older catalogs are migrated on open (``PRAGMA
user_version``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

# The harness's directory fsync: the same durability step its atomic writes use.
from thresher.api.names import ExitCode
from thresher.jobs.harness import UpstreamError, _fsync_dir

SNAPSHOTS_DIR = "snapshots"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
MOVIES = "movies.jsonl"
REJECTS = "rejects.jsonl"
EXPORT_IDS = "ids.jsonl"
CATALOG = "catalog.sqlite"
LOCK = ".tmdb.lock"
# 2: "committed" is the commit marker; "complete" says whether the data has holes ("missing").
MANIFEST_VERSION = 2
CATALOG_VERSION = 1  # 1: runs.status and runs.exit_code


def _write_jsonl(path: Path, records: Iterable[dict]) -> dict:
    """Write JSON lines, fsync, and return the file's sha256, size and line count."""
    digest = hashlib.sha256()
    size = lines = 0
    with open(path, "wb") as out:
        for record in records:
            line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n").encode()
            out.write(line)
            digest.update(line)
            size += len(line)
            lines += 1
        out.flush()
        os.fsync(out.fileno())
    return {"sha256": digest.hexdigest(), "bytes": size, "lines": lines}


def _adopt_jsonl(source: Path, path: Path) -> dict:
    """Move a JSON-lines file written elsewhere on the same filesystem (a run's spool) into place,
    fsync it, and return its sha256, size and line count, read in chunks (never held)."""
    os.replace(source, path)
    digest = hashlib.sha256()
    size = lines = 0
    with open(path, "rb+") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
        os.fsync(src.fileno())
    return {"sha256": digest.hexdigest(), "bytes": size, "lines": lines}


def _write_file(path: Path, data: bytes) -> dict:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_name(collection: str, started: datetime) -> str:
    return f"{collection}-{started.strftime('%Y%m%dT%H%M%SZ')}"


def write_snapshot(data_dir: Path, name: str, movies: Iterable[dict], rejects: Iterable[dict],
                   manifest: dict, extra_files: dict[str, bytes] | None = None,
                   spooled_jsonl: dict[str, Path] | None = None) -> Path:
    """Commit a snapshot directory atomically; return its final path.

    ``manifest`` is completed with the files' hashes and written last; the
    rename makes the whole directory appear at once. ``movies`` and
    ``rejects`` are written as they are consumed; ``spooled_jsonl`` names
    JSON-lines files already on disk (a sweep's million export ids), moved in
    rather than rewritten.
    """
    root = Path(data_dir) / SNAPSHOTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = {MOVIES: _write_jsonl(tmp / MOVIES, movies), REJECTS: _write_jsonl(tmp / REJECTS, rejects)}
        for fname, source in (spooled_jsonl or {}).items():
            files[fname] = _adopt_jsonl(source, tmp / fname)
        for fname, data in (extra_files or {}).items():
            files[fname] = _write_file(tmp / fname, data)
        final_name = name
        suffix = 1
        while (root / final_name).exists():  # two runs in the same second: never overwrite
            suffix += 1
            final_name = f"{name}-{suffix}"
        body = {**manifest, "manifestVersion": MANIFEST_VERSION, "runId": final_name, "files": files,
                "committed": True, "complete": manifest.get("complete", True)}
        _write_file(tmp / MANIFEST, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
        _fsync_dir(tmp)
        os.rename(tmp, root / final_name)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / final_name


def read_manifest(snapshot: Path) -> dict | None:
    try:
        data = json.loads((Path(snapshot) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_committed(snapshot: Path) -> bool:
    """A committed snapshot: a manifest marked committed whose file hashes all match. (Version 1
    manifests marked this with ``complete``.) Says nothing about holes in the data: see ``complete``."""
    snapshot = Path(snapshot)
    if snapshot.name.startswith(TMP_PREFIX):
        return False
    manifest = read_manifest(snapshot)
    if not manifest or not isinstance(manifest.get("files"), dict):
        return False
    marker = "committed" if manifest.get("manifestVersion", 1) >= 2 else "complete"
    if manifest.get(marker) is not True:
        return False
    for fname, info in manifest["files"].items():
        path = snapshot / fname
        if not path.is_file() or sha256_file(path) != info.get("sha256"):
            return False
    return True


def list_snapshots(data_dir: Path) -> list[Path]:
    """Committed snapshots, oldest first (names sort by time within a collection; order by manifest)."""
    root = Path(data_dir) / SNAPSHOTS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith(".") and is_committed(child):
            found.append((read_manifest(child).get("startedAt", ""), child.name, child))
    return [path for _, _, path in sorted(found)]


def choose_snapshot(candidates: list[tuple[str, str, str]], day: str, collection: str | None = None) -> str | None:
    """The newest of ``(name, startedAt, collection)`` that started on ``day`` (UTC, YYYY-MM-DD), of
    ``collection`` when given; None when there is none."""
    matching = [(started, name) for name, started, coll in candidates
                if started[:10] == day and (collection is None or coll == collection)]
    return max(matching)[1] if matching else None


def snapshot_of_day(data_dir: Path, day: str, collection: str | None = None) -> Path:
    """The committed snapshot ``choose_snapshot`` picks; a ValueError that lists the days there are."""
    snapshots = list_snapshots(data_dir)
    candidates = [(p.name, (read_manifest(p) or {}).get("startedAt", ""), (read_manifest(p) or {}).get("collection", ""))
                  for p in snapshots]
    name = choose_snapshot(candidates, day, collection)
    if name is None:
        days = sorted({started[:10] for _, started, _ in candidates if started})
        what = f"{collection} snapshot" if collection else "snapshot"
        listed = ", ".join(days[-5:]) if days else "none"
        raise ValueError(f"no committed {what} started on {day} in {Path(data_dir) / SNAPSHOTS_DIR} "
                         f"(days with snapshots: {listed})")
    return Path(data_dir) / SNAPSHOTS_DIR / name


def remove_stale_tmp(data_dir: Path) -> list[str]:
    """Delete leftovers of crashed runs. Only call while holding the data-dir lock."""
    root = Path(data_dir) / SNAPSHOTS_DIR
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(TMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as src:
        for line in src:
            if line.strip():
                yield json.loads(line)


@contextmanager
def data_dir_lock(data_dir: Path):
    """Exclusive lock of the data dir for one run (released by the kernel if the process dies)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpstreamError(f"another TMDB run holds {data_dir / LOCK}; try again when it ends") from None
        yield
    finally:
        os.close(fd)


# --- catalog ---------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS movies (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    release_date TEXT,
    popularity REAL,
    vote_average REAL,
    vote_count INTEGER,
    data TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_run TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS export_ids (
    id INTEGER PRIMARY KEY,
    original_title TEXT,
    popularity REAL,
    adult INTEGER NOT NULL,
    video INTEGER NOT NULL,
    export_date TEXT NOT NULL,
    last_run TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    started_at TEXT NOT NULL,
    movies INTEGER NOT NULL,
    movies_sha256 TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'unknown',
    exit_code INTEGER
);
"""


def run_status(exit_code: int | None) -> str:
    """A run's status word from its exit code: ok, partial, quality, upstream, config, internal."""
    try:
        return ExitCode(exit_code).name.lower()
    except ValueError:
        return "unknown"


def failed_run_id(name: str) -> str:
    """The runs-table id of a run that committed no snapshot (never the name of a snapshot directory,
    so a later run in the same second still gets applied)."""
    return f"{name}.failed"

# Newer observations win; replaying an older run never regresses a movie.
_UPSERT = """
INSERT INTO movies (id, title, release_date, popularity, vote_average, vote_count, data, first_seen,
                    last_seen, last_run)
VALUES (:id, :title, :release_date, :popularity, :vote_average, :vote_count, :data, :seen, :seen, :run)
ON CONFLICT(id) DO UPDATE SET
    title = excluded.title, release_date = excluded.release_date, popularity = excluded.popularity,
    vote_average = excluded.vote_average, vote_count = excluded.vote_count, data = excluded.data,
    first_seen = min(movies.first_seen, excluded.first_seen), last_seen = excluded.last_seen,
    last_run = excluded.last_run
WHERE excluded.last_seen >= movies.last_seen
"""

# The same rule for export ids: a newer export wins, an older one replayed changes nothing.
_UPSERT_EXPORT_ID = """
INSERT INTO export_ids (id, original_title, popularity, adult, video, export_date, last_run)
VALUES (:id, :original_title, :popularity, :adult, :video, :export_date, :run)
ON CONFLICT(id) DO UPDATE SET
    original_title = excluded.original_title, popularity = excluded.popularity, adult = excluded.adult,
    video = excluded.video, export_date = excluded.export_date, last_run = excluded.last_run
WHERE excluded.export_date >= export_ids.export_date
"""


class Catalog:
    """The latest state of every movie seen, in SQLite (WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a committed run survives power loss
        self.conn.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a catalog written by an older version up to CATALOG_VERSION, in one transaction.

        0 -> 1: ``runs`` gains ``status`` and ``exit_code``, filled from each run's snapshot manifest
        (``exitCode``) where the snapshot is still there, else left 'unknown'.
        """
        if self.conn.execute("PRAGMA user_version").fetchone()[0] >= CATALOG_VERSION:
            return
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in cur.execute("PRAGMA table_info(runs)")}
            if "status" not in columns:
                cur.execute("ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'unknown'")
            if "exit_code" not in columns:
                cur.execute("ALTER TABLE runs ADD COLUMN exit_code INTEGER")
            snapshots = self.path.parent / SNAPSHOTS_DIR
            for (run_id,) in cur.execute("SELECT run_id FROM runs WHERE exit_code IS NULL").fetchall():
                code = (read_manifest(snapshots / run_id) or {}).get("exitCode")
                if isinstance(code, int):
                    cur.execute("UPDATE runs SET status = ?, exit_code = ? WHERE run_id = ?",
                                (run_status(code), code, run_id))
            cur.execute(f"PRAGMA user_version = {CATALOG_VERSION}")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def applied_runs(self) -> set[str]:
        """Ids of the runs whose snapshot was applied (not those recorded without one)."""
        return {row[0] for row in self.conn.execute("SELECT run_id FROM runs WHERE movies_sha256 != ''")}

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM movies").fetchone()[0]

    def count_export_ids(self) -> int:
        return self.conn.execute("SELECT count(*) FROM export_ids").fetchone()[0]

    def known_movie_ids(self, ids: list[int]) -> set[int]:
        """Which of ``ids`` already have a movie record (details) in the catalog."""
        known: set[int] = set()
        for start in range(0, len(ids), 500):  # under SQLite's bound-parameter limit
            batch = ids[start:start + 500]
            marks = ",".join("?" * len(batch))
            known.update(row[0] for row in self.conn.execute(f"SELECT id FROM movies WHERE id IN ({marks})", batch))
        return known

    def iter_movies(self) -> Iterator[dict]:
        """The latest version of every movie, by id."""
        for (data,) in self.conn.execute("SELECT data FROM movies ORDER BY id"):
            yield json.loads(data)

    def get(self, movie_id: int) -> dict | None:
        row = self.conn.execute("SELECT data, first_seen, last_seen, last_run FROM movies WHERE id = ?",
                                (movie_id,)).fetchone()
        if row is None:
            return None
        return {"movie": json.loads(row[0]), "firstSeen": row[1], "lastSeen": row[2], "lastRun": row[3]}

    def runs(self) -> list[dict]:
        """Every recorded run, oldest first."""
        rows = self.conn.execute("SELECT run_id, collection, started_at, movies, status, exit_code, applied_at "
                                 "FROM runs ORDER BY started_at, run_id").fetchall()
        keys = ("runId", "collection", "startedAt", "movies", "status", "exitCode", "appliedAt")
        return [dict(zip(keys, row)) for row in rows]

    def record_run(self, run_id: str, collection: str, started_at: str, exit_code: int, applied_at: str) -> None:
        """Record a run that committed no snapshot (nothing fetched, preflight failed, key rejected)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, collection, started_at, movies, movies_sha256, applied_at, "
            "status, exit_code) VALUES (?, ?, ?, 0, '', ?, ?, ?)",
            (run_id, collection, started_at, applied_at, run_status(exit_code), int(exit_code)))

    def apply(self, run_id: str, collection: str, started_at: str, movies: Iterable[dict],
              movies_sha256: str, applied_at: str, export_ids: Iterable[dict] = (),
              export_date: str = "", exit_code: int | None = 0) -> bool:
        """Upsert one run's movies (and a sweep's export ids) in one transaction; False if the run
        was already applied."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            if cur.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                cur.execute("ROLLBACK")
                return False
            count = 0
            for movie in movies:
                cur.execute(_UPSERT, {
                    "id": movie["id"], "title": movie["title"], "release_date": movie.get("release_date"),
                    "popularity": movie.get("popularity"), "vote_average": movie.get("vote_average"),
                    "vote_count": movie.get("vote_count"),
                    "data": json.dumps(movie, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
                    "seen": float(movie.get("_fetched_at") or 0.0), "run": run_id,
                })
                count += 1
            for entry in export_ids:
                cur.execute(_UPSERT_EXPORT_ID, {
                    "id": entry["id"], "original_title": entry.get("original_title"),
                    "popularity": entry.get("popularity"), "adult": bool(entry.get("adult")),
                    "video": bool(entry.get("video")), "export_date": export_date, "run": run_id,
                })
            cur.execute("INSERT INTO runs (run_id, collection, started_at, movies, movies_sha256, applied_at, "
                        "status, exit_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, collection, started_at, count, movies_sha256, applied_at, run_status(exit_code),
                         exit_code))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return True

    def apply_snapshot(self, snapshot: Path, applied_at: str) -> bool:
        manifest = read_manifest(snapshot) or {}
        export_ids = read_jsonl(Path(snapshot) / EXPORT_IDS) if EXPORT_IDS in manifest["files"] else ()
        return self.apply(manifest["runId"], manifest.get("collection", "?"), manifest.get("startedAt", ""),
                          read_jsonl(Path(snapshot) / MOVIES), manifest["files"][MOVIES]["sha256"], applied_at,
                          export_ids, (manifest.get("export") or {}).get("date", ""), manifest.get("exitCode"))

    def sync(self, data_dir: Path, applied_at: str) -> list[str]:
        """Apply every committed snapshot the catalog has not seen (recovery after a crash)."""
        applied = self.applied_runs()
        root = Path(data_dir) / SNAPSHOTS_DIR
        # Only unapplied directories are hashed: the check stays cheap as snapshots pile up.
        pending = [] if not root.is_dir() else [
            child for child in root.iterdir()
            if child.is_dir() and not child.name.startswith(".") and child.name not in applied
            and is_committed(child)
        ]
        pending.sort(key=lambda p: ((read_manifest(p) or {}).get("startedAt", ""), p.name))
        done = []
        for snapshot in pending:
            if self.apply_snapshot(snapshot, applied_at):
                done.append(snapshot.name)
        return done

