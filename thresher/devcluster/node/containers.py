"""The node's containerd, through its ``ctr`` client (namespace ``k8s.io``, the CRI's): is it
serving, which images it holds, importing the locally built OCI archives, and removing every
container and sandbox when the node goes down."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from thresher.devcluster.node.shell import sh
from thresher.devcluster.process import Log


class Containerd:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return sh(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                  check=check, timeout=timeout)

    def ready(self) -> bool:
        if not self.socket.exists():
            return False
        return self.ctr("plugins", "ls", check=False, timeout=10).returncode == 0

    def images(self) -> set[str]:
        out = self.ctr("images", "ls", "-q", check=False).stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def import_image(self, archive: Path, log: Log = print) -> None:
        start = time.monotonic()
        # --all-platforms: our archives are single-platform; the flag skips a platform match
        # that buildah's (unset variant) manifests would otherwise fail.
        self.ctr("images", "import", "--all-platforms", "--no-unpack", str(archive))
        log(f"imported {archive.name} into containerd (k8s.io) in {time.monotonic() - start:.1f}s")

    def sandbox_netns(self) -> list[str]:
        """Network namespaces containerd's CRI pinned for this node's pod sandboxes."""
        paths = []
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            info = self.ctr("containers", "info", cid, check=False)
            try:
                spec = json.loads(info.stdout).get("Spec") or {}
            except ValueError:
                continue
            for ns in (spec.get("linux") or {}).get("namespaces") or []:
                if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
                    paths.append(ns["path"])
        return sorted(set(paths))

    def remove_all(self, log: Log) -> list[str]:
        """Kill and delete every task and container (pods included); return their netns."""
        netns = self.sandbox_netns()
        ids = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        for cid in ids:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False, timeout=30)
        for cid in ids:
            for _ in range(50):
                if self.ctr("tasks", "delete", "--force", cid, check=False, timeout=30).returncode != 0:
                    out = self.ctr("tasks", "ls", check=False).stdout
                    if cid not in out:
                        break
                    time.sleep(0.1)
                else:
                    break
            self.ctr("containers", "delete", cid, check=False, timeout=30)
        if ids:
            log(f"removed {len(ids)} containers (pods and sandboxes)")
        return netns
