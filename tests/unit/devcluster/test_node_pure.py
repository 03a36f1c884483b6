"""The real node's rendered configuration (no root, no processes): containerd's TOML, the CNI
conflist, the kubelet configuration and the local storage manifests."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from thresher.devcluster import binaries, images
from thresher.devcluster.node import NODE_NAME, NodeLayout, config


def test_names_derive_from_the_state_dir_and_fit_the_kernel_limits(tmp_path):
    a, b = NodeLayout.of(tmp_path / "a"), NodeLayout.of(tmp_path / "b")
    assert a.bridge != b.bridge and len(a.bridge) <= 15  # IFNAMSIZ - 1
    assert a.subnet.prefixlen == 24 and a.host_ip == str(a.subnet.network_address + 1)
    assert a.cgroup_parent.startswith("/thresher-")
    assert len(str(NodeLayout.of(Path.home() / ".local/state/thresher/dev").socket)) < 108  # sun_path


def test_templates_render_to_valid_containerd_and_cni_config(tmp_path):
    node = NodeLayout.of(tmp_path)
    toml = tomllib.loads(config.template(
        "containerd.toml", root="/r", state="/s", socket="/s/c.sock", sandbox_image=images.PAUSE_IMAGE,
        runc="/usr/sbin/runc", cni_bin_dir="/usr/lib/cni", cni_conf_dir="/c", restrict_oom="true",
        registry_hosts=str(node.registry_hosts)))
    cri = toml["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == images.PAUSE_IMAGE and cri["restrict_oom_score_adj"] is True
    # The dev registry's hosts.toml lives under the node's folder (removed by `down`).
    assert cri["registry"] == {"config_path": str(tmp_path / "node" / "certs.d")}
    assert cri["containerd"]["runtimes"]["runc"]["options"] == {
        "BinaryName": "/usr/sbin/runc", "SystemdCgroup": False, "Root": "/s/runc"}
    cni = json.loads(config.template("cni.conflist", bridge=node.bridge, subnet=str(node.subnet),
                               gateway=node.host_ip, ipam_dir="/i"))
    assert [p["type"] for p in cni["plugins"]] == ["bridge", "portmap"]
    assert cni["plugins"][0]["isGateway"] is True and cni["plugins"][0]["ipam"]["dataDir"] == "/i"


def test_kubelet_config_keeps_everything_under_the_state_dir(tmp_path):
    node = NodeLayout.of(tmp_path)
    cfg = config.kubelet_config(node, {"kubelet": 1, "healthz": 2})
    assert cfg["readOnlyPort"] == 0 and cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authorization"]["mode"] == "Webhook" and cfg["cgroupDriver"] == "cgroupfs"
    for key in ("podLogsDir", "volumePluginDir", "tlsCertFile", "tlsPrivateKeyFile"):
        assert cfg[key].startswith(str(tmp_path)), key
    assert cfg["containerRuntimeEndpoint"] == f"unix://{node.socket}"


def test_storage_is_a_no_provisioner_class_with_node_pinned_local_pvs(tmp_path):
    docs = list(yaml.safe_load_all(config.storage_manifest(NodeLayout.of(tmp_path))))
    assert docs[0]["kind"] == "StorageClass" and docs[0]["volumeBindingMode"] == "WaitForFirstConsumer"
    for pv in docs[1:]:
        assert Path(pv["spec"]["local"]["path"]).is_dir()
        term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert term["values"] == [NODE_NAME]


def test_kubelet_is_built_with_the_control_plane_but_only_started_on_request():
    kubelet = binaries.COMPONENTS["kubelet"]
    assert kubelet.version == binaries.COMPONENTS["kube-apiserver"].version
    assert kubelet.group == "kubernetes" and "kubelet" not in binaries.CONTROL_PLANE


def test_kube_proxy_is_built_with_the_control_plane_but_only_started_on_request():
    proxy = binaries.COMPONENTS["kube-proxy"]
    assert proxy.version == binaries.COMPONENTS["kube-apiserver"].version and proxy.group == "kubernetes"
    assert "kube-proxy" not in binaries.CONTROL_PLANE
    assert "kube-proxy" in (Path(__file__).parents[3] / "Makefile").read_text().split("binaries:")[1].split("\n\n")[0]


def test_kube_proxy_runs_iptables_for_the_node_subnet_and_leaves_host_settings_alone(tmp_path, monkeypatch):
    """iptables mode, clusterCIDR = the node's pod subnet; no conntrack sysctls (0), no
    route_localnet (no NodePorts on loopback); health and metrics on loopback only."""
    monkeypatch.setattr(config, "host_ip", lambda: "192.0.2.7")
    node = NodeLayout.of(tmp_path)
    cfg = config.kube_proxy_config(node, {"proxy_healthz": 11, "proxy_metrics": 12}, tmp_path / "kp.kubeconfig")
    assert cfg["kind"] == "KubeProxyConfiguration" and cfg["mode"] == "iptables"
    assert cfg["clusterCIDR"] == str(node.subnet) and cfg["hostnameOverride"] == NODE_NAME
    assert cfg["conntrack"] == {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}
    assert cfg["iptables"]["localhostNodePorts"] is False and cfg["nodePortAddresses"] == ["192.0.2.7/32"]
    assert cfg["healthzBindAddress"] == "127.0.0.1:11" and cfg["metricsBindAddress"] == "127.0.0.1:12"
    assert cfg["clientConnection"]["kubeconfig"] == str(tmp_path / "kp.kubeconfig")


def test_with_the_real_node_the_api_server_is_the_kubernetes_services_endpoint(tmp_path, monkeypatch):
    """Pods reach the API server through 10.0.0.1 (kube-proxy -> the published endpoint), so in
    node mode it listens beyond loopback and publishes the host's address; without the node
    nothing changes (loopback, no endpoints)."""
    from thresher.devcluster import cluster

    monkeypatch.setattr(cluster, "host_ip", lambda: "192.0.2.7")
    assert cluster.DevCluster(tmp_path / "a", node=False)._apiserver_addresses() == ("127.0.0.1", "127.0.0.1", "none")
    assert cluster.DevCluster(tmp_path / "b", node=True)._apiserver_addresses() == ("0.0.0.0", "192.0.2.7", "lease")
