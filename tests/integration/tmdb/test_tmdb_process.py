"""Process-level tests of the TMDB job: real subprocesses, SIGKILL mid-run, the fake-tmdb command.

No Kubernetes needed: the job is a plain command line. Waits poll with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.wait import eventually
from thresher.api.runresult import parse_message
from thresher.demo.fakes.tmdb_server import FakeConfig, running_fake_server
from thresher.jobs.tmdb.storage import is_committed, list_snapshots, read_jsonl

REPO = Path(__file__).resolve().parents[3]
KEY = "process-test-key"


@pytest.fixture(scope="module")
def slow_server():
    # 20 ms a request: a monthly run takes a couple of seconds, long enough to kill mid-way.
    with running_fake_server(FakeConfig(movies=1500, api_key=KEY, latency_ms=20)) as server:
        yield server


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TMDB_", "THRESHER_"))}
    env.update({"TMDB_API_KEY": KEY, "THRESHER_RESULT_PATH": str(tmp_path / "result.json"), **extra})
    return env


def _collect_args(server, data_dir: Path, collection: str = "monthly") -> list[str]:
    return ["job", "tmdb", "collect", "--collection", collection, "--api-base-url", server.base_url,
            "--data-dir", str(data_dir), "--requests-per-second", "40", "--workers", "8"]


def _thresher(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "thresher.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _fake_tmdb(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The demo's fake TMDB command (the fakes live in thresher.demo, not in the job images)."""
    return subprocess.Popen([sys.executable, "-m", "thresher.demo", "fake-tmdb", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_with_patch(patch: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the CLI in a child whose code is patched to SIGKILL itself at a chosen point."""
    script = "\n".join(["import os, signal, sys", textwrap.dedent(patch).strip(),
                         "from thresher.cli import app", "app(sys.argv[1:])"])
    return subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def _assert_catalog_consistent(data_dir: Path) -> set[str]:
    """The catalog is intact and holds exactly the runs of the committed snapshots (and their movies)."""
    conn = sqlite3.connect(data_dir / "catalog.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = {r[0] for r in conn.execute("SELECT run_id FROM runs WHERE movies_sha256 != ''")}  # applied snapshots
        ids = {r[0] for r in conn.execute("SELECT id FROM movies")}
    finally:
        conn.close()
    snapshots = list_snapshots(data_dir)
    assert runs <= {s.name for s in snapshots}
    expected = {m["id"] for s in snapshots if s.name in runs for m in read_jsonl(s / "movies.jsonl")}
    assert ids == expected
    return runs


def _rerun_completes(server, data_dir: Path, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "thresher.cli", *_collect_args(server, data_dir)], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = parse_message((tmp_path / "result.json").read_text()).result
    assert result.succeeded and is_committed(Path(result.output))
    assert not list((data_dir / "snapshots").glob(".tmp-*"))
    runs = _assert_catalog_consistent(data_dir)
    assert Path(result.output).name in runs
    return result.model_dump()


def test_sigkill_while_fetching_leaves_nothing_that_looks_complete(slow_server, tmp_path):
    data_dir = tmp_path / "data"
    proc = _thresher(_collect_args(slow_server, data_dir), _env(tmp_path))
    log_lines: list[str] = []

    def fetching() -> bool:
        line = proc.stderr.readline()
        log_lines.append(line)
        return '"phase": "lists"' in line and '"message": "progress"' in line

    eventually(fetching, timeout=60, interval=0, message="the first progress log line")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert list_snapshots(data_dir) == []
    assert not (tmp_path / "result.json").exists()  # no result: the operator sees the kill, not a success
    assert _assert_catalog_consistent(data_dir) == set()
    _rerun_completes(slow_server, data_dir, tmp_path)


def test_sigkill_just_before_the_manifest_is_written(slow_server, tmp_path):
    """Bug this pins: every data file of a snapshot was on disk, so a reader took it as complete."""
    data_dir = tmp_path / "data"
    patch = """
        from thresher.jobs.tmdb import storage
        original = storage._write_file
        def dying(path, data):
            if path.name == "manifest.json":
                os.kill(os.getpid(), signal.SIGKILL)
            return original(path, data)
        storage._write_file = dying
    """
    done = _run_with_patch(patch, _collect_args(slow_server, data_dir), _env(tmp_path))
    assert done.returncode == -signal.SIGKILL
    leftovers = list((data_dir / "snapshots").glob(".tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "movies.jsonl").stat().st_size > 0
    assert list_snapshots(data_dir) == [] and not is_committed(leftovers[0])
    assert _assert_catalog_consistent(data_dir) == set()
    _rerun_completes(slow_server, data_dir, tmp_path)


def test_sigkill_between_snapshot_and_catalog_is_repaired_by_the_next_run(slow_server, tmp_path):
    data_dir = tmp_path / "data"
    patch = """
        from thresher.jobs.tmdb import storage
        def dying(self, snapshot, applied_at):
            os.kill(os.getpid(), signal.SIGKILL)
        storage.Catalog.apply_snapshot = dying
    """
    done = _run_with_patch(patch, _collect_args(slow_server, data_dir), _env(tmp_path))
    assert done.returncode == -signal.SIGKILL
    [committed] = list_snapshots(data_dir)
    assert _assert_catalog_consistent(data_dir) == set()  # the catalog lags, but is not corrupt
    result = _rerun_completes(slow_server, data_dir, tmp_path)
    assert any("applied 1 snapshot" in w for w in result["warnings"])
    assert committed.name in _assert_catalog_consistent(data_dir)


def test_fake_server_command_serves_a_collect_command(tmp_path):
    server = _fake_tmdb(["--port", "0", "--movies", "500", "--api-key", KEY,
                        "--fault", "503:0.2", "--fault", "500@movie/popular?page=2*2"], _env(tmp_path))
    try:
        base_url = json.loads(server.stdout.readline())["baseUrl"]
        args = ["job", "tmdb", "collect", "--collection", "daily", "--api-base-url", base_url,
                "--data-dir", str(tmp_path / "d"), "--requests-per-second", "40"]
        done = subprocess.run([sys.executable, "-m", "thresher.cli", *args], cwd=REPO, env=_env(tmp_path),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        result = parse_message((tmp_path / "result.json").read_text()).result
        assert result.succeeded and result.items > 100 and result.failed == 0
        assert KEY not in done.stderr  # redacted from every log line
        wrong = subprocess.run([sys.executable, "-m", "thresher.cli", *args], cwd=REPO,
                               env=_env(tmp_path, TMDB_API_KEY="bad-key-xyz"), capture_output=True, text=True,
                               timeout=120)
        assert wrong.returncode == 2
        assert "rejected the credential" in parse_message((tmp_path / "result.json").read_text()).result.error
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0
    stats = json.loads(err.strip().splitlines()[-1])["stats"]
    assert stats["faults"].get("500") == 2 and stats["byStatus"]["401"] == 1


def test_sweep_command_against_the_fake_server_command(tmp_path):
    """The export URL travels from the fake-tmdb command's first line to collect's --export-base-url;
    a corrupt export ends the process with UPSTREAM (3) and commits nothing; the next run succeeds."""
    server = _fake_tmdb(["--port", "0", "--movies", "500", "--api-key", KEY,
                        "--export-bad-line-rate", "0.02", "--fault", "404@movie_ids_06_01_2025*all",
                        "--fault", "gzip-corrupt@p/exports*1"], _env(tmp_path))
    try:
        first_line = json.loads(server.stdout.readline())
        data_dir = tmp_path / "d"
        args = ["job", "tmdb", "collect", "--collection", "sweep", "--api-base-url", first_line["baseUrl"],
                "--export-base-url", first_line["exportBaseUrl"], "--data-dir", str(data_dir),
                "--max-detail-requests", "25", "--now", "2025-06-01T06:00:00+00:00"]

        def collect() -> tuple[int, object]:
            done = subprocess.run([sys.executable, "-m", "thresher.cli", *args], cwd=REPO, env=_env(tmp_path),
                                  capture_output=True, text=True, timeout=120)
            return done.returncode, parse_message((tmp_path / "result.json").read_text()).result

        code, result = collect()
        assert code == 3 and result.exit_code == 3 and result.error.startswith("ExportCorrupt:")
        assert list_snapshots(data_dir) == []
        code, result = collect()
        assert code == 0 and result.succeeded and result.items - result.valid > 0  # bad lines are rejects
        assert "movie_ids_06_01_2025.json.gz is not published yet; used movie_ids_05_31_2025.json.gz" \
            in result.warnings
        assert any("maxDetailRequests (25) reached" in w for w in result.warnings)
        assert _assert_catalog_consistent(data_dir) == {Path(result.output).name}
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    stats = json.loads(err.strip().splitlines()[-1])["stats"]
    assert stats["byRoute"]["movie/{id}"] == 25 and stats["faults"]["gzip-corrupt"] == 1


def test_a_down_api_ends_the_weekly_run_in_seconds_with_exit_3(tmp_path):
    """Bug (issue 15): with the API's port closed, the weekly preset ran its whole plan (~580
    connection attempts) and exited 3 after 109 s. The preflight now ends it at once: exit 3 well
    under 10 s, process start included, with one line naming the URL and what happened."""
    import socket
    import time

    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/3"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "thresher.cli", "job", "tmdb", "collect", "--collection", "weekly",
                           "--api-base-url", dead, "--data-dir", str(tmp_path / "d")], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 3 and elapsed < 10, (elapsed, done.stderr[-2000:])
    result = parse_message((tmp_path / "result.json").read_text()).result
    assert result.exit_code == 3 and "\n" not in result.error
    assert f"GET {dead}/genre/movie/list: connection refused" in result.error
    assert list_snapshots(tmp_path / "d") == []
