"""A real node for the local control plane (opt-in: ``thresher dev up --node``).

The kubelet built from the pinned Kubernetes, Debian's containerd (CRI) and runc, and CNI
(bridge + host-local + portmap + loopback from containernetworking-plugins) run as plain
processes next to the control plane; the node registers as ``thresher-local`` with a client
certificate from the dev CA (``system:node:thresher-local`` in ``system:nodes``, authorised by
the apiserver's Node authorizer). The sandbox image is built locally from ``node/pause.go``,
Thresher's images from the Dockerfile on a debootstrap base (``images.py``); nothing is pulled.

Everything the node owns is named after the state directory, so ``down`` can remove exactly
that and nothing else: containerd's root/state and sockets, the kubelet's root and pod logs,
a cgroup parent ``/thresher-<id>`` in every cgroup v1 hierarchy, a bridge ``thr<id>``, the
pods' network namespaces, host-local IPAM data, and the local PersistentVolumes' folders.

Requirements (``preflight`` names the one that fails): root, Linux cgroups (v1 with cpu,
cpuacct, cpuset, memory, pids; or v2), no swap, overlayfs, and the Debian packages
containerd, runc, containernetworking-plugins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from thresher.devcluster import binaries, images, pki
from thresher.devcluster.pids import owned, read_pid, write_pid

Log = Callable[[str], None]

NODE_NAME = "thresher-local"
NODE_COMPONENTS = ("containerd", "kubelet")
STORAGE_CLASS = "thresher-local"
PV_COUNT = 6
PV_CAPACITY = "2Gi"
NODE_LABELS = {"thresher.dev/node-pool": "local", "thresher.dev/real-node": "true"}
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CGROUP_V1_REQUIRED = ("cpu", "cpuacct", "cpuset", "memory", "pids")
# The kubelet sets these when ProtectKernelDefaults is off (it cannot be told not to);
# `down` puts back what the host had.
# Chains the kubelet creates itself (canaries, and KUBE-FIREWALL, which drops non-local traffic
# to 127.0.0.0/8); `down` removes the ones that were not there before the node started.
KUBELET_CHAINS = {"filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"), "nat": ("KUBE-KUBELET-CANARY",),
                  "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")}
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


class NodeError(RuntimeError):
    """The real node could not be started or stopped; the message names the failing check."""


def _sh(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _template(name: str, **values: str) -> str:
    text = resources.files("thresher.devcluster").joinpath(f"node/{name}").read_text()
    return string.Template(text).substitute(values)


def _cgroup_v1_hierarchies() -> dict[str, Path]:
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


def host_ip() -> str:
    """The host's primary IPv4 address: the node's InternalIP (the kubelet rejects loopback)."""
    out = _sh(["ip", "-4", "-o", "route", "get", "1.1.1.1"], check=False).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    for line in _sh(["ip", "-4", "-o", "addr", "show", "scope", "global"], check=False).stdout.splitlines():
        return line.split()[3].split("/")[0]
    raise NodeError("preflight 'node ip': no global IPv4 address on the host")


CAP_SYS_RESOURCE = 24


def has_capability(bit: int) -> bool:
    """Whether this process's bounding set holds a capability (root may lack some in a VM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _other_kubelets(state_dir: Path) -> list[int]:
    """Pids of kubelets on this host that are not this node's."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == "kubelet" and \
                str(state_dir).encode() not in b" ".join(argv):
            pids.append(int(entry.name))
    return pids


def cgroup_version() -> int:
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


class Node:
    """The real node of the dev cluster rooted at ``state_dir``."""

    def __init__(self, state_dir: Path, server_url: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / "node"
        self.server_url = server_url
        self.pki_dir = self.state_dir / "pki"
        self.log_dir = self.state_dir / "logs"
        self.pid_dir = self.state_dir / "pids"
        ident = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()
        self.id = ident[:8]
        self.bridge = f"thr{self.id}"  # 11 characters, under IFNAMSIZ
        self.subnet = ipaddress.ip_network(f"10.88.{20 + int(ident[8:12], 16) % 200}.0/24")
        self.host_ip = str(self.subnet.network_address + 1)  # the bridge: how pods reach the host
        self.cgroup_parent = f"/thresher-{self.id}"
        self.socket = self.dir / "run" / "containerd.sock"
        self._procs: dict[str, subprocess.Popen] = {}

    # --- state ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return (self.dir / "enabled").exists()

    def _recorded_pid(self, name: str) -> int | None:
        return read_pid(self.pid_dir, name)

    def _owns(self, pid: int) -> bool:
        return owned(pid, str(self.state_dir))

    def _scan_owns(self, entry: Path) -> bool:
        """For a walk over /proc: one quick look (no re-reads) at each other process."""
        return entry.name.isdigit() and int(entry.name) != os.getpid() and \
            owned(int(entry.name), str(self.state_dir), attempts=1)

    def running(self, name: str) -> bool:
        pid = self._recorded_pid(name)
        return pid is not None and self._owns(pid)

    def containerd_running(self) -> bool:
        return self.running("containerd") and self.socket.exists()

    def pids(self) -> dict[str, int | None]:
        return {name: self._recorded_pid(name) for name in NODE_COMPONENTS}

    # --- checks --------------------------------------------------------------------------

    def preflight(self) -> dict[str, str]:
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
            mounted = _cgroup_v1_hierarchies()
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

    # --- PKI -----------------------------------------------------------------------------

    def _ensure_certs(self) -> None:
        """Client (system:node:thresher-local, O=system:nodes) and serving certificates."""
        out = self.dir / "pki"
        node_ip = host_ip()
        if (out / "complete").exists() and (out / "complete").read_text().strip() == node_ip:
            return
        out.mkdir(parents=True, exist_ok=True)
        ca_key = serialization.load_pem_private_key((self.pki_dir / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((self.pki_dir / "ca.crt").read_bytes())
        now = dt.datetime.now(dt.timezone.utc)
        user = f"system:node:{NODE_NAME}"
        for stem, kw in (("kubelet-client", {"client": True}),
                         ("kubelet-serving", {"server_names": (NODE_NAME, "localhost"),
                                              "server_ips": (node_ip, "127.0.0.1")})):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = pki._issue(pki._name(user, ("system:nodes",)), key.public_key(), ca_cert.subject,
                              ca_key, now, **kw)
            pki._write_key(out / f"{stem}.key", key)
            pki._write_cert(out / f"{stem}.crt", cert)
        (out / "complete").write_text(node_ip + "\n")  # a changed host address re-issues

    # --- rendering -----------------------------------------------------------------------

    def _write_configs(self, tools: dict[str, str]) -> dict[str, Path]:
        d = self.dir
        for sub in ("run", "containerd/root", "containerd/state", "cni/conf", "cni/ipam", "kubelet",
                    "pod-logs", "volume-plugins", "pv"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        containerd_cfg = d / "containerd.toml"
        containerd_cfg.write_text(_template(
            "containerd.toml", root=str(d / "containerd/root"), state=str(d / "containerd/state"),
            socket=str(self.socket), sandbox_image=images.PAUSE_IMAGE, runc=tools["runc"],
            cni_bin_dir=tools["cni"], cni_conf_dir=str(d / "cni/conf"),
            restrict_oom="false" if has_capability(CAP_SYS_RESOURCE) else "true"))
        (d / "cni/conf/10-thresher.conflist").write_text(_template(
            "cni.conflist", bridge=self.bridge, subnet=str(self.subnet), gateway=self.host_ip,
            ipam_dir=str(d / "cni/ipam")))
        ports_path = d / "ports.json"
        if ports_path.exists():
            ports = json.loads(ports_path.read_text())
        else:
            ports = {"kubelet": _free_port(), "healthz": _free_port()}
            ports_path.write_text(json.dumps(ports))
        kubelet_cfg = d / "kubelet-config.yaml"
        kubelet_cfg.write_text(yaml.safe_dump(self._kubelet_config(ports), sort_keys=False))
        from thresher.devcluster.cluster import kubeconfig_dict

        kubeconfig = d / "kubelet.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(
            self.server_url, user=f"system:node:{NODE_NAME}", ca=str(self.pki_dir / "ca.crt"),
            cert=str(d / "pki/kubelet-client.crt"), key=str(d / "pki/kubelet-client.key")), sort_keys=False))
        return {"containerd": containerd_cfg, "kubelet": kubelet_cfg, "kubeconfig": kubeconfig}

    def _kubelet_config(self, ports: dict[str, int]) -> dict:
        d = self.dir
        endpoint = f"unix://{self.socket}"
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # On the node's InternalIP (the apiserver calls it there for logs/exec); clients need
            # a certificate from the dev CA and are authorised by the apiserver (Webhook).
            "address": host_ip(), "port": ports["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": ports["healthz"],
            "tlsCertFile": str(d / "pki/kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(d / "pki/kubelet-serving.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.pki_dir / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": endpoint, "imageServiceEndpoint": endpoint,
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_parent, "cgroupsPerQOS": True,
            "podLogsDir": str(d / "pod-logs"),
            "volumePluginDir": str(d / "volume-plugins"),
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 30, "serializeImagePulls": False,
            # A shared dev machine: never evict for disk, never garbage-collect imported images.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "shutdownGracePeriod": "0s", "shutdownGracePeriodCriticalPods": "0s",
            "registerNode": True, "rotateCertificates": False, "serverTLSBootstrap": False,
            "failSwapOn": True, "protectKernelDefaults": False,
            "nodeStatusUpdateFrequency": "10s", "syncFrequency": "10s",
        }

    def _kubelet_args(self, paths: dict[str, Path], kubelet: Path) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        return [str(kubelet), f"--config={paths['kubelet']}", f"--kubeconfig={paths['kubeconfig']}",
                f"--root-dir={self.dir / 'kubelet'}", f"--cert-dir={self.dir / 'kubelet/pki'}",
                f"--hostname-override={NODE_NAME}", f"--node-ip={host_ip()}", f"--node-labels={labels}",
                "--v=1"]

    # --- processes -----------------------------------------------------------------------

    def _start(self, name: str, args: list[str], log: Log) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.state_dir)
        write_pid(self.pid_dir, name, proc.pid)
        self._procs[name] = proc
        log(f"started {name} (pid {proc.pid})")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._procs.get(name)
            exited = proc.poll() is not None if proc else not self.running(name)
            if exited:
                raise NodeError(f"{name} exited while waiting for {what}\n--- last lines of "
                                f"{self.log_dir / (name + '.log')} ---\n{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.25)
        raise NodeError(f"{name}: not {what} after {timeout:.0f}s\n--- last lines of "
                        f"{self.log_dir / (name + '.log')} ---\n{self.log_tail(name)}")

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return _sh(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                   check=check, timeout=timeout)

    def _containerd_ready(self) -> bool:
        if not self.socket.exists():
            return False
        return self.ctr("plugins", "ls", check=False, timeout=10).returncode == 0

    def imported_images(self) -> set[str]:
        out = self.ctr("images", "ls", "-q", check=False).stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def import_image(self, archive: Path, log: Log = print) -> None:
        start = time.monotonic()
        # --all-platforms: our archives are single-platform; the flag skips a platform match
        # that buildah's (unset variant) manifests would otherwise fail.
        self.ctr("images", "import", "--all-platforms", "--no-unpack", str(archive))
        log(f"imported {archive.name} into containerd (k8s.io) in {time.monotonic() - start:.1f}s")

    def _make_cgroups(self) -> None:
        if cgroup_version() == 2:
            Path("/sys/fs/cgroup", self.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)
            return
        for mountpoint in set(_cgroup_v1_hierarchies().values()):
            Path(mountpoint, self.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)

    def _iptables_chains(self) -> dict[str, list[str]]:
        """{"iptables filter": [chains...], ...} of the kubelet's chains that exist now."""
        found: dict[str, list[str]] = {}
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None:
                continue
            for table, chains in KUBELET_CHAINS.items():
                lines = _sh([tool, "-w", "-t", table, "-S"], check=False).stdout.splitlines()
                found[f"{tool} {table}"] = [c for c in chains if f"-N {c}" in lines]
        return found

    def _remove_kubelet_iptables(self) -> None:
        saved = self.dir / "iptables-before.json"
        if not saved.exists() or _other_kubelets(self.state_dir):
            return  # another kubelet on this host may own them
        before = json.loads(saved.read_text())
        for key, chains in self._iptables_chains().items():
            tool, table = key.split()
            for chain in chains:
                if chain in before.get(key, []):
                    continue
                if chain == "KUBE-FIREWALL":
                    for hook in ("INPUT", "OUTPUT"):
                        while _sh([tool, "-w", "-t", table, "-D", hook, "-j", chain], check=False).returncode == 0:
                            pass
                _sh([tool, "-w", "-t", table, "-F", chain], check=False)
                _sh([tool, "-w", "-t", table, "-X", chain], check=False)

    def _save_tunables(self) -> None:
        saved = self.dir / "kernel-tunables.json"
        if saved.exists():
            return
        values = {}
        for key in KERNEL_TUNABLES:
            try:
                values[key] = Path("/proc/sys", key).read_text().strip()
            except OSError:
                pass
        saved.write_text(json.dumps(values, indent=2))

    # --- the verbs -----------------------------------------------------------------------

    def up(self, kubectl: Callable[..., subprocess.CompletedProcess], log: Log = print,
           timeout: float = 120) -> float:
        """Start containerd and the kubelet (whichever is not running), import the images,
        wait for the node to be Ready and apply the local storage. Returns seconds taken."""
        start = time.monotonic()
        tools = self.preflight()
        kubelet = binaries.ensure(["kubelet"], log)["kubelet"]
        try:
            pause = images.pause_archive(log)
        except images.ImageError as err:
            raise NodeError(f"sandbox image: {err}") from err
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled").write_text("1\n")
        self._ensure_certs()
        paths = self._write_configs(tools)
        if not self.running("containerd"):
            self.socket.unlink(missing_ok=True)
            self._start("containerd", [tools["containerd"], "--config", str(paths["containerd"])], log)
        self._wait("containerd", self._containerd_ready, 60, "serving its socket")
        have = self.imported_images()
        for archive in [pause, *images.node_archives()]:
            if not self._archive_imported(archive, have):
                self.import_image(archive, log)
                (self.dir / f"imported-{archive.name}").touch()
        if not self.running("kubelet"):
            self._make_cgroups()
            self._save_tunables()
            if not (self.dir / "iptables-before.json").exists():
                (self.dir / "iptables-before.json").write_text(json.dumps(self._iptables_chains()))
            self._start("kubelet", self._kubelet_args(paths, kubelet), log)
        healthz = f"http://127.0.0.1:{json.loads((self.dir / 'ports.json').read_text())['healthz']}/healthz"
        self._wait("kubelet", lambda: _http_ok(healthz) and self._node_ready(kubectl), timeout,
                   f"healthy and node {NODE_NAME} Ready")
        kubectl("apply", "-f", "-", input=self.storage_manifest())
        took = time.monotonic() - start
        log(f"node {NODE_NAME} Ready in {took:.1f}s (pods reach the host at {self.host_ip})")
        return took

    def _archive_imported(self, archive: Path, have: set[str]) -> bool:
        return (self.dir / f"imported-{archive.name}").exists() and bool(have)

    def _node_ready(self, kubectl) -> bool:
        proc = kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def storage_manifest(self) -> str:
        """A no-provisioner StorageClass and static local PVs under the state directory."""
        docs: list[dict] = [{
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "labels": {"app.kubernetes.io/managed-by": "thresher-dev"}},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        }]
        for i in range(1, PV_COUNT + 1):
            folder = self.dir / "pv" / f"pv{i}"
            folder.mkdir(parents=True, exist_ok=True)
            docs.append({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"{NODE_NAME}-pv{i}",
                             "labels": {"app.kubernetes.io/managed-by": "thresher-dev"}},
                "spec": {
                    "capacity": {"storage": PV_CAPACITY}, "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                    "volumeMode": "Filesystem", "local": {"path": str(folder)},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                        "key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}},
                },
            })
        return yaml.safe_dump_all(docs, sort_keys=False)

    # --- teardown ------------------------------------------------------------------------

    def _stop(self, name: str, log: Log, timeout: float = 20) -> None:
        pid = self._recorded_pid(name)
        if pid is None or not self._owns(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._owns(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._owns(pid):
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        log(f"stopped {name} (pid {pid})")

    def _sandbox_netns(self) -> list[str]:
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

    def _remove_containers(self, log: Log) -> list[str]:
        """Kill and delete every task and container (pods included); return their netns."""
        netns = self._sandbox_netns()
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

    def _netns_in_subnet(self) -> list[str]:
        """Pinned network namespaces with an address in this node's pod subnet (found even
        when containerd is gone)."""
        found = []
        for path in sorted(Path("/var/run/netns").glob("cni-*")):
            out = _sh(["ip", "-n", path.name, "-o", "-4", "addr", "show"], check=False, timeout=10).stdout
            for token in out.split():
                if "/" in token:
                    try:
                        if ipaddress.ip_interface(token).ip in self.subnet:
                            found.append(str(path))
                            break
                    except ValueError:
                        continue
        return found

    def _own_mounts(self) -> list[str]:
        """Mount points under the state directory or pinned netns of ours, deepest first."""
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(str(self.dir) + "/"):
                points.append(point)
        return sorted(set(points), key=lambda p: p.count("/"), reverse=True)

    def _remove_cgroups(self) -> None:
        roots = ([Path("/sys/fs/cgroup")] if cgroup_version() == 2
                 else sorted(set(_cgroup_v1_hierarchies().values())))
        for root in roots:
            top = root / self.cgroup_parent.lstrip("/")
            if not top.is_dir():
                continue
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: t[0].count("/"), reverse=True):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass

    def _restore_tunables(self) -> None:
        saved = self.dir / "kernel-tunables.json"
        if not saved.exists():
            return
        for key, value in json.loads(saved.read_text()).items():
            try:
                Path("/proc/sys", key).write_text(value + "\n")
            except OSError:
                pass

    def leftovers(self) -> dict[str, list[str]]:
        """What of this node still exists on the host (all empty after ``down``)."""
        procs = []
        for entry in Path("/proc").iterdir():
            if self._scan_owns(entry):
                procs.append(f"{entry.name} {Path(entry, 'cmdline').read_bytes()[:120]!r}")
        links = _sh(["ip", "-o", "link", "show"], check=False).stdout
        interfaces = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                      if f" {self.bridge}" in line or f"master {self.bridge}" in line]
        cgroups = []
        roots = ([Path("/sys/fs/cgroup")] if cgroup_version() == 2
                 else sorted(set(_cgroup_v1_hierarchies().values())))
        for root in roots:
            if (root / self.cgroup_parent.lstrip("/")).exists():
                cgroups.append(str(root / self.cgroup_parent.lstrip("/")))
        netns = self._netns_in_subnet()
        return {"processes": procs, "mounts": self._own_mounts(), "interfaces": interfaces,
                "cgroups": cgroups, "netns": netns}

    def down(self, log: Log = print) -> None:
        """Stop the kubelet, remove every container and sandbox, stop containerd, then undo
        mounts, network namespaces, the bridge, cgroups and kernel tunables."""
        if not self.dir.exists():
            return
        self._stop("kubelet", log)
        netns: list[str] = []
        if self.containerd_running():
            netns = self._remove_containers(log)
        self._stop("containerd", log)
        # Shims outlive containerd by design; any left (killed containerd) go now.
        for entry in Path("/proc").iterdir():
            if self._scan_owns(entry):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for point in self._own_mounts():
            _sh(["umount", "-l", point], check=False)
        known = set(netns) | set(self._netns_in_subnet())
        for path in sorted(known):
            if Path(path).exists():
                _sh(["umount", path], check=False)
                Path(path).unlink(missing_ok=True)
        if _sh(["ip", "link", "show", self.bridge], check=False).returncode == 0:
            _sh(["ip", "link", "delete", self.bridge], check=False)
            log(f"deleted bridge {self.bridge}")
        self._remove_cgroups()
        self._remove_kubelet_iptables()
        if not _other_kubelets(self.state_dir):
            self._restore_tunables()
        # containerd 1.6 keeps shim sockets in the host-wide /run/containerd/s: tidy if empty.
        for path in ("/run/containerd/s", "/run/containerd"):
            try:
                os.rmdir(path)
            except OSError:
                pass
