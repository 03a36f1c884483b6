"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
as plain processes, with their state (PKI, data, logs, kubeconfigs) in one directory.

``up`` is idempotent: components already running are kept, dead ones are restarted, and it
returns only when the apiserver is ready, the default ServiceAccount exists and every node is
Ready. ``down`` stops exactly the processes it recorded (pid plus command line, so a recycled
pid is never killed) and removes the state.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from thresher.devcluster import binaries, pki
from thresher.devcluster.pids import owned, read_pid, write_pid

Log = Callable[[str], None]

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_COMPONENTS = ("containerd", "kubelet")  # the opt-in real node, see node.py
PORT_NAMES = ("etcd_client", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok")
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"


class ClusterError(RuntimeError):
    """The control plane could not be brought to the asked state; the message says which part."""


def default_state_dir() -> Path:
    env = os.environ.get("THRESHER_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "thresher" / "dev"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: int | None
    running: bool
    rss_bytes: int


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class DevCluster:
    """One local control plane rooted at ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, node: bool | None = None) -> None:
        self.state_dir = Path(state_dir or default_state_dir())
        # The opt-in real node (kubelet + containerd): asked for, or already part of this cluster.
        self.want_node = node if node is not None else os.environ.get("THRESHER_DEV_NODE") == "1"
        self.pki_dir = self.state_dir / "pki"
        self.log_dir = self.state_dir / "logs"
        self.pid_dir = self.state_dir / "pids"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._bins: dict[str, Path] | None = None

    # --- binaries and ports ---------------------------------------------------------

    def binaries(self, log: Log = print) -> dict[str, Path]:
        if self._bins is None:
            self._bins = binaries.ensure(binaries.CONTROL_PLANE, log)
        return self._bins

    @property
    def kubectl_path(self) -> Path:
        return self.binaries()["kubectl"]

    def ports(self) -> dict[str, int]:
        """Ports of this cluster: the recorded ones while anything runs, else fresh free ones."""
        path = self.state_dir / "ports.json"
        if path.exists():
            recorded = json.loads(path.read_text())
            if set(recorded) == set(PORT_NAMES):
                if any(s.running for s in self.components().values()):
                    return recorded
                if all(port_is_free(p) for p in recorded.values()):
                    return recorded
        chosen: dict[str, int] = {}
        while len(chosen) < len(PORT_NAMES):
            port = free_port()
            if port not in chosen.values():
                chosen[PORT_NAMES[len(chosen)]] = port
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(chosen, indent=2))
        return chosen

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports()['apiserver']}"

    # --- process bookkeeping --------------------------------------------------------

    def _recorded_pid(self, name: str) -> int | None:
        return read_pid(self.pid_dir, name)

    def _owns(self, pid: int) -> bool:
        """True when ``pid`` is alive and is one of this cluster's processes."""
        return owned(pid, str(self.state_dir))

    def node(self):
        from thresher.devcluster.node import Node

        return Node(self.state_dir, self.server_url)

    def node_enabled(self) -> bool:
        return self.want_node or (self.state_dir / "node" / "enabled").exists()

    def components(self) -> dict[str, ComponentState]:
        states = {}
        names = COMPONENTS + (NODE_COMPONENTS if self.node_enabled() else ())
        for name in names:
            pid = self._recorded_pid(name)
            running = pid is not None and self._owns(pid)
            states[name] = ComponentState(name, pid, running, _rss_bytes(pid) if running else 0)
        return states

    def _start(self, name: str, args: list[str], log: Log) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `thresher dev up`; stopped by `down`
                cwd=self.state_dir,
            )
        write_pid(self.pid_dir, name, proc.pid)
        log(f"started {name} (pid {proc.pid})")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _fail(self, name: str, what: str) -> ClusterError:
        return ClusterError(
            f"{name}: {what}\n--- last lines of {self.log_dir / (name + '.log')} ---\n{self.log_tail(name)}"
        )

    # --- component command lines ---------------------------------------------------

    def _component_kubeconfig(self, stem: str) -> Path:
        path = self.state_dir / "kubeconfigs" / f"{stem}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = kubeconfig_dict(
            self.server_url,
            ca=str(self.pki_dir / "ca.crt"),
            cert=str(self.pki_dir / f"{stem}.crt"),
            key=str(self.pki_dir / f"{stem}.key"),
            user=stem,
        )
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def _args(self, name: str) -> list[str]:
        b, p, k = self.binaries(), self.ports(), self.pki_dir
        if name == "etcd":
            peer = f"http://127.0.0.1:{p['etcd_peer']}"
            client = f"http://127.0.0.1:{p['etcd_client']}"
            return [
                str(b["etcd"]), "--name=thresher", f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=thresher={peer}", "--auto-compaction-retention=1",
                # A throwaway dev cluster: fsync buys nothing but latency.
                "--unsafe-no-fsync=true", "--quota-backend-bytes=4294967296", "--log-level=warn",
            ]
        if name == "kube-apiserver":
            return [
                str(b["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{p['etcd_client']}",
                f"--secure-port={p['apiserver']}", "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={k / 'apiserver.crt'}", f"--tls-private-key-file={k / 'apiserver.key'}",
                f"--client-ca-file={k / 'ca.crt'}",
                f"--service-account-key-file={k / 'sa.pub'}",
                f"--service-account-signing-key-file={k / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true",
                # No kubelets answer on node addresses; the "kubernetes" Service needs no endpoints here.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                # For logs/exec on the real node (--node): the kubelet trusts the dev CA.
                f"--kubelet-client-certificate={k / 'admin.crt'}", f"--kubelet-client-key={k / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ]
        if name == "kube-controller-manager":
            kubeconfig = self._component_kubeconfig("kube-controller-manager")
            return [
                str(b["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                f"--root-ca-file={k / 'ca.crt'}", f"--service-account-private-key-file={k / 'sa.key'}",
                "--use-service-account-credentials=true",
                "--bind-address=127.0.0.1", f"--secure-port={p['controller_manager']}",
                "--leader-elect=false", f"--cert-dir={self.state_dir / 'kcm-certs'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Scale tests create thousands of Jobs; the default 20 QPS would be the bottleneck.
                "--kube-api-qps=100", "--kube-api-burst=200",
                "--concurrent-cron-job-syncs=10", "--concurrent-job-syncs=10",
                "--concurrent-gc-syncs=20",
            ]
        if name == "kube-scheduler":
            kubeconfig = self._component_kubeconfig("kube-scheduler")
            return [
                str(b["kube-scheduler"]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={p['scheduler']}", "--leader-elect=false",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
                "--kube-api-qps=100", "--kube-api-burst=200",
            ]
        if name == "kwok":
            stages = self.state_dir / "kwok-stages.yaml"
            stages.write_text(resources.files("thresher.devcluster").joinpath("kwok/stages.yaml").read_text())
            return [
                str(b["kwok"]), f"--kubeconfig={self._component_kubeconfig('kwok')}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{p['kwok']}",
                f"--cidr={POD_CIDR}", "--node-ip=10.0.0.10",
                "--node-lease-duration-seconds=40",
            ]
        raise ValueError(name)

    # --- readiness ------------------------------------------------------------------

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._recorded_pid(name)
            if pid is not None and not self._owns(pid):
                raise self._fail(name, f"exited while waiting for {what}")
            if ready():
                return
            time.sleep(0.2)
        raise self._fail(name, f"not {what} after {timeout:.0f}s")

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports()['etcd_client']}/health",
                                        timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def api_get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        """GET against the apiserver as the admin; (status, body), status 0 when unreachable."""
        try:
            with urllib.request.urlopen(self.server_url + path, context=self._ssl_context(),
                                        timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def _apiserver_ready(self) -> bool:
        return self.api_get("/readyz")[0] == 200

    def _default_service_account(self) -> bool:
        return self.api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200

    def node_readiness(self) -> dict[str, bool]:
        status, body = self.api_get("/api/v1/nodes")
        if status != 200:
            return {}
        ready = {}
        for node in json.loads(body)["items"]:
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            ready[node["metadata"]["name"]] = conditions.get("Ready") == "True"
        return ready

    def _nodes_ready(self) -> bool:
        ready = self.node_readiness()
        return set(ready) >= set(NODE_NAMES) and all(ready[n] for n in NODE_NAMES)

    # --- kubectl -------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # --- the verbs -----------------------------------------------------------------

    def up(self, log: Log = print, timeout: float = 120) -> None:
        """Start whatever is not running and wait until the cluster is usable."""
        start = time.monotonic()
        self.binaries(log)
        pki.ensure_pki(self.pki_dir)
        self._write_admin_kubeconfig()
        states = self.components()
        for name in COMPONENTS:
            if states[name].running:
                continue
            self._start(name, self._args(name), log)
            if name == "etcd":
                self._wait("etcd", self._etcd_healthy, 30, "healthy")
            elif name == "kube-apiserver":
                self._wait("kube-apiserver", self._apiserver_ready, 60, "ready (/readyz)")
        self._wait("kube-apiserver", self._apiserver_ready, 60, "ready (/readyz)")
        self.kubectl("apply", "-f", "-", input=nodes_manifest())
        self._wait("kube-controller-manager", self._default_service_account, timeout,
                   "creating the default ServiceAccount")
        self._wait("kwok", self._nodes_ready, timeout, "reporting every node Ready")
        if self.node_enabled():
            from thresher.devcluster.node import NodeError

            try:
                self.node().up(self.kubectl, log, timeout=timeout)
            except NodeError as err:
                raise ClusterError(f"real node: {err}") from err
        log(f"cluster ready in {time.monotonic() - start:.1f}s; {self.env_line()}")

    def down(self, log: Log = print, timeout: float = 20) -> None:
        """Stop this cluster's processes (TERM, then KILL) and remove its state."""
        if (self.state_dir / "node").exists():
            # Containers, mounts, netns, bridge and cgroups first, while the paths are known.
            from thresher.devcluster.node import Node

            Node(self.state_dir).down(log)
        for name in reversed(COMPONENTS):
            pid = self._recorded_pid(name)
            if pid is None or not self._owns(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._owns(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._owns(pid):
                os.kill(pid, signal.SIGKILL)
            try:  # reap it when this process started it (tests), so no zombie stays behind
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            log(f"stopped {name} (pid {pid})")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            log(f"removed {self.state_dir}")

    def env_line(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig} PATH={self.kubectl_path.parent}:$PATH"

    def _write_admin_kubeconfig(self) -> None:
        read = lambda name: base64.b64encode((self.pki_dir / name).read_bytes()).decode()  # noqa: E731
        cfg = kubeconfig_dict(self.server_url, ca_data=read("ca.crt"), cert_data=read("admin.crt"),
                              key_data=read("admin.key"), user="thresher-admin")
        self.kubeconfig.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.kubeconfig.chmod(0o600)


def kubeconfig_dict(server: str, *, user: str, ca: str | None = None, cert: str | None = None,
                    key: str | None = None, ca_data: str | None = None, cert_data: str | None = None,
                    key_data: str | None = None) -> dict:
    cluster = {"server": server}
    cluster.update({"certificate-authority": ca} if ca else {"certificate-authority-data": ca_data})
    creds = ({"client-certificate": cert, "client-key": key} if cert else
             {"client-certificate-data": cert_data, "client-key-data": key_data})
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "thresher-dev",
        "clusters": [{"name": "thresher-dev", "cluster": cluster}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "thresher-dev", "context": {"cluster": "thresher-dev", "user": user}}],
    }


# --- nodes ------------------------------------------------------------------------

GPU_NODE = "kwok-gpu-1"
CPU_NODES = ("kwok-cpu-1", "kwok-cpu-2")
NODE_NAMES = (*CPU_NODES, GPU_NODE)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_LABEL = "nvidia.com/gpu.present"


def node_manifest(name: str, gpus: int = 0) -> dict:
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "type": "kwok", "thresher.dev/node-pool": "gpu" if gpus else "cpu",
    }
    spec: dict = {}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
        labels[GPU_LABEL] = "true"
        spec["taints"] = [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def nodes_manifest() -> str:
    docs = [node_manifest(n) for n in CPU_NODES] + [node_manifest(GPU_NODE, gpus=8)]
    return yaml.safe_dump_all(docs, sort_keys=False)
