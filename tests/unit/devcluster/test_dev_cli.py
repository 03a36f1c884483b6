"""`thresher dev ...` as a shell uses it (subprocesses, fake binaries: no cluster, no build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from thresher.devcluster import binaries

REPO = Path(__file__).resolve().parents[3]


def _fake(folder: Path, name: str, version_line: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)


def test_dev_env_prints_only_the_export_line_on_stdout(tmp_path):
    """Issue 13: with a kubectl of another version on PATH, `thresher dev env` printed "ignoring
    kubectl from PATH (...)" on stdout, so `eval "$(thresher dev env)"` ran that notice as a
    command. Notices go to stderr; stdout is exactly the export line."""
    on_path, pinned = tmp_path / "path", tmp_path / "pinned"
    _fake(on_path, "kubectl", "Client Version: v1.20.0")
    for name in binaries.CONTROL_PLANE:
        _fake(pinned, name, f"{name} version {binaries.COMPONENTS[name].version}")
    state = tmp_path / "state"
    env = {**os.environ, "PATH": f"{on_path}:/usr/bin:/bin", "THRESHER_BIN_DIR": str(pinned),
           "THRESHER_CACHE_DIR": str(tmp_path / "cache"), "THRESHER_STATE_DIR": str(state),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "thresher.cli", "dev", "env"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"export KUBECONFIG={state / 'kubeconfig'} PATH={pinned}:$PATH\n"
    assert "ignoring kubectl from PATH" in proc.stderr
    shell = subprocess.run(["sh", "-c", 'eval "$1" && echo "$KUBECONFIG"', "sh", proc.stdout],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert shell.returncode == 0 and shell.stdout.strip() == str(state / "kubeconfig"), shell.stderr
