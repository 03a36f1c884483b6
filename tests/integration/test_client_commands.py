"""``thresher run --wait`` against the real control plane and operator (runs simulated by kwok).

Pins issue 13: ``thresher run NAME`` printed no Job and could not follow the run; a failed run
must exit non-zero with the recorded outcome and message, found by Job name (not by position
in ``status.recentRuns``, whose order issue 12 changes).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.test_operator import apply, schedule, simulate

pytestmark = pytest.mark.integration


def _thresher(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, timeout=120)


def test_run_wait_reports_each_runs_own_outcome(cluster, namespace, operator):
    apply(cluster, namespace, schedule("waited"))
    simulate(cluster, namespace, "waited", message={"jobType": "container", "succeeded": True, "items": 4})
    ok = _thresher(cluster, "run", "waited", "-n", namespace, "--wait", "--timeout", "90", "--interval", "0.5")
    assert ok.returncode == 0, ok.stderr
    job, outcome = ok.stdout.strip().splitlines()
    assert job.startswith("job.batch/waited-m") and outcome.startswith(f"{job} Succeeded")
    assert "(4 items)" in outcome
    assert "run requested" in ok.stderr and "run requested" not in ok.stdout, "notices belong on stderr"

    simulate(cluster, namespace, "waited", exit_code=3,
             message={"jobType": "container", "succeeded": False, "error": "upstream said no"})
    failed = _thresher(cluster, "run", "waited", "-n", namespace, "--wait", "--timeout", "90", "--interval", "0.5")
    assert failed.returncode == 1, failed.stderr
    job2, outcome2 = failed.stdout.strip().splitlines()
    assert job2 != job and outcome2.startswith(f"{job2} Failed")
    assert "exit code 3" in outcome2 and "upstream said no" in outcome2


def test_run_without_wait_prints_only_the_job(cluster, namespace, operator):
    apply(cluster, namespace, schedule("printed"))
    simulate(cluster, namespace, "printed")
    proc = _thresher(cluster, "run", "printed", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    name = line.removeprefix("job.batch/")
    assert cluster.kubectl("get", "job", name, "-n", namespace, check=False).returncode == 0


def test_run_of_a_missing_schedule_is_one_line(cluster, namespace, operator):
    proc = _thresher(cluster, "run", "nope", "-n", namespace)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: collectionschedule {namespace}/nope not found "
                                   f"(kubectl get csched -n {namespace} lists them)")


def test_status_yaml_is_the_json_rows(cluster, namespace, operator):
    """``-o yaml`` was silently ignored (a table came out)."""
    import json

    import yaml

    apply(cluster, namespace, schedule("listed"))
    simulate(cluster, namespace, "listed")
    assert _thresher(cluster, "run", "listed", "-n", namespace, "--wait", "--timeout", "90",
                     "--interval", "0.5").returncode == 0
    as_yaml = _thresher(cluster, "status", "-n", namespace, "-o", "yaml")
    as_json = _thresher(cluster, "status", "-n", namespace, "-o", "json")
    assert as_yaml.returncode == as_json.returncode == 0, as_yaml.stderr + as_json.stderr
    (row,) = yaml.safe_load(as_yaml.stdout)
    assert row == json.loads(as_json.stdout)[0] and row["name"] == "listed" and row["lastResult"] == "Succeeded"
