"""The real node's files: its certificates (from the dev CA), containerd's TOML, the CNI
conflist, the kubelet's configuration, kubeconfig and command line, and the local storage.
Rendering only: nothing here starts a process or changes the host outside the node's folder."""

from __future__ import annotations

import datetime as dt
import json
import string
from importlib import resources
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from thresher.devcluster import pki
from thresher.devcluster.images import PAUSE_IMAGE
from thresher.devcluster.kubeconfig import kubeconfig_dict
from thresher.devcluster.node.layout import NODE_NAME, NodeLayout
from thresher.devcluster.node.preflight import CAP_SYS_RESOURCE, has_capability, host_ip
from thresher.devcluster.process import free_port

STORAGE_CLASS = "thresher-local"
PV_COUNT = 6
PV_CAPACITY = "2Gi"
NODE_LABELS = {"thresher.dev/node-pool": "local", "thresher.dev/real-node": "true"}


def template(name: str, **values: str) -> str:
    """A file of this package (containerd.toml, cni.conflist) with ``$names`` filled in."""
    text = resources.files("thresher.devcluster.node").joinpath(name).read_text()
    return string.Template(text).substitute(values)


KUBE_PROXY_USER = "system:kube-proxy"  # bound to system:node-proxier by the API server's defaults


def ensure_certs(layout: NodeLayout) -> None:
    """The kubelet's client (system:node:thresher-local, O=system:nodes) and serving
    certificates, and kube-proxy's client certificate (system:kube-proxy)."""
    out = layout.dir / "pki"
    node_ip = host_ip()
    if (out / "complete").exists() and (out / "complete").read_text().strip() == node_ip:
        return
    out.mkdir(parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key((layout.pki_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((layout.pki_dir / "ca.crt").read_bytes())
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
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki._issue(pki._name(KUBE_PROXY_USER, ()), key.public_key(), ca_cert.subject, ca_key, now, client=True)
    pki._write_key(out / "kube-proxy-client.key", key)
    pki._write_cert(out / "kube-proxy-client.crt", cert)
    (out / "complete").write_text(node_ip + "\n")  # a changed host address re-issues


def ports(layout: NodeLayout) -> dict[str, int]:
    """The kubelet's ports, chosen once per node."""
    path = layout.dir / "ports.json"
    chosen = json.loads(path.read_text()) if path.exists() else {}
    missing = [n for n in ("kubelet", "healthz", "proxy_healthz", "proxy_metrics") if n not in chosen]
    if missing:  # a node folder from before kube-proxy gets its ports added
        chosen.update({n: free_port() for n in missing})
        path.write_text(json.dumps(chosen))
    return chosen


def write_configs(layout: NodeLayout, tools: dict[str, str], server_url: str) -> dict[str, Path]:
    d = layout.dir
    for sub in ("run", "containerd/root", "containerd/state", "cni/conf", "cni/ipam", "kubelet",
                "pod-logs", "volume-plugins", "pv"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    containerd_cfg = d / "containerd.toml"
    containerd_cfg.write_text(template(
        "containerd.toml", root=str(d / "containerd/root"), state=str(d / "containerd/state"),
        socket=str(layout.socket), sandbox_image=PAUSE_IMAGE, runc=tools["runc"],
        cni_bin_dir=tools["cni"], cni_conf_dir=str(d / "cni/conf"), registry_hosts=str(layout.registry_hosts),
        restrict_oom="false" if has_capability(CAP_SYS_RESOURCE) else "true"))
    (d / "cni/conf/10-thresher.conflist").write_text(template(
        "cni.conflist", bridge=layout.bridge, subnet=str(layout.subnet), gateway=layout.host_ip,
        ipam_dir=str(d / "cni/ipam")))
    kubelet_cfg = d / "kubelet-config.yaml"
    kubelet_cfg.write_text(yaml.safe_dump(kubelet_config(layout, ports(layout)), sort_keys=False))
    kubeconfig = d / "kubelet.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(
        server_url, user=f"system:node:{NODE_NAME}", ca=str(layout.pki_dir / "ca.crt"),
        cert=str(d / "pki/kubelet-client.crt"), key=str(d / "pki/kubelet-client.key")), sort_keys=False))
    proxy_kubeconfig = d / "kube-proxy.kubeconfig"
    proxy_kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(
        server_url, user=KUBE_PROXY_USER, ca=str(layout.pki_dir / "ca.crt"),
        cert=str(d / "pki/kube-proxy-client.crt"), key=str(d / "pki/kube-proxy-client.key")), sort_keys=False))
    proxy_cfg = d / "kube-proxy-config.yaml"
    proxy_cfg.write_text(yaml.safe_dump(kube_proxy_config(layout, ports(layout), proxy_kubeconfig), sort_keys=False))
    return {"containerd": containerd_cfg, "kubelet": kubelet_cfg, "kubeconfig": kubeconfig,
            "kube-proxy": proxy_cfg}


def kubelet_config(layout: NodeLayout, ports: dict[str, int]) -> dict:
    d = layout.dir
    endpoint = f"unix://{layout.socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # On the node's InternalIP (the apiserver calls it there for logs/exec); clients need
        # a certificate from the dev CA and are authorised by the apiserver (Webhook).
        "address": host_ip(), "port": ports["kubelet"], "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": ports["healthz"],
        "tlsCertFile": str(d / "pki/kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(d / "pki/kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(layout.pki_dir / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": endpoint, "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs", "cgroupRoot": layout.cgroup_parent, "cgroupsPerQOS": True,
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


def kubelet_args(layout: NodeLayout, paths: dict[str, Path], kubelet: Path) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    return [str(kubelet), f"--config={paths['kubelet']}", f"--kubeconfig={paths['kubeconfig']}",
            f"--root-dir={layout.dir / 'kubelet'}", f"--cert-dir={layout.dir / 'kubelet/pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={host_ip()}", f"--node-labels={labels}",
            "--v=1"]


def kube_proxy_config(layout: NodeLayout, ports: dict[str, int], kubeconfig: Path) -> dict:
    """kube-proxy in iptables mode for this node's pods, changing nothing else on the host: no
    conntrack sysctls (0 = leave as is), no route_localnet (no NodePorts on 127.0.0.1),
    NodePorts only on the node's address, health and metrics on loopback."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME, "mode": "iptables",
        # Traffic to a Service from outside the pods (the host, say) is masqueraded.
        "clusterCIDR": str(layout.subnet),
        "healthzBindAddress": f"127.0.0.1:{ports['proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['proxy_metrics']}",
        "nodePortAddresses": [f"{host_ip()}/32"],
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def kube_proxy_args(paths: dict[str, Path], kube_proxy: Path) -> list[str]:
    return [str(kube_proxy), f"--config={paths['kube-proxy']}", "--v=1"]


def storage_manifest(layout: NodeLayout) -> str:
    """A no-provisioner StorageClass and static local PVs under the state directory."""
    docs: list[dict] = [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "labels": {"app.kubernetes.io/managed-by": "thresher-dev"}},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }]
    for i in range(1, PV_COUNT + 1):
        folder = layout.dir / "pv" / f"pv{i}"
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
