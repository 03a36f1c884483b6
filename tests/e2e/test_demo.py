"""`make demo` runs `thresher demo`: the README's first command must work end to end, in both
of its modes, and `--down` must leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _demo(state: Path, *args: str, timeout: float) -> str:
    env = {**os.environ, "THRESHER_STATE_DIR": str(state)}
    proc = subprocess.run([sys.executable, "-m", "thresher.cli", "demo", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _rows(out: str) -> dict[str, str]:
    """The first row of each schedule in `kubectl get collectionschedules` and what follows."""
    rows: dict[str, str] = {}
    for line in out[out.index("NAME "):].splitlines()[1:]:
        if line.strip() and not line.startswith(" "):
            rows.setdefault(line.split()[0], line)
    return rows


def _down(state: Path) -> None:
    _demo(state, "--down", timeout=180)
    assert not state.exists()


def test_demo_on_kwok_runs_every_example_and_cleans_up(tmp_path):
    """--no-node: chart installed, operator on the chart's credentials, every example schedule
    run once and recorded, the simulation stated plainly, the real TMDB job's result shown."""
    state = tmp_path / "demo"
    try:
        out = _demo(state, "--no-node", timeout=400)
        assert "SIMULATED" in out
        rows = _rows(out)
        for name in ("tmdb-daily", "tmdb-weekly", "drone-fields", "drone-gpu", "heartbeat"):
            assert "Succeeded" in rows[name], rows.get(name)
        assert '"jobType":"tmdb","succeeded":true' in out
        assert "/alerts" in out and "/metrics" in out
    finally:
        _down(state)


@pytest.mark.realnode
@pytest.mark.timeout(1800)
def test_demo_on_the_real_node_shows_real_work(tmp_path):
    """The default where the machine can: TMDB against the fake server, drone over sample fields
    and the heartbeat run as real containers on thresher-local; their recorded results are the
    containers' own counts, their outputs are on the local volumes, the metrics count the runs;
    only the GPU example is simulated. The operator is the chart's Deployment (issue 16): two
    pods Running on thresher-local from the registry's image, one holding the Lease and saying
    so in its thresher_operator_leader gauge, no local operator process. `--down` removes the
    node's containers, mounts and processes with the rest."""
    from thresher.devcluster.node import Node

    state = tmp_path / "demo"
    try:
        out = _demo(state, timeout=1500)
        _assert_operator_pods(state, out)
        assert "REAL containers on thresher-local" in out and "OFFLINE DEMO DATA" in out
        assert "kwok-gpu-1 SIMULATED GPU node" in out  # issue 13: the simulated GPU node is named as such
        rows = _rows(out)
        for name in ("tmdb-daily", "tmdb-weekly", "drone-fields", "drone-gpu", "heartbeat"):
            assert "Succeeded" in rows[name], rows.get(name)
        results = {line.split()[0]: line for line in out.splitlines() if " result: " in line}
        for name in ("tmdb-daily", "tmdb-weekly", "drone-fields"):
            line = results[name]
            assert "real, on thresher-local" in line, line
            result = json.loads(line.split(" result: ", 1)[1])
            assert result["items"] > 0 and result["valid"] > 0, line
        assert json.loads(results["drone-fields"].split(" result: ", 1)[1])["items"] == 5  # 4 RGB + 1 capture
        assert "simulated by kwok" in results["drone-gpu"]
        assert "health/" in out and "reports:" in out  # the drone outputs listed from the volume
        assert 'thresher_schedule_runs_total{' in out and 'schedule="tmdb-daily"' in out
    finally:
        node = Node(state)
        _down(state)
    assert node.leftovers() == {k: [] for k in node.leftovers()}


def _assert_operator_pods(state: Path, out: str) -> None:
    """What the demo says of its operator is what the cluster holds: the chart's two pods on the
    real node, pulled from the dev registry, the Lease holder the one the summary calls active
    (gauge 1), the other a standby (gauge 0); no operator process beside the cluster."""
    from thresher.demo.loop import LEASE, REAL_NODE, SYSTEM_NAMESPACE
    from thresher.devcluster.cluster import DevCluster
    from thresher.devcluster.operator_pods import holder_instance, lease_holder, ready_pods
    from thresher.devcluster.registry import Registry

    cluster = DevCluster(state, node=True)
    pods = ready_pods(cluster, SYSTEM_NAMESPACE, 2)
    assert pods, cluster.kubectl("get", "pods", "-n", SYSTEM_NAMESPACE, "-o", "wide").stdout
    registry = Registry(state).address
    for pod in pods:
        assert pod["spec"]["nodeName"] == REAL_NODE and not pod["spec"].get("hostNetwork")
        (status,) = pod["status"]["containerStatuses"]
        assert status["imageID"].startswith(f"{registry}/thresher/operator@sha256:"), status["imageID"]
    leader = holder_instance(lease_holder(cluster, SYSTEM_NAMESPACE, LEASE))
    names = {p["metadata"]["name"] for p in pods}
    assert leader in names, (leader, names)
    lines = [line for line in out.splitlines() if line.strip().startswith("operator pod ")]
    assert len(lines) == 2, lines
    (active,) = [line for line in lines if "active (Lease holder); thresher_operator_leader 1;" in line]
    (standby,) = [line for line in lines if "standby; thresher_operator_leader 0;" in line]
    assert active.split()[2] == leader and standby.split()[2] in names - {leader}, lines
    assert all(f"Running on {REAL_NODE}" in line for line in lines), lines
    assert not cluster.procs.running("operator")
