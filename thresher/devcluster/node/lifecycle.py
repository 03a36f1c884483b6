"""The real node's two verbs: ``up`` (preflight, certificates and configs, containerd, the
images, the kubelet, Ready, kube-proxy, local storage) and ``down`` (the exact undo), plus ``leftovers``,
what of it still exists on the host. Processes go through the dev cluster's ``Supervisor``;
host changes through ``host``; containerd through ``containers``; files through ``config``."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from thresher.devcluster import binaries, images
from thresher.devcluster.registry import Registry, RegistryError
from thresher.devcluster.node import config, host
from thresher.devcluster.node.containers import Containerd
from thresher.devcluster.node.layout import NODE_COMPONENTS, NODE_NAME, NodeLayout
from thresher.devcluster.node.preflight import preflight
from thresher.devcluster.node.shell import NodeError, sh
from thresher.devcluster.process import Log, Supervisor, cmdline


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class Node:
    """The real node of the dev cluster rooted at ``state_dir``."""

    def __init__(self, state_dir: Path, server_url: str | None = None) -> None:
        self.layout = NodeLayout.of(state_dir)
        self.state_dir = self.layout.state_dir
        self.dir = self.layout.dir
        self.server_url = server_url
        self.procs = Supervisor(self.state_dir, NodeError)
        self.containerd = Containerd(self.layout.socket)
        self.registry = Registry(self.state_dir)

    @property
    def host_ip(self) -> str:
        """The bridge's address: how pods reach the host (the demo's fake TMDB server)."""
        return self.layout.host_ip

    # --- state ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return (self.dir / "enabled").exists()

    def running(self, name: str) -> bool:
        return self.procs.running(name)

    def containerd_running(self) -> bool:
        return self.running("containerd") and self.layout.socket.exists()

    def pids(self) -> dict[str, int | None]:
        return {name: self.procs.pid(name) for name in NODE_COMPONENTS}

    def preflight(self) -> dict[str, str]:
        return preflight()

    def import_image(self, archive: Path, log: Log = print) -> None:
        self.containerd.import_image(archive, log)

    def storage_manifest(self) -> str:
        return config.storage_manifest(self.layout)

    # --- the verbs -----------------------------------------------------------------------

    def up(self, kubectl: Callable[..., subprocess.CompletedProcess], log: Log = print,
           timeout: float = 120) -> float:
        """Start containerd and the kubelet (whichever is not running), import the images,
        wait for the node to be Ready and apply the local storage. Returns seconds taken."""
        start = time.monotonic()
        tools = preflight()
        bins = binaries.ensure(["kubelet", "kube-proxy"], log)
        kubelet = bins["kubelet"]
        try:
            pause = images.pause_archive(log)
        except images.ImageError as err:
            raise NodeError(f"sandbox image: {err}") from err
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled").write_text("1\n")
        config.ensure_certs(self.layout)
        paths = config.write_configs(self.layout, tools, self.server_url)
        try:  # before containerd: its hosts.toml names the registry's port
            self.registry.up(log)
        except RegistryError as err:
            raise NodeError(f"registry: {err}") from err
        self.registry.write_containerd_hosts(self.layout.registry_hosts)
        if not self.running("containerd"):
            self.layout.socket.unlink(missing_ok=True)
            self.procs.start("containerd", [tools["containerd"], "--config", str(paths["containerd"])], log)
        self.procs.wait("containerd", self.containerd.ready, 60, "serving its socket", interval=0.25)
        # Only the sandbox image is imported: containerd pulls it with no pod's credentials (as
        # kubeadm nodes preload it). Thresher's images are pulled from the registry by digest.
        if not self._archive_imported(pause, self.containerd.images()):
            self.containerd.import_image(pause, log)
            (self.dir / f"imported-{pause.name}").touch()
        if not self.running("kubelet"):
            host.make_cgroups(self.layout)
            host.save_tunables(self.layout)
            host.save_iptables(self.layout)
            self.procs.start("kubelet", config.kubelet_args(self.layout, paths, kubelet), log)
        healthz = f"http://127.0.0.1:{config.ports(self.layout)['healthz']}/healthz"
        self.procs.wait("kubelet", lambda: _http_ok(healthz) and self._node_ready(kubectl), timeout,
                        f"healthy and node {NODE_NAME} Ready", interval=0.25)
        self._start_kube_proxy(bins["kube-proxy"], paths, log, timeout)
        kubectl("apply", "-f", "-", input=config.storage_manifest(self.layout))
        took = time.monotonic() - start
        log(f"node {NODE_NAME} Ready in {took:.1f}s (pods reach the host at {self.host_ip})")
        return took

    def _start_kube_proxy(self, kube_proxy: Path, paths: dict[str, Path], log: Log, timeout: float) -> None:
        """kube-proxy (iptables mode): Services' ClusterIPs work on this node and from the host.
        One per host: its chains (KUBE-SERVICES ...) are host-wide, and two would rewrite each
        other's rules."""
        if not self.running("kube-proxy"):
            other = host.others("kube-proxy", self.state_dir)
            if other:
                raise NodeError(f"preflight 'kube-proxy': another cluster's kube-proxy (pid {other[0]}) owns this "
                                "host's KUBE-* iptables chains; stop that cluster first (thresher dev down)")
            host.save_kube_proxy_chains(self.layout)
            self.procs.start("kube-proxy", config.kube_proxy_args(paths, kube_proxy), log)
        healthz = f"http://127.0.0.1:{config.ports(self.layout)['proxy_healthz']}/healthz"
        self.procs.wait("kube-proxy", lambda: _http_ok(healthz), timeout, "healthy (rules synced)", interval=0.25)

    def _archive_imported(self, archive: Path, have: set[str]) -> bool:
        return (self.dir / f"imported-{archive.name}").exists() and bool(have)

    def _node_ready(self, kubectl) -> bool:
        proc = kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def leftovers(self) -> dict[str, list[str]]:
        """What of this node still exists on the host (all empty after ``down``)."""
        procs = [f"{pid} {cmdline(pid)[:120]!r}" for pid in host.stray_processes(self.layout)]
        return {"processes": procs, "mounts": host.own_mounts(self.layout),
                "interfaces": host.bridge_interfaces(self.layout),
                "cgroups": [str(p) for p in host.own_cgroups(self.layout)],
                "netns": host.netns_in_subnet(self.layout),
                "iptables": host.kube_proxy_leftovers(self.layout)}

    def down(self, log: Log = print) -> None:
        """Stop kube-proxy and remove its chains, stop the kubelet, remove every container and
        sandbox, stop containerd, then undo mounts, network namespaces, the bridge, cgroups and
        kernel tunables."""
        if not self.dir.exists():
            return
        self.procs.stop("kube-proxy", log)
        host.cleanup_kube_proxy(self.layout, binaries.locate(binaries.COMPONENTS["kube-proxy"], log=lambda _m: None))
        self.procs.stop("kubelet", log)
        netns: list[str] = []
        if self.containerd_running():
            netns = self.containerd.remove_all(log)
        self.procs.stop("containerd", log)
        self.registry.down(log)
        host.kill_strays(self.layout)  # shims outlive containerd by design
        for point in host.own_mounts(self.layout):
            sh(["umount", "-l", point], check=False)
        host.remove_netns(netns + host.netns_in_subnet(self.layout))
        if host.delete_bridge(self.layout):
            log(f"deleted bridge {self.layout.bridge}")
        host.remove_cgroups(self.layout)
        host.remove_kubelet_iptables(self.layout)
        if not host.other_kubelets(self.state_dir):
            host.restore_tunables(self.layout)
        # containerd 1.6 keeps shim sockets in the host-wide /run/containerd/s: tidy if empty.
        for path in ("/run/containerd/s", "/run/containerd"):
            try:
                os.rmdir(path)
            except OSError:
                pass
