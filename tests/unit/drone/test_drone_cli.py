"""The command line: run --spec, RunResult written, exit codes, fast --help, watch mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from thresher.api.runresult import parse_message
from thresher.demo.cli import app as demo_app
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.cli import app, execute
from thresher.jobs.drone.pipeline import Paths
from thresher.jobs.drone.watch import watch

runner = CliRunner()


def test_run_with_spec_file_writes_run_result_and_exit_code(tmp_path: Path):
    runner.invoke(demo_app, ["sample-fields", "--data-dir", str(tmp_path), "--count", "2", "--multispectral", "1",
                             "--width", "64", "--height", "48"], catch_exceptions=False)
    (tmp_path / "input" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "spec.json").write_text(json.dumps({"task": "process", "batchSize": 2, "healthMapMaxSize": 64}))
    result_file = tmp_path / "result.json"
    res = runner.invoke(app, ["run", "--spec", f"@{tmp_path / 'spec.json'}", "--data-dir", str(tmp_path),
                              "--result-path", str(result_file), "--log-level", "ERROR"])
    assert res.exit_code == 5
    parsed = parse_message(result_file.read_text())
    assert parsed.ok and parsed.result.job_type == "drone"
    r = parsed.result
    assert (r.items, r.valid, r.failed, r.exit_code) == (4, 3, 1, 5)
    assert "broken.jpg" in r.warnings[0] and Path(r.output).is_file()
    summary = json.loads(Path(r.output).read_text())
    html = (Path(r.output).parent / "report.html").read_text()
    for item in summary["results"]:  # maps linked relative to the report, and they exist
        rel = item["frames"][0]["map"]
        assert f"../../{rel}" in html and (Path(r.output).parent / "../.." / rel).resolve().is_file()
    again = runner.invoke(app, ["run", "--spec", "{}", "--data-dir", str(tmp_path),
                                "--result-path", str(result_file), "--log-level", "ERROR"])
    assert again.exit_code == 0 and parse_message(result_file.read_text()).result.items == 0


def test_bad_spec_is_config_error_with_run_result(tmp_path: Path):
    result_file = tmp_path / "r.json"
    res = runner.invoke(app, ["run", "--spec", '{"batchSize": 999}', "--data-dir", str(tmp_path),
                              "--result-path", str(result_file), "--log-level", "ERROR"])
    assert res.exit_code == 2
    r = parse_message(result_file.read_text()).result
    assert r.exit_code == 2 and "batchSize" in r.error


def test_cuda_backend_without_gpu_is_config_error(tmp_path: Path, monkeypatch):
    from thresher.jobs.drone import torch_backend

    monkeypatch.setattr(torch_backend, "cuda_available", lambda: False)
    (tmp_path / "input").mkdir()
    from thresher.api.drone import DroneJob

    r = execute(DroneJob(backend="cuda"), tmp_path)
    assert r.exit_code == 2 and "GPU" in r.error


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from thresher.cli import app; "
            "bad = [m for m in ('numpy', 'PIL', 'av', 'torch', 'tifffile') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_watch_processes_a_file_that_arrives(tmp_path: Path):
    from thresher.api.drone import DroneJob
    from thresher.jobs.drone.pipeline import NumpyEngine
    from thresher.jobs.drone.state import StateDB

    spec = DroneJob(workers=1, healthMapMaxSize=64)
    paths = Paths.resolve(spec, tmp_path)
    paths.input.mkdir(parents=True)
    stop = threading.Event()
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(
        watch(spec, paths, NumpyEngine(), stop, seconds=60, settle=0.0, rescan=0.2)))
    thread.start()
    try:
        labels, _ = sm.field_labels(32, 32, 0.5, 0.5)
        tmp = paths.input / ".arriving.png"
        sm.write_rgb(tmp, sm.rgb_field(labels))
        os.replace(tmp, paths.input / "arrived.png")  # atomic arrival, as a copy tool would do
        deadline = time.monotonic() + 30
        row = None
        while time.monotonic() < deadline:
            if paths.db.exists():
                with StateDB(paths.db) as db:
                    row = db.row("arrived.png")
                if row is not None and row["status"] == "done":
                    break
            time.sleep(0.05)
        assert row is not None and row["status"] == "done"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert [r["key"] for r in results] == ["arrived.png"]


def test_parent_directory_in_a_path_is_a_one_line_config_error(tmp_path):
    """Issue 14: '..' in a drone path is refused with one readable line (exit 2), also from --input."""
    from thresher.jobs.drone.cli import app

    result_path = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["process", "--data-dir", str(tmp_path), "--input", "../etc",
                                   "--result-path", str(result_path)])
    assert res.exit_code == 2
    assert json.loads(result_path.read_text())["error"] == "inputPath: drone inputPath must not contain '..'"
