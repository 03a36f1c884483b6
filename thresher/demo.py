"""``thresher demo``: the whole loop on one machine, no Docker.

Local control plane -> ``helm install`` of the chart (CRD, RBAC, Deployment, Service) -> the
operator, authenticated as the chart's ServiceAccount -> Prometheus with Thresher's alert rules
scraping it -> the example schedules -> a manual run of each -> recorded runs in ``kubectl get
collectionschedules``, ``thresher status``, the metrics and the alerts API.

On this cluster pods run on kwok's simulated nodes: no container starts, so no TMDB data is
collected and no image is processed. The demo says so, records the runs Kubernetes reports,
and then runs the TMDB job for real as a local process against the offline fake TMDB server so
the collector's own counts are real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import typer
import yaml

NAMESPACE = "thresher-demo"
SYSTEM_NAMESPACE = "thresher-system"
RELEASE = "thresher"
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ("tmdb-daily.yaml", "tmdb-weekly.yaml", "drone-gpu.yaml", "container-every-minute.yaml")
SIMULATED_BANNER = (
    "NOTE: pods on this local cluster run on kwok's SIMULATED nodes. No container starts: the runs\n"
    "      below are real Kubernetes Jobs whose pods kwok marks finished. They collect no data,\n"
    "      so their results show as 'missing' - that is the truth, not a bug."
)


def _repo_examples() -> Path:
    return REPO / "manifests" / "examples"


def _say(text: str) -> None:
    typer.secho(text, fg=typer.colors.CYAN, err=True)


def _operator_pid_file(cluster) -> Path:
    return cluster.state_dir / "pids" / "operator.pid"


def start_operator(cluster, metrics_port: int, kubeconfig: Path) -> None:
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
        env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=cluster.state_dir)
    pid_file.write_text(f"{proc.pid}\n")
    _say(f"started the operator (pid {proc.pid}), log {cluster.log_dir / 'operator.log'}")


def stop_operator(cluster) -> None:
    _stop_pid_file(_operator_pid_file(cluster))
    _stop_pid_file(cluster.state_dir / "pids" / "prometheus.pid")


def _stop_pid_file(pid_file: Path) -> None:
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


def install_chart(cluster) -> None:
    """`helm upgrade --install` of charts/thresher with the pinned helm (CRDs from crds/)."""
    from thresher.devcluster.binaries import ensure

    helm = ensure(["helm"], log=_say)["helm"]
    subprocess.run([str(helm), "upgrade", "--install", RELEASE, str(REPO / "charts" / "thresher"),
                    "--namespace", SYSTEM_NAMESPACE, "--create-namespace", "--wait", "--timeout", "120s",
                    "--kubeconfig", str(cluster.kubeconfig)], check=True, capture_output=True, text=True)
    # Helm installs crds/ once and never upgrades them; apply the current CRD like an upgrade must.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(REPO / "charts" / "thresher" / "crds"))


def service_account_kubeconfig(cluster, path: Path) -> Path:
    """A kubeconfig with a TokenRequest token of the chart's ServiceAccount: the local operator
    process then has exactly the chart's RBAC, as the Deployment's pod would."""
    sa = cluster.kubectl("get", "deployment", "-n", SYSTEM_NAMESPACE, "-l",
                         "app.kubernetes.io/instance=" + RELEASE, "-o",
                         "jsonpath={.items[0].spec.template.spec.serviceAccountName}").stdout.strip()
    token = cluster.kubectl("create", "token", sa, "-n", SYSTEM_NAMESPACE, "--duration=24h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": admin["clusters"],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"],
                                                      "user": "operator"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def start_prometheus(cluster, metrics_port: int) -> str | None:
    """Debian's Prometheus with Thresher's alert rules, scraping the operator; its URL."""
    from thresher.devcluster.cluster import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        _say("prometheus is not installed (`make tools` installs it): skipping the alerts part")
        return None
    workdir = cluster.state_dir / "prometheus"
    workdir.mkdir(exist_ok=True)
    rules = workdir / "thresher-rules.yaml"
    shutil.copy(REPO / "manifests" / "monitoring" / "thresher-rules.yaml", rules)
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "thresher-operator", "honor_labels": True,
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(cluster.log_dir / "prometheus.log", "ab")
    proc = subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
    (cluster.state_dir / "pids" / "prometheus.pid").write_text(f"{proc.pid}\n")
    return f"http://127.0.0.1:{port}"


def claim_with_volume(claim: str) -> str:
    """A PersistentVolumeClaim and the static hostPath volume bound to it (kwok pods mount
    nothing, but the scheduler and the PV controller need the claim bound)."""
    return f"""---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: thresher-demo-{claim}
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: thresher-local
  claimRef:
    namespace: {NAMESPACE}
    name: {claim}
  hostPath:
    path: /tmp/thresher-demo-{claim}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {claim}
  namespace: {NAMESPACE}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: thresher-local
  resources:
    requests:
      storage: 10Gi
"""


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
# drone-gpu.yaml runs at this priority, as a platform team would define it.
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: batch-low
value: 1000
preemptionPolicy: Never
description: Batch collection and processing jobs that may wait.
"""


def _schedules(cluster) -> list[dict]:
    out = cluster.kubectl("get", "collectionschedules", "-n", NAMESPACE, "-o", "json").stdout
    return json.loads(out)["items"]


def run_demo(down: bool = False) -> None:
    from thresher.devcluster.cluster import GPU_NODE, DevCluster, free_port

    cluster = DevCluster()
    if down:
        stop_operator(cluster)
        cluster.down(log=_say)
        return

    _say("1/6 local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes)")
    cluster.up(log=_say)
    _say(f"2/6 helm install {RELEASE} charts/thresher -n {SYSTEM_NAMESPACE} (CRD, RBAC, Deployment, Service)")
    install_chart(cluster)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/collectionschedules.thresher.dev")
    _say("3/6 the operator, as a local process with the chart's ServiceAccount token (the chart's\n"
         "    Deployment pod is simulated by kwok), and Prometheus with Thresher's alert rules")
    stop_operator(cluster)  # a re-run replaces both with fresh credentials
    metrics_port = free_port()
    start_operator(cluster, metrics_port, service_account_kubeconfig(cluster, cluster.state_dir / "operator.kubeconfig"))
    prometheus_url = start_prometheus(cluster, metrics_port)
    _say(f"4/6 namespace {NAMESPACE}, the TMDB key Secret, PersistentVolumeClaims, a PriorityClass, the examples")
    # The claims the examples mount: thresher-data (TMDB) and drone-images (drone).
    cluster.kubectl("apply", "-f", "-",
                    input=DEMO_OBJECTS + claim_with_volume("thresher-data") + claim_with_volume("drone-images"))
    # drone-gpu.yaml asks for GPU nodes in zone-a.
    cluster.kubectl("label", "--overwrite", "node", GPU_NODE, "topology.kubernetes.io/zone=zone-a")
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
    _real_tmdb_run(cluster.state_dir / "tmdb-offline-demo")

    alerts = (f"  {prometheus_url}/alerts                 # Thresher's alert rules, evaluated\n"
              f"  curl -s {prometheus_url}/api/v1/alerts\n" if prometheus_url else "")
    typer.echo(
        "\nNext steps:\n"
        f"  {cluster.env_line()}\n"
        f"  kubectl get collectionschedules -n {NAMESPACE}      # short name: csched\n"
        f"  thresher status -n {NAMESPACE}\n"
        f"  thresher run tmdb-daily -n {NAMESPACE}              # another manual run\n"
        f"  curl -s localhost:{metrics_port}/metrics | grep ^thresher_  # the operator's metrics\n"
        f"{alerts}"
        "  make demo-down                                       # stop everything, remove state\n")


def _real_tmdb_run(data: Path) -> None:
    """Run `thresher job tmdb collect` against the fake server; print its run result."""
    from thresher.jobs.tmdb.fakeserver import running_fake_server

    data.mkdir(parents=True, exist_ok=True)
    with running_fake_server() as server:
        result_path = data / "result.json"
        env = {**os.environ, "TMDB_API_KEY": server.config.api_key, "THRESHER_RESULT_PATH": str(result_path)}
        proc = subprocess.run(
            [sys.executable, "-m", "thresher.cli", "job", "tmdb", "collect", "--collection", "daily",
             "--api-base-url", server.base_url, "--data-dir", str(data)],
            env=env, capture_output=True, text=True)
        typer.echo(f"exit code {proc.returncode}; run result (OFFLINE DEMO DATA from the fake server):")
        typer.echo(result_path.read_text() if result_path.exists() else proc.stderr[-2000:])
        typer.echo(f"snapshots, catalog and reports: {data}")
