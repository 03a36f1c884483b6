"""Shared fixtures: one real local control plane per test session, a fresh namespace per test.

The cluster is the same one `make demo` uses (``thresher dev up``): if one is already running
it is reused and left running; if this session started it, it is stopped at the end unless
THRESHER_KEEP_CLUSTER=1. A cluster that cannot start is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from tests.helpers.wait import eventually

REPO = Path(__file__).resolve().parent.parent
# Every namespace of this test session starts with t-<tag>-, and the session's operator watches
# only those: two sessions (or a demo) on one cluster never handle each other's objects.
SESSION_TAG = uuid.uuid4().hex[:4]
NAMESPACE_PREFIX = f"t-{SESSION_TAG}-"
CRD_DIR = REPO / "manifests" / "crds"


def pytest_collection_modifyitems(config, items):
    """Tests marked realnode need root and minutes of image builds: they run only with
    THRESHER_DEV_NODE=1 (`make test` sets it); otherwise they are deselected, not skipped."""
    if os.environ.get("THRESHER_DEV_NODE") == "1":
        return
    node_tests = [i for i in items if i.get_closest_marker("realnode")]
    if node_tests:
        config.hook.pytest_deselected(items=node_tests)
        items[:] = [i for i in items if not i.get_closest_marker("realnode")]


@pytest.fixture(scope="session")
def cluster():
    from thresher.devcluster.cluster import DevCluster

    # Never the real node here (THRESHER_DEV_NODE=1 asks for the realnode tests, which start a
    # cluster of their own): pods of these tests are meant for kwok's simulated nodes.
    dev = DevCluster(node=False)
    was_running = any(s.running for s in dev.components().values())
    dev.up(log=lambda m: print(f"[devcluster] {m}"))
    yield dev
    if not was_running and os.environ.get("THRESHER_KEEP_CLUSTER") != "1":
        dev.down(log=lambda m: print(f"[devcluster] {m}"))


@pytest.fixture(scope="session")
def crd(cluster):
    """The CollectionSchedule CRD, applied from the committed manifests and Established."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRD manifests in {CRD_DIR}"
    for path in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    wait_established(cluster)
    return "collectionschedules.thresher.dev"


def wait_established(cluster, crd: str = "collectionschedules.thresher.dev", timeout: float = 60) -> None:
    """Poll the CRD's Established condition. Not `kubectl wait --for=condition=Established`:
    right after an apply the CRD may have no conditions yet, and kubectl then fails at once
    instead of waiting (seen as setup errors of the fault tests on a loaded machine)."""
    eventually(lambda: cluster.kubectl(
        "get", f"crd/{crd}", "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}',
        check=False).stdout.strip() == "True", timeout=timeout, message=f"CRD {crd} Established")


@pytest.fixture
def namespace(cluster, request):
    """A fresh namespace per test; custom resources go first so finalizers never block it."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{NAMESPACE_PREFIX}{stem}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False)
               .returncode == 0, timeout=30, message=f"default ServiceAccount in {name}")
    yield name
    crds = cluster.kubectl("get", "crd", "-o", "name", check=False).stdout
    if "collectionschedules.thresher.dev" in crds:
        cluster.kubectl("delete", "collectionschedules", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def kubectl_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)
