"""Two operator processes with leader election (``--leader-elect``) on the real local control
plane: one leads, the standby writes nothing, and when the leader dies during a burst of run
completions (SIGKILL: the Lease must expire; SIGTERM, what a pod deletion sends: it is
released) the standby takes over within 30 s and every run is recorded exactly once.

The replicas are local processes here (the pod path is tests/realnode/test_operator_pod.py);
each watches only its test's namespace, away from the session operator's ``t-<tag>-*``."""

from __future__ import annotations

import json
import signal
import urllib.request
import uuid

import pytest

from tests.conftest import SESSION_TAG
from tests.helpers.burst import assert_each_run_recorded_once, start_burst
from tests.helpers.ha import has_series, holder_instance, lease_holder, measure_takeover, metric_sum, recorded_by
from tests.helpers.wait import eventually
from tests.integration.conftest import OperatorProcess
from tests.integration.test_operator import apply, run_now, schedule, simulate, status_of

pytestmark = pytest.mark.integration

LEASE = "thresher-ha"
TAKEOVER_LIMIT_S = 30


@pytest.fixture
def ha_namespace(cluster, crd):
    name = f"ha-{SESSION_TAG}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "collectionschedules", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def pair(cluster, ha_namespace, tmp_path):
    """op-a, started first and leading; op-b, its standby."""
    ops = {name: OperatorProcess(
        cluster.kubeconfig, tmp_path / f"{name}.log", namespaces=(ha_namespace,),
        extra_args=("--leader-elect", "--leader-elect-resource-namespace", ha_namespace,
                    "--leader-elect-resource-name", LEASE, "--log-format", "plain"),
        env={"POD_NAME": name}) for name in ("op-a", "op-b")}
    ops["op-a"].start()
    eventually(lambda: holder_instance(lease_holder(cluster, ha_namespace, LEASE)) == "op-a", timeout=30,
               message="op-a holding the Lease")
    ops["op-b"].start()
    yield ops
    for op in ops.values():
        op.stop()


def healthz(op: OperatorProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}


def test_one_leader_and_a_standby_that_writes_nothing(cluster, ha_namespace, pair):
    """The standby answers its liveness probe as a standby, exposes leader 0 and no schedule
    series; only the leader reconciles (every Event is the leader's)."""
    a, b = pair["op-a"], pair["op-b"]
    apply(cluster, ha_namespace, schedule("single"))
    eventually(lambda: (status_of(cluster, ha_namespace, "single").get("cronJobRef") or {}).get("name"),
               timeout=30, message="schedule reconciled")
    simulate(cluster, ha_namespace, "single")
    run_now(cluster, ha_namespace, "single")
    eventually(lambda: recorded_by(cluster, ha_namespace) == {"op-a": 1}, timeout=60, message="run recorded by op-a")
    assert metric_sum(a.metrics(), "thresher_operator_leader") == 1
    assert metric_sum(b.metrics(), "thresher_operator_leader") == 0
    assert has_series(a.metrics(), "thresher_schedule_runs_total")
    assert not has_series(b.metrics(), "thresher_schedule_"), "the standby must not export schedule series"
    assert healthz(b) == (200, {"role": "standby", "leader": lease_holder(cluster, ha_namespace, LEASE)})
    assert holder_instance(lease_holder(cluster, ha_namespace, LEASE)) == "op-a"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_leader_dies_during_a_completion_burst_standby_takes_over(cluster, ha_namespace, pair, sig):
    """Kill the leader while runs finish: the standby holds the Lease within 30 s (SIGKILL:
    after the 15 s lease; SIGTERM: released at once), each run is recorded once (one status
    entry, one Event, by whichever replica recorded it), every Job is marked recorded, and the
    new leader's metrics count exactly the runs it recorded and carry every schedule's gauges."""
    a, b = pair["op-a"], pair["op-b"]
    names = start_burst(cluster, ha_namespace)

    took = measure_takeover(cluster, ha_namespace, LEASE, "op-a", lambda: a.kill(sig))
    assert took < TAKEOVER_LIMIT_S, f"takeover took {took:.1f}s"
    eventually(lambda: healthz(b)[0] == 200 and healthz(b)[1].get("role") != "standby", timeout=30,
               message="op-b serving kopf's liveness as the leader")

    assert_each_run_recorded_once(cluster, ha_namespace, names)
    by = eventually(lambda: (c := recorded_by(cluster, ha_namespace)) and sum(c.values()) == len(names) and c,
                    timeout=30, message="one run Event per run")
    assert set(by) <= {"op-a", "op-b"} and by["op-a"] >= 1, by
    # The new leader counts exactly what it recorded, and carries every schedule's gauges.
    text = b.metrics()
    assert metric_sum(text, "thresher_operator_leader") == 1
    assert metric_sum(text, "thresher_schedule_runs_total", namespace=ha_namespace) == by["op-b"]
    for name in names:
        assert metric_sum(text, "thresher_schedule_consecutive_failures", namespace=ha_namespace, schedule=name) == 0
        assert metric_sum(text, "thresher_schedule_last_success_timestamp_seconds",
                          namespace=ha_namespace, schedule=name) > 0, name

    a.start()  # back as the standby
    assert healthz(a)[1].get("role") == "standby"
    assert metric_sum(a.metrics(), "thresher_operator_leader") == 0
    assert holder_instance(lease_holder(cluster, ha_namespace, LEASE)) == "op-b"
