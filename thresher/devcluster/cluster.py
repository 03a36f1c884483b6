"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
as plain processes, with their state (PKI, data, logs, kubeconfigs) in one directory.

``up`` is idempotent: components already running are kept, dead ones are restarted, and it
returns only when the apiserver is ready, the default ServiceAccount exists and every node is
Ready. ``down`` stops exactly the processes it recorded (``process.Supervisor``: a recorded pid
counts only while it is still ours, so a recycled pid is never killed) and removes the state.
The kwok nodes' shapes are in ``kwok/nodes.py``, the opt-in real node in ``node/``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from thresher.devcluster import binaries, pki
from thresher.devcluster.kubeconfig import kubeconfig_dict
from thresher.devcluster.kwok.nodes import (  # noqa: F401  (GPU_* re-exported: tests and the demo use them)
    CPU_NODES, GPU_LABEL, GPU_NODE, GPU_RESOURCE, NODE_NAMES, nodes_manifest)
from thresher.devcluster.node import NODE_COMPONENTS, Node, NodeError
from thresher.devcluster.node.preflight import host_ip
from thresher.devcluster.process import Log, Supervisor, free_port, port_is_free, rss_bytes

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
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


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: int | None
    running: bool
    rss_bytes: int


class DevCluster:
    """One local control plane rooted at ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, node: bool | None = None) -> None:
        self.state_dir = Path(state_dir or default_state_dir())
        # The opt-in real node (kubelet + containerd): asked for, or already part of this cluster.
        self.want_node = node if node is not None else os.environ.get("THRESHER_DEV_NODE") == "1"
        self.pki_dir = self.state_dir / "pki"
        self.procs = Supervisor(self.state_dir, ClusterError)
        self.log_dir, self.pid_dir = self.procs.log_dir, self.procs.pid_dir
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

    # --- processes and the real node ------------------------------------------------

    def node(self) -> Node:
        return Node(self.state_dir, self.server_url)

    def node_enabled(self) -> bool:
        return self.want_node or (self.state_dir / "node" / "enabled").exists()

    def components(self) -> dict[str, ComponentState]:
        states = {}
        names = COMPONENTS + (NODE_COMPONENTS if self.node_enabled() else ())
        for name in names:
            pid = self.procs.pid(name)
            running = pid is not None and self.procs.owns(pid)
            states[name] = ComponentState(name, pid, running, rss_bytes(pid) if running else 0)
        return states

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

    def _apiserver_addresses(self) -> tuple[str, str, str]:
        """(bind address, advertise address, endpoint reconciler) of the API server.

        Simulated nodes only: loopback, and the ``kubernetes`` Service has no endpoints (no pod
        runs to use it). With the real node, pods reach the API server the way they do in any
        cluster, through that Service: kube-proxy sends 10.0.0.1:443 to the endpoint the API
        server publishes (its lease reconciler), the host's address, so it listens on every
        address (clients still need the dev CA's certificates or a token)."""
        if self.node_enabled():
            return "0.0.0.0", host_ip(), "lease"
        return "127.0.0.1", "127.0.0.1", "none"

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
            bind, advertise, reconciler = self._apiserver_addresses()
            return [
                str(b["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{p['etcd_client']}",
                f"--secure-port={p['apiserver']}", f"--bind-address={bind}",
                f"--advertise-address={advertise}", f"--endpoint-reconciler-type={reconciler}",
                f"--tls-cert-file={k / 'apiserver.crt'}", f"--tls-private-key-file={k / 'apiserver.key'}",
                f"--client-ca-file={k / 'ca.crt'}",
                f"--service-account-key-file={k / 'sa.pub'}",
                f"--service-account-signing-key-file={k / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true",
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
            stages.write_text(resources.files("thresher.devcluster.kwok").joinpath("stages.yaml").read_text())
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
            self.procs.start(name, self._args(name), log)
            if name == "etcd":
                self.procs.wait("etcd", self._etcd_healthy, 30, "healthy")
            elif name == "kube-apiserver":
                self.procs.wait("kube-apiserver", self._apiserver_ready, 60, "ready (/readyz)")
        self.procs.wait("kube-apiserver", self._apiserver_ready, 60, "ready (/readyz)")
        self.kubectl("apply", "-f", "-", input=nodes_manifest(real_node=self.node_enabled()))
        self.procs.wait("kube-controller-manager", self._default_service_account, timeout,
                   "creating the default ServiceAccount")
        self.procs.wait("kwok", self._nodes_ready, timeout, "reporting every node Ready")
        if self.node_enabled():
            try:
                self.node().up(self.kubectl, log, timeout=timeout)
            except NodeError as err:
                raise ClusterError(f"real node: {err}") from err
        log(f"cluster ready in {time.monotonic() - start:.1f}s; {self.env_line()}")

    def down(self, log: Log = print, timeout: float = 20) -> None:
        """Stop this cluster's processes (TERM, then KILL) and remove its state."""
        if (self.state_dir / "node").exists():
            # Containers, mounts, netns, bridge and cgroups first, while the paths are known.
            Node(self.state_dir).down(log)
        for name in reversed(COMPONENTS):
            self.procs.stop(name, log, timeout)
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

