"""Where everything of one real node lives, all derived from the cluster's state directory:
``down`` removes exactly these and nothing else (two clusters on one host never collide)."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "thresher-local"
NODE_COMPONENTS = ("registry", "containerd", "kubelet", "kube-proxy")


@dataclass(frozen=True)
class NodeLayout:
    state_dir: Path
    dir: Path  # the node's own folder: configs, containerd root/state, kubelet root, pod logs, PVs
    pki_dir: Path  # the cluster's CA (the node's certificates are under dir/pki)
    id: str
    bridge: str  # the CNI bridge, thr<id>: 11 characters, under IFNAMSIZ
    subnet: ipaddress.IPv4Network  # the pods' addresses
    host_ip: str  # the bridge's address: how pods reach the host
    cgroup_parent: str
    socket: Path  # containerd's

    @property
    def registry_hosts(self) -> Path:
        """containerd's registry ``config_path``: one ``<host:port>/hosts.toml`` per registry."""
        return self.dir / "certs.d"

    @classmethod
    def of(cls, state_dir: Path) -> "NodeLayout":
        state_dir = Path(state_dir)
        ident = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
        subnet = ipaddress.ip_network(f"10.88.{20 + int(ident[8:12], 16) % 200}.0/24")
        node_dir = state_dir / "node"
        return cls(state_dir=state_dir, dir=node_dir, pki_dir=state_dir / "pki", id=ident[:8],
                   bridge=f"thr{ident[:8]}", subnet=subnet, host_ip=str(subnet.network_address + 1),
                   cgroup_parent=f"/thresher-{ident[:8]}", socket=node_dir / "run" / "containerd.sock")
