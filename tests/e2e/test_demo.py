"""`make demo` runs `thresher demo`: the README's first command must work end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_every_example_and_cleans_up(tmp_path):
    """On its own cluster: chart installed, operator on the chart's credentials, every example
    schedule run once and recorded, the simulation stated plainly, the real TMDB job's result
    shown; `--down` leaves no state behind."""
    state = tmp_path / "demo"
    env = {**os.environ, "THRESHER_STATE_DIR": str(state)}
    try:
        proc = subprocess.run([sys.executable, "-m", "thresher.cli", "demo"], env=env, capture_output=True,
                              text=True, timeout=400)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert "SIMULATED" in out
        table = out[out.index("NAME "):]
        for name in ("tmdb-daily", "tmdb-weekly", "drone-gpu", "heartbeat"):
            row = next(line for line in table.splitlines() if line.startswith(name))
            assert "Succeeded" in row, row
        assert '"jobType":"tmdb","succeeded":true' in out
        assert "/alerts" in out and "/metrics" in out
    finally:
        down = subprocess.run([sys.executable, "-m", "thresher.cli", "demo", "--down"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not state.exists()
