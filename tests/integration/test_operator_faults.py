"""The operator under faults: API outages, two replicas, deletions under it, ending watches.

Tests that stop the API server or need exact counts use a private control plane
(``private_cluster``, its own state directory and ports) with their own operator processes:
the shared cluster other sessions use is never stopped, and no foreign operator touches
these objects. Deletion tests run on the shared cluster with the session's operator.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from tests.conftest import CRD_DIR, NAMESPACE_PREFIX, kubectl_json, wait_established
from tests.helpers.wait import consistently, eventually
from tests.integration.conftest import OperatorProcess
from tests.integration.test_operator import apply, get, run_now, sample, schedule, simulate, status_of

pytestmark = pytest.mark.integration

# The API outage: long enough for several failed retries of every request, short enough that
# the retry after it comes soon (kopf's backoffs grow to 13 and 21 s after 20 s).
OUTAGE_S = 10


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory):
    """A control plane of this module's own, stopped and removed at the end."""
    from thresher.devcluster.cluster import DevCluster

    # Never the real node (make test sets THRESHER_DEV_NODE=1): these Jobs are for kwok, whose CPU
    # nodes are tainted in node mode.
    dev = DevCluster(tmp_path_factory.mktemp("faults") / "cluster", node=False)
    dev.up(log=lambda m: print(f"[private cluster] {m}"))
    for path in sorted(CRD_DIR.glob("*.yaml")):
        dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    wait_established(dev)
    yield dev
    dev.down(log=lambda m: None)


@pytest.fixture
def private_namespace(private_cluster):
    name = f"{NAMESPACE_PREFIX}f-{uuid.uuid4().hex[:6]}"  # watched by OperatorProcess
    private_cluster.kubectl("create", "namespace", name)
    eventually(lambda: private_cluster.kubectl("get", "serviceaccount", "default", "-n", name,
                                               check=False).returncode == 0,
               timeout=30, message="default ServiceAccount")
    return name


@pytest.fixture
def start_operator(private_cluster, tmp_path):
    """Operators on the private cluster (``extra_args`` for `operator run`); stopped after the test.
    Cluster-wide, as the chart runs it: the cluster is this module's own, and this is the mode
    in which kopf's connections are bounded (``bounded_session``), so outages and watch restarts
    are proven on it."""
    started: list[OperatorProcess] = []

    def start(label: str = "op", *extra_args: str) -> OperatorProcess:
        op = OperatorProcess(private_cluster.kubeconfig, tmp_path / f"{label}.log", namespaces=(),
                             extra_args=("--all-namespaces", *extra_args))
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def runs_of(cluster, namespace: str, name: str) -> list[str]:
    return [r["jobName"] for r in status_of(cluster, namespace, name).get("recentRuns") or []]


def metric_total(ops: list[OperatorProcess], namespace: str, name: str) -> float:
    return sum(sample(op.metrics(), "thresher_schedule_runs_total",
                      {"namespace": namespace, "schedule": name, "outcome": "succeeded"}) or 0
               for op in ops)


def ready(cluster, namespace: str, name: str) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in status_of(cluster, namespace, name).get("conditions") or [])


def error_lines(op: OperatorProcess, needle: str) -> int:
    text = op.log_path.read_text(errors="replace") if op.log_path.exists() else ""
    return sum(1 for line in text.splitlines() if '"level": "error"' in line and needle in line)


# --- private cluster -------------------------------------------------------------------------


def test_two_replicas_record_each_run_once(private_cluster, private_namespace, start_operator):
    """Two operators at once (a rollout overlap, a mistaken replicas: 2): a burst of runs is
    recorded exactly once in status and counted exactly once across both /metrics, because status
    writes are compare-and-swap on resourceVersion and records dedupe by Job name."""
    cluster, ns = private_cluster, private_namespace
    ops = [start_operator("a"), start_operator("b")]
    names = [f"twin-{i}" for i in range(12)]
    apply(cluster, ns, "---\n".join(schedule(n) for n in names))
    for name in names:
        simulate(cluster, ns, name, message={"jobType": "container", "succeeded": True, "items": 1})
    for name in names:
        run_now(cluster, ns, name)
    for name in names:
        eventually(lambda: runs_of(cluster, ns, name), timeout=90, message=f"run of {name} recorded")
    for name in names:
        assert len(runs_of(cluster, ns, name)) == 1, status_of(cluster, ns, name)
        assert status_of(cluster, ns, name)["stats"]["runs"] == 1
    eventually(lambda: all(metric_total(ops, ns, n) == 1 for n in names), timeout=30,
               message="each run counted once across both replicas")
    cronjobs = kubectl_json(cluster, "get", "cronjobs", "-n", ns)["items"]
    assert sorted(c["metadata"]["name"] for c in cronjobs) == sorted(names)
    assert all(op.healthy() for op in ops)


def test_ending_watch_streams_do_not_leave_the_operator_deaf(private_cluster, private_namespace,
                                                            start_operator):
    """With a 2-second server-side watch timeout every stream ends and is reopened many times;
    creations, hand edits and finished runs are still handled afterwards (kopf resumes from the
    last resourceVersion). The API server's own WATCH counter proves the streams restarted."""
    cluster, ns = private_cluster, private_namespace
    op = start_operator("short-watch", "--watch-timeout", "2")
    before = watch_requests(cluster)
    apply(cluster, ns, schedule("early"))
    eventually(lambda: ready(cluster, ns, "early"), timeout=30, message="first schedule Ready")
    eventually(lambda: watch_requests(cluster) >= before + 3, timeout=30, interval=1,
               message="watch streams of schedules ended and reopened at least 3 times")
    apply(cluster, ns, schedule("late", cron="15 * * * *"))
    eventually(lambda: ready(cluster, ns, "late"), timeout=30, message="schedule created after restarts")
    cluster.kubectl("patch", "cronjob", "late", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"schedule": "0 0 * * *"}}))
    eventually(lambda: get(cluster, ns, "cronjob", "late")["spec"]["schedule"] == "15 * * * *",
               timeout=30, message="hand edit reverted through the restarted CronJob watch")
    run_now(cluster, ns, "late")
    eventually(lambda: runs_of(cluster, ns, "late"), timeout=60, message="run recorded through the Job watch")
    assert op.healthy()


def watch_requests(cluster) -> float:
    """WATCH requests the API server finished for collectionschedules (its own metric)."""
    status, body = cluster.api_get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if (line.startswith("apiserver_request_total{") and 'verb="WATCH"' in line
                and 'resource="collectionschedules"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_api_outage_operator_reconnects_and_converges(private_cluster, private_namespace, start_operator):
    """etcd and the API server are killed for ~10 s (plus their restart) while schedules are being
    created and runs finish. The same operator process (no restart) rides out kopf's first retries
    of every watch and write (1, 1, 2, 3, 5, 8 s apart), reconnects and converges: every schedule
    gets its CronJob and Ready, every run is recorded exactly once, and new work is handled after.
    (A 30 s outage only added time: the next retry after it came 21 s later.)"""
    cluster, ns = private_cluster, private_namespace
    op = start_operator("outage")
    pid = op.proc.pid
    first = [f"pre-{i}" for i in range(6)]
    apply(cluster, ns, "---\n".join(schedule(n) for n in first))
    for name in first:
        simulate(cluster, ns, name, duration="4s",
                 message={"jobType": "container", "succeeded": True, "items": 1})
    for name in first:
        run_now(cluster, ns, name)
    eventually(lambda: len(kubectl_json(cluster, "get", "jobs", "-n", ns)["items"]) == len(first),
               timeout=30, message="runs started")
    racing = [f"race-{i}" for i in range(6)]
    apply(cluster, ns, "---\n".join(schedule(n) for n in racing))  # stored; handled or not yet
    for component in ("kube-apiserver", "etcd"):
        os.kill(cluster.components()[component].pid, signal.SIGKILL)
    time.sleep(OUTAGE_S)  # deliberate fault timing: the outage lasts this long
    assert op.proc.poll() is None, f"operator died during the outage:\n{op.log_tail()}"
    cluster.up(log=lambda m: print(f"[private cluster] {m}"))

    for name in first + racing:
        eventually(lambda: ready(cluster, ns, name) and get(cluster, ns, "cronjob", name), timeout=120,
                   message=f"{name} Ready with a CronJob after the outage")
    for name in first:
        eventually(lambda: runs_of(cluster, ns, name), timeout=120, message=f"run of {name} recorded")
        assert len(runs_of(cluster, ns, name)) == 1
    apply(cluster, ns, schedule("after"))
    eventually(lambda: ready(cluster, ns, "after"), timeout=60, message="schedule created after the outage")
    assert op.proc.pid == pid and op.healthy(), "the operator was restarted"


# --- shared cluster, session operator --------------------------------------------------------


def test_schedule_deleted_while_its_job_runs(cluster, namespace, operator):
    """Deleting a schedule mid-run cascades to CronJob, Job and Pod; the late Job events find no
    schedule and are dropped quietly (no error loop), and the schedule's series leave /metrics."""
    apply(cluster, namespace, schedule("midrun"))
    simulate(cluster, namespace, "midrun", duration="20s")
    run_now(cluster, namespace, "midrun")
    eventually(lambda: any((j.get("status") or {}).get("active")
                           for j in kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"]),
               timeout=60, message="the run is active")
    mine = {"namespace": namespace, "schedule": "midrun"}
    eventually(lambda: sample(operator.metrics(), "thresher_schedule_active_runs", mine) is not None,
               timeout=90, message="schedule series exported")
    cluster.kubectl("delete", "collectionschedule", "midrun", "-n", namespace)
    eventually(lambda: not kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"], timeout=60,
               message="Job garbage-collected")
    eventually(lambda: 'schedule="midrun"' not in "\n".join(_lines_of(operator.metrics(), namespace)), timeout=30,
               message="metrics forget the schedule")
    consistently(lambda: error_lines(operator, namespace) == 0, duration=3,
                 message="no operator errors about the deleted schedule")


def test_namespace_deleted_with_schedules_in_it(cluster, crd, operator):
    """A namespace deleted with schedules (and a finished run) in it: it goes away (no finalizer
    of ours holds it), metrics forget every schedule in it, the operator logs no error loop."""
    ns = f"{NAMESPACE_PREFIX}nsdel-{uuid.uuid4().hex[:5]}"  # watched by the session's operator
    cluster.kubectl("create", "namespace", ns)
    try:
        eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns,
                                           check=False).returncode == 0, timeout=30, message="ServiceAccount")
        names = ["gone-a", "gone-b", "gone-c"]
        apply(cluster, ns, "---\n".join(schedule(n) for n in names))
        run_now(cluster, ns, "gone-a")
        eventually(lambda: runs_of(cluster, ns, "gone-a"), timeout=60, message="a run recorded")
        eventually(lambda: all(f'schedule="{n}"' in "\n".join(_lines_of(operator.metrics(), ns)) for n in names),
                   timeout=30, message="series of every schedule")
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        eventually(lambda: cluster.kubectl("get", "namespace", ns, check=False).returncode != 0, timeout=90,
                   message="namespace gone")
        eventually(lambda: not _lines_of(operator.metrics(), ns), timeout=30,
                   message="metrics forget the namespace's schedules")
        errors_then = error_lines(operator, ns)
        consistently(lambda: error_lines(operator, ns) == errors_then, duration=5,
                     message="no error loop about the deleted namespace")
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _lines_of(metrics_text: str, namespace: str) -> list[str]:
    return [line for line in metrics_text.splitlines()
            if line.startswith("thresher_schedule") and f'namespace="{namespace}"' in line]
