"""The local control plane's pure parts: build recipe, PKI identities, node shapes."""

from __future__ import annotations

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from thresher.devcluster import binaries, pki
from thresher.devcluster.kwok.nodes import (CPU_NODES, GPU_NODE, NODE_NAMES, SIMULATED_TAINT, node_manifest,
                                             nodes_manifest)

GOMOD = """module k8s.io/kubernetes
require (
\tk8s.io/api v0.0.0
)
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/foo/bar => github.com/foo/bar v1.2.3
)
"""


def test_staging_modules_are_pinned_to_the_matching_v0_tag():
    assert binaries.staging_replaces(GOMOD, "v1.34.4") == {
        "k8s.io/api": "v0.34.4", "k8s.io/client-go": "v0.34.4"}


def test_scratch_module_replaces_every_staging_module():
    text = binaries.scratch_gomod("kubernetes", "v1.34.4", {"k8s.io/api": "v0.34.4"})
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in text
    assert text.startswith("module local/thresher-kubernetes")


def test_version_probe_reads_the_minor():
    assert binaries.minor_of("Kubernetes v1.34.4") == "1.34"
    assert binaries.minor_of("etcd Version: 3.6.16\nGit SHA: x") == "3.6"
    assert binaries.minor_of("Client Version: v1.32.4-dispatcher") == "1.32"
    assert binaries.minor_of("no version here") == ""


def test_pinned_versions_are_consistent():
    for name in binaries.CONTROL_PLANE:
        component = binaries.COMPONENTS[name]
        assert component.minor, name
    assert binaries.COMPONENTS["kube-apiserver"].minor == binaries.COMPONENTS["kubectl"].minor


def test_pki_issues_each_component_the_identity_rbac_expects(tmp_path):
    pki.ensure_pki(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for identity in pki.CLIENTS:
        cert = x509.load_pem_x509_certificate((tmp_path / f"{identity.stem}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity.user
        groups = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        assert groups == identity.groups
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    server = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert (tmp_path / "sa.key").stat().st_mode & 0o777 == 0o600
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def test_pki_is_generated_once(tmp_path):
    pki.ensure_pki(tmp_path)
    first = (tmp_path / "ca.crt").read_bytes()
    pki.ensure_pki(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == first


def test_gpu_node_advertises_gpus_and_is_tainted():
    node = node_manifest(GPU_NODE, gpus=8)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    cpu = node_manifest("kwok-cpu-1")
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"] and not cpu["spec"].get("taints")
    assert nodes_manifest().count("kind: Node") == len(NODE_NAMES)


def test_with_the_real_node_kwok_cpu_nodes_are_tainted_so_plain_pods_go_to_the_real_node():
    """Issue 13: with the real node present, a schedule without a nodeSelector landed on a kwok
    node and "succeeded" with no container run. In node mode the kwok CPU nodes carry kwok's
    NoSchedule taint (only simulated pods tolerate it); without the real node nothing changes;
    the GPU node keeps only its GPU taint (GPU pods can only be simulated here)."""
    tainted = {n["metadata"]["name"]: n["spec"].get("taints", [])
               for n in yaml.safe_load_all(nodes_manifest(real_node=True))}
    for name in CPU_NODES:
        assert tainted[name] == [SIMULATED_TAINT]
    assert tainted[GPU_NODE] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    plain = {n["metadata"]["name"]: n["spec"].get("taints", []) for n in yaml.safe_load_all(nodes_manifest())}
    assert all(plain[name] == [] for name in CPU_NODES)
    assert SIMULATED_TAINT["key"] == "kwok.x-k8s.io/node"  # kwok's own convention for fake nodes


def test_owned_follows_the_process_from_start_to_exit(tmp_path):
    """A just-started child counts as ours at once (even while its cmdline still reads empty
    inside execve: that raced `dev up` into "exited while waiting" on a loaded machine), a
    stranger never does, and neither does a zombie or a reaped pid."""
    import subprocess
    import sys
    import time

    from thresher.devcluster.process import owned

    marker = str(tmp_path / "state")
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)", marker],
                                start_new_session=True)
        try:
            assert owned(proc.pid, marker)
            assert not owned(proc.pid, str(tmp_path / "other"))
        finally:
            proc.kill()
        deadline = time.monotonic() + 5  # SIGKILL lands asynchronously; then a zombie until reaped
        while owned(proc.pid, marker, attempts=1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not owned(proc.pid, marker)
        proc.wait()
        assert not owned(proc.pid, marker)
