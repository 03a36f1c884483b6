"""``thresher demo``: the whole loop on one machine, no Docker.

Local control plane -> ``helm install`` of the chart (CRD, RBAC, Deployment, Service) -> the
operator -> Prometheus with Thresher's alert rules scraping it -> the example schedules -> a
manual run of each -> recorded runs in ``kubectl get collectionschedules``, ``thresher status``,
the metrics and the alerts API.

Where the machine can run it (root, containerd, runc, CNI plugins, buildah, docker-registry,
skopeo; `make demo` installs them), the demo adds the real node ``thresher-local`` with its
registry, and Thresher's images, built locally and published there with the chart (``publish``:
the release path; the chart is installed from ``oci://``, pods pull by digest with a pull Secret).
The operator is then what a user's cluster runs: the chart's Deployment, two replicas on the real
node (in-cluster configuration through the ``kubernetes`` Service, which kube-proxy makes work;
one active, the holder of the chart's Lease, one standby), scraped by Prometheus through its
Service's endpoints. The TMDB schedules collect from the project's fake TMDB server on the host (offline demo data),
a drone schedule processes generated sample fields on a local volume and the heartbeat runs its
shell command, all as real containers; their run results, outputs and metrics are shown. Only
the GPU example stays on kwok's simulated GPU node (the kwok CPU nodes are tainted in that mode,
so a user's own schedule lands on the real node too, unless it asks for kwok). Without the real node (``--no-node``, or a
machine that cannot run it), every pod is simulated by kwok, the operator's pods included: the
operator then runs as a local process with the chart's ServiceAccount token (the chart's RBAC,
as its pod would have), the demo says so and runs the TMDB job for real as a local process
instead, so the collector's own counts are still real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import typer
import yaml

from thresher.api.names import RUN_NOW_ANNOTATION
from thresher.demo.assets import AssetError, asset
from thresher.devcluster import images
from thresher.devcluster.binaries import BuildError
from thresher.devcluster.cluster import ClusterError, DevCluster
from thresher.devcluster.images import ImageError
from thresher.devcluster.kwok.nodes import (CPU_NODES, GPU_NODE, SIMULATED_SELECTOR, SIMULATED_TAINT,
                                            SIMULATED_TOLERATION)
from thresher.devcluster.node import Node, NodeError
from thresher.devcluster.operator_pods import holder_instance, lease_holder, metric_sum, pod_metrics, ready_pods
from thresher.devcluster.process import free_port
from thresher.devcluster.registry import PULL_SECRET, RegistryError
from thresher.devcluster.release import ReleaseError

NAMESPACE = "thresher-demo"
SYSTEM_NAMESPACE = "thresher-system"
RELEASE = "thresher"
EXAMPLES = ("tmdb-daily.yaml", "tmdb-weekly.yaml", "drone-fields.yaml", "drone-gpu.yaml",
            "container-every-minute.yaml")
REAL_NODE = "thresher-local"
JOBS_UID = 10001  # the jobs image's user (Dockerfile); files on local volumes must be its
OFFLINE_KEY = "offline-demo-key"
PULL_SECRETS = (PULL_SECRET,)  # the dev registry's credentials, in each namespace that pulls
OPERATOR_REPLICAS = 2  # on the real node: one active (the Lease holder), one standby
LEASE = RELEASE  # the chart's Lease is named like its fullname, which is the release name here
SIMULATED_BANNER = (
    "NOTE: pods on this local cluster run on kwok's SIMULATED nodes. No container starts: the runs\n"
    "      below are real Kubernetes Jobs whose pods kwok marks finished. They collect no data,\n"
    "      so their results show as 'missing' - that is the truth, not a bug."
)


def load_examples() -> list[dict]:
    return [yaml.safe_load((asset("examples") / name).read_text()) for name in EXAMPLES]


def _say(text: str) -> None:
    typer.secho(text, fg=typer.colors.CYAN, err=True)


# The demo's own processes, beside the cluster's in its state directory (`make demo-down` stops them).
# "operator" only in the simulated mode; on the real node the operator is the chart's pods.
DEMO_PROCESSES = ("operator", "prometheus", "fake-tmdb")


def start_operator(cluster: DevCluster, metrics_port: int, kubeconfig: Path) -> None:
    """The simulated mode's operator: a background process beside the dev cluster (stopped by
    `make demo-down`)."""
    if cluster.procs.running("operator"):
        _say(f"operator already running (pid {cluster.procs.pid('operator')})")
        return
    cluster.procs.start(
        "operator",
        [sys.executable, "-m", "thresher.cli", "operator", "run", "--namespace", NAMESPACE,
         "--metrics-port", str(metrics_port), "--liveness-port", str(free_port())],
        _say, env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    _say(f"    operator log: {cluster.procs.log_path('operator')}")


def stop_operator(cluster: DevCluster) -> None:
    for name in DEMO_PROCESSES:
        cluster.procs.stop(name, _say, timeout=30)


def chart_values(real_node: bool = False) -> dict:
    """Where the chart's operator Deployment runs. On the real node: there, two replicas (the
    kwok CPU nodes are tainted in that mode, and a pod on them would run nothing). Simulated:
    on kwok, where its pods are only marked running, so the demo runs the operator as a local
    process with the Deployment's credentials instead; the Deployment asks for kwok, as
    simulated pods must."""
    if real_node:
        return {"replicaCount": OPERATOR_REPLICAS, "nodeSelector": {"kubernetes.io/hostname": REAL_NODE}}
    return {"nodeSelector": dict(SIMULATED_SELECTOR), "tolerations": [dict(SIMULATED_TOLERATION)]}


def install_chart(cluster: DevCluster, source: list[str] | None = None, extra_values: dict | None = None,
                  real_node: bool = False) -> None:
    """`helm upgrade --install` of the chart with the pinned helm (CRDs from crds/): from
    ``source`` (``oci://... --version X`` and its flags) or else charts/thresher. ``--wait``: on
    the real node until both operator pods have pulled their image and are Ready."""
    from thresher.devcluster.binaries import ensure

    helm = ensure(["helm"], log=_say)["helm"]
    chart = asset("chart")
    values = cluster.state_dir / "chart-values.json"
    values.write_text(json.dumps({**chart_values(real_node), **(extra_values or {})}))
    proc = subprocess.run([str(helm), "upgrade", "--install", RELEASE, *(source or [str(chart)]), "--values", str(values),
                           "--namespace", SYSTEM_NAMESPACE, "--create-namespace", "--wait",
                           "--timeout", "300s" if real_node else "120s",
                           "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"helm upgrade --install {RELEASE} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    # Helm installs crds/ once and never upgrades them; apply the current CRD like an upgrade must.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(chart / "crds"))


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


def scrape_config(metrics_port: int | None = None, targets_file: Path | None = None) -> dict:
    """Prometheus's scrape job for the operator: the local process at 127.0.0.1:``metrics_port``,
    or (``targets_file``) the targets ``metrics_targets`` wrote there: every endpoint of the
    chart's metrics Service, both replicas, as a ServiceMonitor would select them (Debian's
    Prometheus is built without Kubernetes service discovery, so the demo reads the Endpoints
    for it). The job is thresher-operator either way: the alert rules select
    ``up{job=~".*thresher.*"}``."""
    job: dict = {"job_name": "thresher-operator", "honor_labels": True}
    if targets_file is None:
        return {**job, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
    return {**job, "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "10s"}]}


def metrics_targets(slices: list[dict]) -> list[dict]:
    """file_sd targets from the metrics Service's EndpointSlices: each endpoint's address and
    the ``http-metrics`` port, labelled with its pod (pure; the pod IPs are reachable from the
    host over the node's bridge)."""
    targets = []
    for piece in slices:
        port = next((p["port"] for p in piece.get("ports") or [] if p.get("name") == "http-metrics"), None)
        for endpoint in piece.get("endpoints") or []:
            if port is None or (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            pod = (endpoint.get("targetRef") or {}).get("name", "")
            targets += [{"targets": [f"{address}:{port}"], "labels": {"pod": pod}}
                        for address in endpoint.get("addresses") or []]
    return sorted(targets, key=lambda t: t["targets"])


def write_metrics_targets(cluster, path: Path) -> list[dict]:
    """The metrics Service's endpoints into Prometheus's file_sd file (re-read on change)."""
    out = cluster.kubectl("get", "endpointslices", "-n", SYSTEM_NAMESPACE, "-l",
                          f"kubernetes.io/service-name={RELEASE}-metrics", "-o", "json").stdout
    targets = metrics_targets(json.loads(out)["items"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets))
    tmp.replace(path)
    return targets


def start_prometheus(cluster: DevCluster, scrape: dict) -> str | None:
    """Debian's Prometheus with Thresher's alert rules, scraping the operator; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        _say("prometheus is not installed (`make tools` installs it): skipping the alerts part")
        return None
    workdir = cluster.state_dir / "prometheus"
    workdir.mkdir(exist_ok=True)
    rules = workdir / "thresher-rules.yaml"
    shutil.copy(asset("rules"), rules)
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)],
        "scrape_configs": [scrape],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    cluster.procs.start("prometheus", [binary, f"--config.file={workdir / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={workdir / 'data'}",
                                       f"--web.listen-address=127.0.0.1:{port}"], _say, cwd=workdir)
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


# The examples' own prerequisites the demo uses as they are. Not namespace.yaml (the demo has
# its own namespace) and not claims.yaml (the demo binds its claims to local volumes).
DEMO_PREREQUISITES = ("priorityclass.yaml", "heartbeat-token.yaml")


def demo_objects(tmdb_key: str) -> str:
    """The namespace and what the examples expect to exist in it: the TMDB key Secret (the
    demo's key), and manifests/examples/prerequisites/ for the rest."""
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tmdb-api", "namespace": NAMESPACE},
         "stringData": {"api-key": tmdb_key}},
    ]
    for name in DEMO_PREREQUISITES:
        for doc in yaml.safe_load_all((asset("examples") / "prerequisites" / name).read_text()):
            if doc["kind"] != "PriorityClass":  # the one cluster-scoped object there
                doc["metadata"]["namespace"] = NAMESPACE
            objects.append(doc)
    return yaml.safe_dump_all(objects)


def _schedules(cluster) -> list[dict]:
    out = cluster.kubectl("get", "collectionschedules", "-n", NAMESPACE, "-o", "json").stdout
    return json.loads(out)["items"]


# --- which mode ----------------------------------------------------------------------------

def real_node_problem() -> str | None:
    """Why this machine cannot run the real node (the first failing check), or None."""
    try:
        Node(Path(tempfile.gettempdir()) / "thresher-preflight").preflight()
    except NodeError as err:
        return str(err)
    missing = [tool for tool in ("buildah", "debootstrap", "go", "skopeo", "docker-registry", "htpasswd")
               if shutil.which(tool) is None]
    if missing:
        return f"image tools not installed: {', '.join(missing)} (make node-tools)"
    return None


def choose_mode(requested: bool | None, problem: str | None) -> bool:
    """Real node unless it was refused with --no-node, or (when not asked for) it cannot run
    here. Asking for it explicitly on a machine that cannot is an error, not a quiet fallback."""
    if requested is False:
        return False
    if problem is None:
        return True
    if requested:
        raise typer.BadParameter(f"--node: {problem}")
    return False


# --- the examples on the real node ----------------------------------------------------------

def for_real_node(body: dict, jobs_image: str, tmdb_base_url: str | None) -> dict | None:
    """The example as the demo runs it on the real node, or None when it stays on kwok (GPU).

    Pods are pinned to the real node (the kwok nodes would only simulate them); TMDB schedules
    point at the offline fake server unless a real key is used; the heartbeat's busybox is on
    Docker Hub, which an offline machine cannot reach, so the same shell command runs in the jobs
    image from the dev registry."""
    spec = body["spec"]
    if spec.get("resources", {}).get("gpus"):
        return None
    body = json.loads(json.dumps(body))
    spec = body["spec"]
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), "kubernetes.io/hostname": REAL_NODE}
    job = spec["job"]
    if "tmdb" in job and tmdb_base_url:
        job["tmdb"]["apiBaseUrl"] = tmdb_base_url
    if "container" in job:
        job["container"]["image"] = jobs_image
    return body


def node_roles() -> str:
    """Which node does what in the real-node mode, as the demo says it."""
    taint = f"{SIMULATED_TAINT['key']}={SIMULATED_TAINT['value']}:{SIMULATED_TAINT['effect']}"
    return (f"    nodes: {REAL_NODE} REAL (kubelet + containerd): every pod that does not ask for kwok runs here\n"
            f"           {GPU_NODE} SIMULATED GPU node (kwok): GPU pods are marked finished, nothing runs\n"
            f"           {', '.join(CPU_NODES)} SIMULATED (kwok), tainted {taint}: only pods that tolerate it")


def local_claim(claim: str, volume: str) -> dict:
    """A claim bound by name to one of the real node's static local PersistentVolumes."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": NAMESPACE},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "thresher-local",
                     "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}}


def _bind_local_claims(cluster, claims: list[str]) -> dict[str, Path]:
    """Each claim bound to a free local PV (the same one again on a re-run); its host folder,
    owned by the jobs' uid so the containers can write there."""
    pvs = json.loads(cluster.kubectl("get", "pv", "-o", "json").stdout)["items"]
    local = [v for v in pvs if v["spec"].get("storageClassName") == "thresher-local" and "local" in v["spec"]]
    folders = {}
    for claim in claims:
        mine = next((v for v in local if (v["spec"].get("claimRef") or {}).get("name") == claim
                     and v["spec"]["claimRef"].get("namespace") == NAMESPACE), None)
        mine = mine or next((v for v in local if v["status"].get("phase") == "Available"
                             and not v["spec"].get("claimRef")), None)
        if mine is None:
            raise ClusterError(f"no Available local PersistentVolume left for claim {claim} "
                               "(`kubectl get pv`; `make demo-down` starts over)")
        local.remove(mine)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(local_claim(claim, mine["metadata"]["name"])))
        folders[claim] = Path(mine["spec"]["local"]["path"])
    return folders


def _own_for_jobs(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, JOBS_UID, JOBS_UID)


def start_fake_tmdb(cluster: DevCluster, api_key: str) -> str:
    """The fake TMDB server on the host, on every address (pods reach the host over the node's
    bridge, so no image carries it); stopped by `make demo-down`. Returns its port."""
    out = cluster.log_dir / "fake-tmdb.out"
    out.unlink(missing_ok=True)
    cluster.procs.start(
        "fake-tmdb", [sys.executable, "-m", "thresher.demo", "fake-tmdb", "--host", "0.0.0.0", "--port", "0",
                      "--movies", "2000", "--api-key", api_key], _say, stdout=out)

    def first_line() -> list[str]:
        return out.read_text().splitlines()[:1] if out.exists() else []

    cluster.procs.wait("fake-tmdb", lambda: bool(first_line()), 30, "announcing its port")
    return str(json.loads(first_line()[0])["port"])


# --- the demo --------------------------------------------------------------------------------

def run_demo(down: bool = False, node: bool | None = None) -> None:
    """`thresher demo`: a failure of the cluster, the node, an image or a demo file ends it with
    its message (and the failing process's log tail), not a traceback."""
    try:
        _run_demo(down, node)
    except (AssetError, BuildError, ClusterError, ImageError, NodeError, RegistryError, ReleaseError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _run_demo(down: bool, node: bool | None) -> None:
    if down:
        cluster = DevCluster()
        stop_operator(cluster)
        cluster.down(log=_say)
        return
    problem = real_node_problem() if node is not False else None
    real = choose_mode(node, problem)
    if not real and node is None:
        _say(f"the real node cannot run here ({problem}): pods will be simulated by kwok")
    if real:
        _demo_on_real_node(DevCluster(node=True))
    else:
        _demo_on_kwok(DevCluster(node=False))


def _install_and_start(cluster, step: str) -> tuple[str, str | None]:
    """Simulated mode: helm install, the operator as a local process on the chart's
    ServiceAccount, Prometheus scraping it: the operator's metrics URL and Prometheus's URL."""
    _say(f"{step} helm install {RELEASE} charts/thresher -n {SYSTEM_NAMESPACE} (CRD, RBAC, Deployment, "
         "Service; its pods would be simulated too): the operator as a local process with the chart's "
         "ServiceAccount token; Prometheus with Thresher's alert rules")
    install_chart(cluster)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/collectionschedules.thresher.dev")
    stop_operator(cluster)  # a re-run replaces both with fresh credentials
    metrics_port = free_port()
    kubeconfig = service_account_kubeconfig(cluster, cluster.state_dir / "operator.kubeconfig")
    start_operator(cluster, metrics_port, kubeconfig)
    return f"http://127.0.0.1:{metrics_port}/metrics", start_prometheus(cluster, scrape_config(metrics_port))


def _install_operator_pods(cluster, step: str, published: tuple[list[str], dict]) -> str | None:
    """Real node: the chart from the dev registry's ``oci://``, its Deployment's two operator
    pods on the real node (image pulled by digest with the pull Secret), one holding the Lease;
    Prometheus scraping both through the metrics Service's endpoints. Prometheus's URL."""
    source, values = published
    _say(f"{step} helm install {RELEASE} {source[0]} -n {SYSTEM_NAMESPACE} (CRD, RBAC, Deployment, Service, "
         f"PodDisruptionBudget): the operator as {OPERATOR_REPLICAS} pods on {REAL_NODE} (in-cluster "
         "configuration, leader election on a Lease); Prometheus with Thresher's alert rules scraping them")
    stop_operator(cluster)  # a local operator, Prometheus and the fake server of an earlier run
    install_chart(cluster, source, values, real_node=True)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/collectionschedules.thresher.dev")
    pods, leader = _operator_pods_and_leader(cluster, timeout=120)
    _say(f"    operator pods Ready: {', '.join(p['metadata']['name'] for p in pods)}; active (Lease {LEASE}): "
         f"{leader}; logs: kubectl logs -n {SYSTEM_NAMESPACE} -l app.kubernetes.io/component=operator")
    targets = _targets_file(cluster)
    write_metrics_targets(cluster, targets)
    return start_prometheus(cluster, scrape_config(targets_file=targets))


def _targets_file(cluster) -> Path:
    return cluster.state_dir / "prometheus" / "operator-targets.json"


def _operator_pods_and_leader(cluster, timeout: float) -> tuple[list[dict], str]:
    """The operator's pods once all are Ready and one of them holds the Lease; its name."""
    deadline = time.monotonic() + timeout
    while True:
        pods = ready_pods(cluster, SYSTEM_NAMESPACE, OPERATOR_REPLICAS)
        leader = holder_instance(lease_holder(cluster, SYSTEM_NAMESPACE, LEASE))
        if pods and leader in {p["metadata"]["name"] for p in pods}:
            return pods, leader
        if time.monotonic() > deadline:
            raise ClusterError(f"the operator's {OPERATOR_REPLICAS} pods were not Ready with one holding Lease "
                               f"{LEASE} after {timeout:.0f}s (ready: {len(pods)}, holder: {leader}); "
                               f"kubectl get pods,lease -n {SYSTEM_NAMESPACE}")
        time.sleep(2)


def operator_pod_lines(pods: list[dict], leader: str, gauges: dict[str, float | None]) -> list[str]:
    """One summary line per operator pod: where it runs, its image, Lease holder or standby, and
    its own ``thresher_operator_leader`` gauge (None: its /metrics did not answer)."""
    lines = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"] != leader):
        name = pod["metadata"]["name"]
        role = "active (Lease holder)" if name == leader else "standby"
        gauge = gauges.get(name)
        ids = [c.get("imageID", "") for c in pod["status"].get("containerStatuses", [])]
        lines.append(f"  operator pod {name:<28} {pod['status'].get('phase')} on {pod['spec'].get('nodeName')} "
                     f"{role}; thresher_operator_leader {'?' if gauge is None else f'{gauge:g}'}; "
                     f"image {ids[0] if ids else '-'}")
    return lines


def _leader_gauge(pod: dict) -> float | None:
    try:
        text = pod_metrics(pod)
    except OSError:
        return None
    return metric_sum(text, "thresher_operator_leader")


def _apply_examples(cluster, bodies: list[dict]) -> None:
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(bodies))


def _run_each_now(cluster, timeout: float) -> None:
    """Run-now on every schedule once its CronJob exists; wait until each has a recorded run."""
    expected = len(_schedules(cluster))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len({s["metadata"]["name"] for s in _schedules(cluster)
                                                if (s.get("status") or {}).get("cronJobRef")}) < expected:
        time.sleep(1)
    for body in _schedules(cluster):
        cluster.kubectl("annotate", "--overwrite", "collectionschedule", body["metadata"]["name"], "-n",
                        NAMESPACE, f"{RUN_NOW_ANNOTATION}={uuid.uuid4().hex}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((s.get("status") or {}).get("recentRuns") for s in _schedules(cluster)):
            return
        time.sleep(2)
    waiting = [s["metadata"]["name"] for s in _schedules(cluster) if not (s.get("status") or {}).get("recentRuns")]
    _say(f"still running after {timeout:.0f}s: {', '.join(waiting)} (see `kubectl get pods -n {NAMESPACE}`)")


def _show_schedules(cluster) -> None:
    typer.echo(cluster.kubectl("get", "collectionschedules", "-n", NAMESPACE).stdout)
    subprocess.run([sys.executable, "-m", "thresher.cli", "status", "-n", NAMESPACE],
                   env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, check=False)


def publish(cluster) -> tuple[str, tuple[list[str], dict]]:
    """Images and chart into the dev registry, as `make release` publishes them anywhere; the
    pull Secret in the namespaces that pull. Returns the jobs image by digest, and the chart's
    OCI source and values for `helm install`."""
    from thresher.devcluster import release
    from thresher.devcluster.binaries import ensure

    registry = cluster.node().registry
    published = release.publish_to_dev_registry(registry, ensure(["helm"], log=_say)["helm"], _say)
    for ns in (SYSTEM_NAMESPACE, NAMESPACE):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, registry.pull_secret(ns)]))
    for target, pushed in published.images.items():
        _say(f"    {target:9} {pushed.reference} (pushed in {pushed.seconds:.1f}s)")
    _say(f"    chart     {published.chart}:{published.version} ({published.chart_digest})")
    secrets = [{"name": name} for name in PULL_SECRETS]
    values = {"imagePullSecrets": secrets, "jobImages": {"pullSecrets": secrets}}
    return published.images["jobs"].reference, (release.oci_install_args(published, registry), values)


def _demo_on_real_node(cluster) -> None:
    _say("1/7 images: the sandbox (pause), Thresher's jobs and operator images, built with buildah on a "
         "local Debian base (cached: minutes the first time, seconds after)")
    images.build(["pause", "jobs", "operator"], _say)
    _say("2/7 local control plane (etcd, kube-apiserver, controller-manager, scheduler), kwok nodes, "
         f"and the real node {REAL_NODE} (kubelet + containerd + runc + CNI bridge, and a registry: "
         "docker-registry with TLS from the dev CA and htpasswd)")
    cluster.up(log=_say, timeout=180)
    _say("    publish: images pushed to the dev registry (skopeo), the chart pushed to oci://.../charts (helm)")
    jobs_image, published = publish(cluster)
    prometheus_url = _install_operator_pods(cluster, "3/7", published)

    live_key = os.environ.get("TMDB_API_KEY")
    host_ip = cluster.node().host_ip
    if live_key:
        _say("4/7 TMDB_API_KEY is set: the TMDB schedules call the real TMDB API")
        tmdb_base_url = None
    else:
        port = start_fake_tmdb(cluster, OFFLINE_KEY)
        tmdb_base_url = f"http://{host_ip}:{port}/3"
        _say(f"4/7 the project's fake TMDB server at {tmdb_base_url}: OFFLINE DEMO DATA, not TMDB's "
             "(set TMDB_API_KEY to a real key to collect from TMDB)")
    _say(f"5/7 namespace {NAMESPACE}, Secrets, a PriorityClass, claims on local volumes, sample drone "
         "fields, the examples")
    cluster.kubectl("apply", "-f", "-", input=demo_objects(live_key or OFFLINE_KEY) + claim_with_volume("drone-images"))
    folders = _bind_local_claims(cluster, ["thresher-data", "field-images"])
    subprocess.run([sys.executable, "-m", "thresher.demo", "sample-fields", "--data-dir",
                    str(folders["field-images"]), "--input", "incoming", "--count", "4", "--multispectral", "1",
                    "--width", "640", "--height", "480"], check=True, capture_output=True)
    examples = load_examples()
    for body in examples:  # subPaths made by the kubelet belong to root: make them the jobs' first
        sub = body["spec"].get("storage", {}).get("subPath")
        claim = body["spec"].get("storage", {}).get("claimName")
        if sub and claim in folders:
            (folders[claim] / sub).mkdir(parents=True, exist_ok=True)
    for folder in folders.values():
        _own_for_jobs(folder)
    cluster.kubectl("label", "--overwrite", "node", GPU_NODE, "topology.kubernetes.io/zone=zone-a")
    pinned = [(b, for_real_node(b, jobs_image, tmdb_base_url)) for b in examples]
    real = [on_node for _, on_node in pinned if on_node]
    simulated = [b for b, on_node in pinned if on_node is None]
    _apply_examples(cluster, real + simulated)
    _say(f"    REAL containers on {REAL_NODE}: {', '.join(b['metadata']['name'] for b in real)}\n"
         f"    SIMULATED by kwok (no GPU here): {', '.join(b['metadata']['name'] for b in simulated)}")
    _say(node_roles())

    _say("6/7 run now: one manual run of each schedule")
    _run_each_now(cluster, timeout=300)
    _show_schedules(cluster)

    _say("7/7 what the real runs produced")
    for body in _schedules(cluster):
        name = body["metadata"]["name"]
        last = ((body.get("status") or {}).get("recentRuns") or [{}])[0]  # newest first
        where = "simulated by kwok" if name in {b["metadata"]["name"] for b in simulated} else f"real, on {REAL_NODE}"
        typer.echo(f"  {name:<14} {last.get('outcome', 'no run'):<10} ({where}) result: "
                   f"{json.dumps(last.get('result')) if last.get('result') else '-'}")
    for claim, folder in folders.items():
        typer.echo(f"\n  claim {claim} (host folder {folder}):")
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".truth" not in p.name)[:14]:
            typer.echo(f"    {path.relative_to(folder)}  ({path.stat().st_size} bytes)")
        reports = sorted(folder.rglob("*.html"))
        if reports:
            typer.echo(f"  reports: {' '.join(str(r) for r in reports[:4])}")
    pods, leader = _operator_pods_and_leader(cluster, timeout=60)
    write_metrics_targets(cluster, _targets_file(cluster))  # the pods Prometheus scrapes, current again
    typer.echo(f"\n  the operator: the chart's Deployment, {len(pods)} pods (kubectl get pods -n {SYSTEM_NAMESPACE}):")
    typer.echo("\n".join(operator_pod_lines(pods, leader, {p["metadata"]["name"]: _leader_gauge(p) for p in pods})))
    (active,) = [p for p in pods if p["metadata"]["name"] == leader]
    metrics_url = f"http://{active['status']['podIP']}:9090/metrics"
    typer.echo(_metrics_excerpt(metrics_url, "the active pod's "))
    _next_steps(cluster, metrics_url, prometheus_url)


def _metrics_excerpt(metrics_url: str, whose: str = "") -> str:
    """The operator's run counters and last-run gauges for the demo namespace."""
    import urllib.request

    try:
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    except OSError as err:
        return f"\n  metrics endpoint not reachable: {err}"
    wanted = ("thresher_schedule_runs_total{", "thresher_schedule_last_run_items{",
              "thresher_schedule_last_run_quality_ratio{")
    lines = [line for line in text.splitlines()
             if line.startswith(wanted) and f'namespace="{NAMESPACE}"' in line and not line.endswith(" 0.0")]
    return f"\n  {whose}{metrics_url} (non-zero run series):\n    " + "\n    ".join(lines)


def _demo_on_kwok(cluster) -> None:
    _say("1/6 local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes)")
    cluster.up(log=_say)
    metrics_url, prometheus_url = _install_and_start(cluster, "2/6")
    _say(f"3/6 namespace {NAMESPACE}, the TMDB key Secret, PersistentVolumeClaims, a PriorityClass")
    # The claims the examples mount: thresher-data (TMDB), drone-images and field-images (drone).
    cluster.kubectl("apply", "-f", "-", input=demo_objects(OFFLINE_KEY) + claim_with_volume("thresher-data")
                    + claim_with_volume("drone-images") + claim_with_volume("field-images"))
    # drone-gpu.yaml asks for GPU nodes in zone-a.
    cluster.kubectl("label", "--overwrite", "node", GPU_NODE, "topology.kubernetes.io/zone=zone-a")
    _say("4/6 the examples")
    _apply_examples(cluster, load_examples())

    _say("5/6 run now: one manual run of each schedule")
    _say(SIMULATED_BANNER)
    _run_each_now(cluster, timeout=90)
    _show_schedules(cluster)

    _say("6/6 the TMDB job itself, run for real as a local process against the offline fake TMDB server")
    _real_tmdb_run(cluster.state_dir / "tmdb-offline-demo")
    _next_steps(cluster, metrics_url, prometheus_url)


def _next_steps(cluster, metrics_url: str, prometheus_url: str | None) -> None:
    alerts = (f"  {prometheus_url}/alerts                 # Thresher's alert rules, evaluated\n"
              f"  curl -s {prometheus_url}/api/v1/alerts\n" if prometheus_url else "")
    typer.echo(
        "\nNext steps:\n"
        f"  {cluster.env_line()}\n"
        f"  kubectl get collectionschedules -n {NAMESPACE}      # short name: csched\n"
        f"  thresher status -n {NAMESPACE}\n"
        f"  thresher run tmdb-daily -n {NAMESPACE}              # another manual run\n"
        f"  curl -s {metrics_url} | grep ^thresher_  # the (active) operator's metrics\n"
        f"{alerts}"
        "  make demo-down                                       # stop everything, remove state\n")


def _real_tmdb_run(data: Path) -> None:
    """Run `thresher job tmdb collect` against the fake server; print its run result."""
    from thresher.demo.fakes.tmdb_server import running_fake_server

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
