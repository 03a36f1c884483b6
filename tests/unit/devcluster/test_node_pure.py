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
