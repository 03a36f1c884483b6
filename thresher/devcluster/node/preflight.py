"""What the host must offer a real node (``preflight`` names the first thing missing), and the
facts about the host the rest of the node reads: its address, its cgroups, its capabilities."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from thresher.devcluster.node.shell import NodeError, sh

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CGROUP_V1_REQUIRED = ("cpu", "cpuacct", "cpuset", "memory", "pids")
CAP_SYS_RESOURCE = 24


def cgroup_version() -> int:
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


def cgroup_v1_hierarchies() -> dict[str, Path]:
    """Mounted cgroup v1 hierarchies by controller name (``cpu,cpuacct`` counts for both)."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3 and fields[0] == "cgroup":
            mountpoint = Path(left.split()[4])
            for opt in fields[2].split(","):
                if opt in ("rw", "ro") or opt.startswith(("relatime", "nosuid", "nodev", "noexec")):
                    continue
                found.setdefault(opt, mountpoint)
    return found


def cgroup_roots() -> list[Path]:
    """Where the node's cgroup parent is made: the v2 root, or every v1 hierarchy."""
    if cgroup_version() == 2:
        return [Path("/sys/fs/cgroup")]
    return sorted(set(cgroup_v1_hierarchies().values()))


def host_ip() -> str:
    """The host's primary IPv4 address: the node's InternalIP (the kubelet rejects loopback)."""
    out = sh(["ip", "-4", "-o", "route", "get", "1.1.1.1"], check=False).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    for line in sh(["ip", "-4", "-o", "addr", "show", "scope", "global"], check=False).stdout.splitlines():
        return line.split()[3].split("/")[0]
    raise NodeError("preflight 'node ip': no global IPv4 address on the host")


def has_capability(bit: int) -> bool:
    """Whether this process's bounding set holds a capability (root may lack some in a VM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def preflight() -> dict[str, str]:
    """Every requirement of a real node; raise NodeError naming the first that fails."""
    found: dict[str, str] = {}
    if os.geteuid() != 0:
        raise NodeError("preflight 'root': the kubelet, containerd and CNI need root "
                        "(network namespaces, mounts, cgroups); run as root or leave out --node")
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
        if not path:
            pkg = "runc" if tool == "runc" else "containerd"
            raise NodeError(f"preflight 'tools': `{tool}` not found (apt-get install {pkg})")
        found[tool] = path
    cni_dir = next((d for d in CNI_BIN_DIRS if all(Path(d, p).exists() for p in CNI_PLUGINS)), None)
    if cni_dir is None:
        raise NodeError(f"preflight 'cni': plugins {', '.join(CNI_PLUGINS)} not in {' or '.join(CNI_BIN_DIRS)}"
                        " (apt-get install containernetworking-plugins)")
    found["cni"] = cni_dir
    if cgroup_version() == 1:
        mounted = cgroup_v1_hierarchies()
        missing = [c for c in CGROUP_V1_REQUIRED if c not in mounted]
        if missing:
            raise NodeError(f"preflight 'cgroups': cgroup v1 controllers not mounted: {', '.join(missing)}")
        found["cgroups"] = "v1 (" + ", ".join(sorted(mounted)) + ")"
    else:
        found["cgroups"] = "v2"
    swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    if swaps:
        raise NodeError("preflight 'swap': swap is on; the kubelet refuses to start (swapoff -a)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise NodeError("preflight 'overlayfs': the kernel has no overlay filesystem (modprobe overlay)")
    if not Path("/proc/sys/kernel/seccomp/actions_avail").exists():
        raise NodeError("preflight 'seccomp': the kernel has no seccomp filter support; "
                        "RuntimeDefault profiles (Pod Security restricted) cannot be enforced")
    return found
