"""Two operator replicas with leader election: who holds the Lease, who recorded which run, and
the takeover measurement shared by the local-process test (tests/integration/test_operator_ha.py)
and the pod test on the real node (tests/realnode/test_operator_pod.py)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from tests.helpers.wait import eventually
from thresher.devcluster.operator_pods import holder_instance, lease_holder, metric_sum  # noqa: F401 (the demo uses them too)


def run_events(cluster, namespace: str) -> list[dict]:
    """Thresher's RunSucceeded/RunFailed Events in the namespace: one per run recorded."""
    items = json.loads(cluster.kubectl("get", "events.events.k8s.io", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in items if e.get("reason") in ("RunSucceeded", "RunFailed")]


def recorded_by(cluster, namespace: str) -> Counter:
    """Runs recorded per replica (the Events' reportingInstance)."""
    return Counter(e.get("reportingInstance") for e in run_events(cluster, namespace))


def measure_takeover(cluster, namespace: str, lease: str, old: str, stop: Callable[[], None],
                     timeout: float = 60) -> float:
    """Call ``stop`` (kill or delete the leader ``old``), then poll the Lease until another
    instance holds it; seconds from the call to the new holder."""
    start = time.monotonic()
    stop()
    new = eventually(lambda: (h := holder_instance(lease_holder(cluster, namespace, lease))) not in (None, old) and h,
                     timeout=timeout, interval=0.1, message=f"a new holder of Lease {lease} after {old}")
    took = time.monotonic() - start
    print(f"[ha] {old} -> {new}: {took:.1f}s")
    return took


def has_series(text: str, prefix: str) -> bool:
    return any(line.startswith(prefix) for line in text.splitlines())
