"""The opt-in real node (`thresher dev up --node`): a cluster of its own in a temporary state
directory, with the kubelet, containerd, CNI and the registry; Thresher's images built locally
and published to that registry with the release entry point (pods pull them by digest with the
``thresher-registry`` pull Secret); the operator running as a local process. Runs only with THRESHER_DEV_NODE=1 (it needs root and
takes minutes the first time); otherwise every test here is deselected (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_established
from tests.helpers.wait import eventually

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NAMESPACE_PREFIX = "rn-"
FAKE_TMDB_KEY = "fake-api-key"


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    """Measured durations, printed at the end of the session (docs/devcluster.md quotes them)."""
    measured: dict[str, float] = {}
    yield measured
    print("\n[realnode timings] " + json.dumps({k: round(v, 1) for k, v in measured.items()}))


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory, timings):
    from thresher.devcluster import images
    from thresher.devcluster.cluster import DevCluster
    from thresher.devcluster.node import host

    log = lambda m: print(f"[realnode] {m}")  # noqa: E731
    start = time.monotonic()
    images.build(["pause", "jobs", "operator"], log)  # cached: only a changed source rebuilds
    timings["images_s"] = time.monotonic() - start
    state = tmp_path_factory.mktemp("realnode") / "state"
    cluster = DevCluster(state, node=True)
    cluster.iptables_before = host.kubelet_chains()  # for the leftovers check
    start = time.monotonic()
    cluster.up(log=log, timeout=180)
    timings["cluster_with_node_up_s"] = time.monotonic() - start
    yield cluster
    if cluster.state_dir.exists() and os.environ.get("THRESHER_KEEP_CLUSTER") != "1":
        cluster.down(log=log)


@pytest.fixture(scope="session")
def node(node_cluster):
    return node_cluster.node()


@pytest.fixture(scope="session")
def registry(node):
    return node.registry


@pytest.fixture(scope="session")
def published(registry, timings):
    """`make release`'s entry point into the dev registry: jobs and operator images, the chart."""
    from thresher.devcluster import release
    from thresher.devcluster.binaries import ensure

    helm = ensure(["helm"], lambda m: None)["helm"]
    start = time.monotonic()
    result = release.publish_to_dev_registry(registry, helm, lambda m: print(f"[realnode] {m}"))
    timings["publish_s"] = time.monotonic() - start
    for target, pushed in result.images.items():
        timings[f"push_{target}_s"] = pushed.seconds
    timings["push_chart_s"] = result.seconds["chart"]
    return result


@pytest.fixture(scope="session")
def jobs_image(published) -> str:
    """The jobs image by digest in the dev registry: what job pods reference and pull."""
    return published.images["jobs"].reference


@pytest.fixture(scope="session")
def crd(node_cluster):
    for path in sorted((REPO / "manifests" / "crds").glob("*.yaml")):
        node_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    wait_established(node_cluster)


@pytest.fixture(scope="session")
def operator(node_cluster, crd, jobs_image, tmp_path_factory):
    from tests.integration.conftest import OperatorProcess
    from thresher.devcluster.registry import PULL_SECRET

    op = OperatorProcess(node_cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                         namespaces=(f"{NAMESPACE_PREFIX}*",),
                         extra_args=("--job-image", jobs_image, "--job-image-pull-secrets", PULL_SECRET,
                                     "--log-format", "plain"))
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def fake_tmdb(node):
    """The project's fake TMDB server on all host addresses; pods reach it over the bridge."""
    proc = subprocess.Popen([sys.executable, "-m", "thresher.demo", "fake-tmdb", "--port", "0",
                             "--host", "0.0.0.0", "--movies", "600", "--api-key", FAKE_TMDB_KEY],
                            stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    yield {"baseUrl": f"http://{node.host_ip}:{info['port']}/3", "port": info["port"]}
    proc.terminate()
    proc.wait(timeout=30)


def _namespace(node_cluster, request):
    name = f"{NAMESPACE_PREFIX}{request.node.name.replace('_', '-')[5:30].strip('-')}-{os.getpid() % 10000}"
    node_cluster.kubectl("create", "namespace", name)
    node_cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
                         "pod-security.kubernetes.io/enforce-version=latest")
    return name


@pytest.fixture
def restricted_namespace(node_cluster, registry, request):
    """A namespace enforcing Pod Security `restricted`, with the registry's pull Secret."""
    name = _namespace(node_cluster, request)
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(registry.pull_secret(name)))
    yield from _ready_then_cleaned(node_cluster, name)


@pytest.fixture
def namespace_without_pull_secret(node_cluster, request):
    name = _namespace(node_cluster, request)
    yield from _ready_then_cleaned(node_cluster, name)


def _ready_then_cleaned(node_cluster, name: str):
    eventually(lambda: node_cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False)
               .returncode == 0, timeout=30, message=f"default ServiceAccount in {name}")
    yield name
    node_cluster.kubectl("delete", "collectionschedules", "--all", "-n", name, "--wait=false", check=False)
    node_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
