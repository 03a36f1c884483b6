"""What the real node changes on the host outside its folder, and how ``down`` undoes it:
cgroups (a parent ``/thresher-<id>``), kernel tunables the kubelet sets, the kubelet's iptables
chains, the pods' network namespaces and the CNI bridge, mounts, and stray processes (shims).
Each change is recorded before it is made (``*-before.json`` in the node's folder) so the undo
puts back exactly what the host had, and leaves alone what another kubelet may own."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
from pathlib import Path

from thresher.devcluster.node.layout import NodeLayout
from thresher.devcluster.node.preflight import cgroup_roots
from thresher.devcluster.node.shell import sh
from thresher.devcluster.process import owned

# Chains the kubelet creates itself (canaries, and KUBE-FIREWALL, which drops non-local traffic
# to 127.0.0.0/8); `down` removes the ones that were not there before the node started.
KUBELET_CHAINS = {"filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"), "nat": ("KUBE-KUBELET-CANARY",),
                  "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")}
# The kubelet sets these when ProtectKernelDefaults is off (it cannot be told not to);
# `down` puts back what the host had.
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


# --- cgroups ------------------------------------------------------------------------------

def make_cgroups(layout: NodeLayout) -> None:
    for root in cgroup_roots():
        (root / layout.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)


def own_cgroups(layout: NodeLayout) -> list[Path]:
    return [root / layout.cgroup_parent.lstrip("/") for root in cgroup_roots()
            if (root / layout.cgroup_parent.lstrip("/")).is_dir()]


def remove_cgroups(layout: NodeLayout) -> None:
    for top in own_cgroups(layout):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: t[0].count("/"), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


# --- kernel tunables ------------------------------------------------------------------------

def save_tunables(layout: NodeLayout) -> None:
    saved = layout.dir / "kernel-tunables.json"
    if saved.exists():
        return
    values = {}
    for key in KERNEL_TUNABLES:
        try:
            values[key] = Path("/proc/sys", key).read_text().strip()
        except OSError:
            pass
    saved.write_text(json.dumps(values, indent=2))


def restore_tunables(layout: NodeLayout) -> None:
    saved = layout.dir / "kernel-tunables.json"
    if not saved.exists():
        return
    for key, value in json.loads(saved.read_text()).items():
        try:
            Path("/proc/sys", key).write_text(value + "\n")
        except OSError:
            pass


# --- iptables -------------------------------------------------------------------------------

def kubelet_chains() -> dict[str, list[str]]:
    """{"iptables filter": [chains...], ...} of the kubelet's chains that exist now."""
    found: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, chains in KUBELET_CHAINS.items():
            lines = sh([tool, "-w", "-t", table, "-S"], check=False).stdout.splitlines()
            found[f"{tool} {table}"] = [c for c in chains if f"-N {c}" in lines]
    return found


def save_iptables(layout: NodeLayout) -> None:
    saved = layout.dir / "iptables-before.json"
    if not saved.exists():
        saved.write_text(json.dumps(kubelet_chains()))


def remove_kubelet_iptables(layout: NodeLayout) -> None:
    saved = layout.dir / "iptables-before.json"
    if not saved.exists() or other_kubelets(layout.state_dir):
        return  # another kubelet on this host may own them
    before = json.loads(saved.read_text())
    for key, chains in kubelet_chains().items():
        tool, table = key.split()
        for chain in chains:
            if chain in before.get(key, []):
                continue
            if chain == "KUBE-FIREWALL":
                for hook in ("INPUT", "OUTPUT"):
                    while sh([tool, "-w", "-t", table, "-D", hook, "-j", chain], check=False).returncode == 0:
                        pass
            sh([tool, "-w", "-t", table, "-F", chain], check=False)
            sh([tool, "-w", "-t", table, "-X", chain], check=False)


# kube-proxy's chains (iptables mode): KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*, KUBE-POSTROUTING ...
# Every KUBE-* chain that is not the kubelet's; `kube-proxy --cleanup` removes them.
def kube_proxy_chains() -> list[str]:
    """``"iptables nat KUBE-SERVICES"``-style names of the kube-proxy chains that exist now."""
    found = []
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("nat", "filter", "mangle"):
            lines = sh([tool, "-w", "-t", table, "-S"], check=False).stdout.splitlines()
            kubelet = KUBELET_CHAINS.get(table, ())
            found += [f"{tool} {table} {line.split()[1]}" for line in lines
                      if line.startswith("-N KUBE-") and line.split()[1] not in kubelet]
    return found


def save_kube_proxy_chains(layout: NodeLayout) -> None:
    saved = layout.dir / "kube-proxy-chains-before.json"
    if not saved.exists():
        saved.write_text(json.dumps(kube_proxy_chains()))


def kube_proxy_leftovers(layout: NodeLayout) -> list[str]:
    """kube-proxy chains that exist now and did not before this node started one."""
    saved = layout.dir / "kube-proxy-chains-before.json"
    before = set(json.loads(saved.read_text())) if saved.exists() else set()
    return [c for c in kube_proxy_chains() if c not in before]


def cleanup_kube_proxy(layout: NodeLayout, kube_proxy: Path | None) -> None:
    """``kube-proxy --cleanup`` (its own undo of every chain and rule it wrote), unless another
    kube-proxy on this host owns them now."""
    if kube_proxy is None or not (layout.dir / "kube-proxy-chains-before.json").exists():
        return
    if others("kube-proxy", layout.state_dir):
        return
    sh([str(kube_proxy), "--cleanup", "--v=1"], check=False, timeout=60)


# --- processes ------------------------------------------------------------------------------

def other_kubelets(state_dir: Path) -> list[int]:
    """Pids of kubelets on this host that are not this node's."""
    return others("kubelet", state_dir)


def others(binary: str, state_dir: Path) -> list[int]:
    """Pids of processes running ``binary`` on this host that are not this node's."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == binary and \
                str(state_dir).encode() not in b" ".join(argv):
            pids.append(int(entry.name))
    return pids


def stray_processes(layout: NodeLayout) -> list[int]:
    """Processes (other than this one) whose command line names the state directory: after the
    supervisor stopped the kubelet and containerd, these are shims (they outlive containerd by
    design). One quick look at each process, no re-reads."""
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and int(e.name) != os.getpid()
            and owned(int(e.name), str(layout.state_dir), attempts=1)]


def kill_strays(layout: NodeLayout) -> None:
    for pid in stray_processes(layout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- mounts, network namespaces, the bridge ---------------------------------------------------

def own_mounts(layout: NodeLayout) -> list[str]:
    """Mount points under the node's folder, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(str(layout.dir) + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def netns_in_subnet(layout: NodeLayout) -> list[str]:
    """Pinned network namespaces with an address in this node's pod subnet (found even when
    containerd is gone)."""
    found = []
    for path in sorted(Path("/var/run/netns").glob("cni-*")):
        out = sh(["ip", "-n", path.name, "-o", "-4", "addr", "show"], check=False, timeout=10).stdout
        for token in out.split():
            if "/" in token:
                try:
                    if ipaddress.ip_interface(token).ip in layout.subnet:
                        found.append(str(path))
                        break
                except ValueError:
                    continue
    return found


def remove_netns(paths: list[str]) -> None:
    for path in sorted(set(paths)):
        if Path(path).exists():
            sh(["umount", path], check=False)
            Path(path).unlink(missing_ok=True)


def bridge_interfaces(layout: NodeLayout) -> list[str]:
    """The bridge and the pods' veths attached to it."""
    links = sh(["ip", "-o", "link", "show"], check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
            if f" {layout.bridge}" in line or f"master {layout.bridge}" in line]


def delete_bridge(layout: NodeLayout) -> bool:
    if sh(["ip", "link", "show", layout.bridge], check=False).returncode != 0:
        return False
    sh(["ip", "link", "delete", layout.bridge], check=False)
    return True
