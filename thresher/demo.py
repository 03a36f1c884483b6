"""``thresher demo``: the whole loop on one machine, no Docker.

Local control plane -> CRD -> operator -> the example schedules -> a manual run of each ->
recorded runs in ``kubectl get collectionschedules`` and ``thresher status``.

On this cluster pods run on kwok's simulated nodes: no container starts, so no TMDB data is
collected and no image is processed. The demo says so, records the runs Kubernetes reports,
and then runs the TMDB job for real as a local process against the offline fake TMDB server so
the collector's own counts are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path

import typer
import yaml

NAMESPACE = "thresher-demo"
EXAMPLES = ("tmdb-daily.yaml", "tmdb-weekly.yaml", "drone-gpu.yaml", "container-every-minute.yaml")
SIMULATED_BANNER = (
    "NOTE: pods on this local cluster run on kwok's SIMULATED nodes. No container starts: the runs\n"
    "      below are real Kubernetes Jobs whose pods kwok marks finished. They collect no data,\n"
    "      so their results show as 'missing' - that is the truth, not a bug."
)


def _repo_examples() -> Path:
    return Path(__file__).resolve().parent.parent / "manifests" / "examples"


def _say(text: str) -> None:
    typer.secho(text, fg=typer.colors.CYAN, err=True)


def _operator_pid_file(cluster) -> Path:
    return cluster.state_dir / "pids" / "operator.pid"


def start_operator(cluster, metrics_port: int) -> None:
    """The operator as a background process beside the dev cluster (stopped by `make demo-down`)."""
    from thresher.devcluster.cluster import free_port

    pid_file = _operator_pid_file(cluster)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if Path(f"/proc/{pid}").exists() and "operator" in Path(f"/proc/{pid}/cmdline").read_text(errors="ignore"):
            _say(f"operator already running (pid {pid})")
            return
    log = open(cluster.log_dir / "operator.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "thresher.cli", "operator", "run", "--namespace", NAMESPACE,
         "--metrics-port", str(metrics_port), "--liveness-port", str(free_port())],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=cluster.state_dir)
    pid_file.write_text(f"{proc.pid}\n")
    (cluster.state_dir / "operator-metrics-port").write_text(str(metrics_port))
    _say(f"started the operator (pid {proc.pid}), log {cluster.log_dir / 'operator.log'}")


def stop_operator(cluster) -> None:
    pid_file = _operator_pid_file(cluster)
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


DEMO_OBJECTS = f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: v1
kind: Secret
metadata:
  name: tmdb-api
  namespace: {NAMESPACE}
stringData:
  api-key: offline-demo-key
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: thresher-demo-data
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: thresher-local
  claimRef:
    namespace: {NAMESPACE}
    name: thresher-data
  hostPath:
    path: /tmp/thresher-demo-data
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: thresher-data
  namespace: {NAMESPACE}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: thresher-local
  resources:
    requests:
      storage: 10Gi
"""


def _schedules(cluster) -> list[dict]:
    out = cluster.kubectl("get", "collectionschedules", "-n", NAMESPACE, "-o", "json").stdout
    return json.loads(out)["items"]


def run_demo(down: bool = False) -> None:
    from thresher.api import crd
    from thresher.devcluster.cluster import DevCluster, free_port

    cluster = DevCluster()
    if down:
        stop_operator(cluster)
        cluster.down(log=_say)
        return

    _say("1/6 local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes)")
    cluster.up(log=_say)
    _say("2/6 CollectionSchedule CRD")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crd.render())
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/collectionschedules.thresher.dev")
    _say("3/6 operator")
    start_operator(cluster, free_port())
    _say(f"4/6 namespace {NAMESPACE}, the TMDB key Secret, a PersistentVolumeClaim, the examples")
    cluster.kubectl("apply", "-f", "-", input=DEMO_OBJECTS)
    for name in EXAMPLES:
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(_repo_examples() / name))

    _say("5/6 run now: one manual run of each schedule")
    _say(SIMULATED_BANNER)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len({s["metadata"]["name"] for s in _schedules(cluster)
                                                if (s.get("status") or {}).get("cronJobRef")}) < len(EXAMPLES):
        time.sleep(1)
    for body in _schedules(cluster):
        cluster.kubectl("annotate", "--overwrite", "collectionschedule", body["metadata"]["name"], "-n",
                        NAMESPACE, f"thresher.dev/run-now={uuid.uuid4().hex}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all((s.get("status") or {}).get("recentRuns") for s in _schedules(cluster)):
            break
        time.sleep(1)

    typer.echo(cluster.kubectl("get", "collectionschedules", "-n", NAMESPACE).stdout)
    subprocess.run([sys.executable, "-m", "thresher.cli", "status", "-n", NAMESPACE],
                   env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, check=False)

    _say("6/6 the TMDB job itself, run for real as a local process against the offline fake TMDB server")
    _real_tmdb_run()

    port = (cluster.state_dir / "operator-metrics-port").read_text().strip()
    typer.echo(
        "\nNext steps:\n"
        f"  {cluster.env_line()}\n"
        f"  kubectl get collectionschedules -n {NAMESPACE}      # short name: csched\n"
        f"  thresher status -n {NAMESPACE}\n"
        f"  thresher run tmdb-daily -n {NAMESPACE}              # another manual run\n"
        f"  curl -s localhost:{port}/metrics | grep ^thresher_  # the operator's metrics\n"
        "  make demo-down                                       # stop everything, remove state\n")


def _real_tmdb_run() -> None:
    """Run `thresher job tmdb collect` against the fake server; print its run result."""
    from thresher.jobs.tmdb.fakeserver import running_fake_server

    with running_fake_server() as server, tempfile.TemporaryDirectory(prefix="thresher-demo-") as data:
        result_path = Path(data) / "result.json"
        env = {**os.environ, "TMDB_API_KEY": "offline-demo-key", "THRESHER_RESULT_PATH": str(result_path)}
        proc = subprocess.run(
            [sys.executable, "-m", "thresher.cli", "job", "tmdb", "collect", "--collection", "daily",
             "--api-base-url", server.base_url, "--data-dir", data],
            env=env, capture_output=True, text=True)
        typer.echo(f"exit code {proc.returncode}; run result (OFFLINE DEMO DATA from the fake server):")
        typer.echo(result_path.read_text() if result_path.exists() else proc.stderr[-2000:])
