"""The blocked-run classifier (issue 13): Job, Pods, Events, Nodes and PVCs in, status.active out.

The bug it pins: a run whose image could not be pulled, whose Secret was missing, whose
PriorityClass did not exist or whose node died showed Ready=True and nothing else until
timeoutSeconds (or forever). Objects here have the shapes and the exact messages Kubernetes
v1.34 writes (sources named in thresher/operator/activeruns.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from thresher.api import crd
from thresher.api.activerun import BLOCKED_REASONS, MAX_ACTIVE_MESSAGE, ActiveRun
from thresher.operator.activeruns import (
    Grace, active_run, blocked_counts, run_blocked_condition, startup_verdict,
)

NS, JOB = "team", "daily-29400000"
T0 = datetime(2026, 12, 1, 3, 0, 0, tzinfo=timezone.utc)
GRACE = Grace(unschedulable_seconds=60, node_not_ready_seconds=0)
IMAGE = "docker.io/library/does-not-exist:1"
PULL_ERROR = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{IMAGE}": failed to resolve '
              f'reference "{IMAGE}": pull access denied, repository does not exist or may require authorization: '
              "server message: insufficient_scope: authorization failed")


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(**status) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": JOB, "namespace": NS, "uid": "job-uid", "creationTimestamp": ts(0),
                         "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-12-01T03:00:00Z"}},
            "status": {"startTime": ts(0), "active": 1, **status}}


def pod(name: str = f"{JOB}-x7k2p", *, node: str | None = "thresher-local", phase: str = "Pending",
        waiting: dict | None = None, running: bool = False, conditions: list[dict] | None = None,
        claims: tuple[str, ...] = (), created: float = 1) -> dict:
    state = {"running": {"startedAt": ts(5)}} if running else {"waiting": waiting or {"reason": "ContainerCreating"}}
    spec: dict = {"containers": [{"name": "job", "image": IMAGE}],
                  "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]}
    if node:
        spec["nodeName"] = node
    status: dict = {"phase": phase, "conditions": conditions or []}
    if node:
        status["startTime"] = ts(created + 1)
        status["containerStatuses"] = [{"name": "job", "image": IMAGE, "imageID": "", "ready": running,
                                        "restartCount": 0, "started": running, "state": state}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": ts(created),
                         "labels": {"batch.kubernetes.io/job-name": JOB}},
            "spec": spec, "status": status}


def event(kind: str, name: str, reason: str, message: str, first: float, last: float | None = None,
          type_: str = "Warning") -> dict:
    """A core/v1 Event as client-go's recorder writes it."""
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{reason}", "namespace": NS, "creationTimestamp": ts(first)},
            "involvedObject": {"kind": kind, "name": name, "namespace": NS, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": ts(first), "lastTimestamp": ts(last if last is not None else first)}


def node(name: str = "thresher-local", ready: str = "True", since: float = -3600, message: str = "") -> dict:
    reason = {"True": "KubeletReady", "False": "KubeletNotReady", "Unknown": "NodeStatusUnknown"}[ready]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                                       "lastHeartbeatTime": ts(since), "lastTransitionTime": ts(since)}]}}


def pvc(name: str, phase: str = "Bound") -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS},
            "status": {"phase": phase}}


def classify(pods=(), events=(), nodes=(node(),), pvcs=(), *, at: float = 30, the_job: dict | None = None):
    return active_run(the_job or job(), list(pods), list(events), list(nodes), list(pvcs), GRACE,
                      T0 + timedelta(seconds=at))


def unschedulable(message: str, since: float = 2) -> list[dict]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
             "lastTransitionTime": ts(since)}]


# --- not blocked --------------------------------------------------------------------------------

def test_a_finished_job_has_no_entry():
    done = job(conditions=[{"type": "Complete", "status": "True"}], active=0)
    assert classify(the_job=done) is None


def test_no_pod_yet_is_pending_with_the_run_times():
    entry = classify()
    assert entry.phase == "Pending" and entry.node is None and entry.reason is None
    assert entry.scheduled_time == T0 and entry.start_time == T0
    assert entry.model_dump(mode="json", exclude_none=True) == {
        "name": JOB, "scheduledTime": "2026-12-01T03:00:00Z", "startTime": "2026-12-01T03:00:00Z", "phase": "Pending"}


def test_a_slow_pull_is_pending_not_blocked():
    """A 20 s pull is ContainerCreating with a Pulling event: never blocked, never alerts."""
    pulling = event("Pod", f"{JOB}-x7k2p", "Pulling", f'Pulling image "{IMAGE}"', 2, type_="Normal")
    entry = classify([pod()], [pulling], at=22)
    assert (entry.phase, entry.node, entry.reason) == ("Pending", "thresher-local", None)


def test_a_running_pod_on_a_ready_node_is_running():
    entry = classify([pod(phase="Running", running=True)])
    assert (entry.phase, entry.node, entry.reason) == ("Running", "thresher-local", None)


def test_the_current_attempt_decides_not_an_earlier_failed_pod():
    failed = pod(f"{JOB}-old", phase="Failed", waiting={"reason": "ErrImagePull", "message": PULL_ERROR}, created=1)
    current = pod(f"{JOB}-new", phase="Running", running=True, created=20)
    assert classify([current, failed]).phase == "Running"


# --- image ------------------------------------------------------------------------------------------

def test_err_image_pull_and_the_back_off_give_one_stable_message_with_the_registrys_words():
    """ErrImagePull and ImagePullBackOff alternate every back-off; the condition must not flap."""
    failed_pull = event("Pod", f"{JOB}-x7k2p", "Failed", f'Failed to pull image "{IMAGE}": {PULL_ERROR}', 3, 25)
    err = classify([pod(waiting={"reason": "ErrImagePull", "message": PULL_ERROR})], [failed_pull])
    backoff = classify([pod(waiting={"reason": "ImagePullBackOff",
                                     "message": f'Back-off pulling image "{IMAGE}": ErrImagePull: {PULL_ERROR}'})],
                       [failed_pull])
    assert err == backoff
    assert err.phase == "Blocked" and err.reason == "ImagePullBackOff" and err.node == "thresher-local"
    assert err.message == (f'image "{IMAGE}" cannot be pulled (container job): failed to pull and unpack image '
                           f'"{IMAGE}": failed to resolve reference "{IMAGE}": pull access denied, repository does '
                           "not exist or may require authorization: server message: insufficient_scope: "
                           "authorization failed")
    assert err.blocked_since == T0 + timedelta(seconds=3), "from the first failed pull"


def test_an_older_kubelets_back_off_message_takes_the_error_from_the_last_failed_pull_event():
    events = [event("Pod", f"{JOB}-x7k2p", "Failed", f'Failed to pull image "{IMAGE}": {PULL_ERROR}', 3, 20),
              event("Pod", f"{JOB}-x7k2p", "BackOff", f'Back-off pulling image "{IMAGE}"', 4, 26, type_="Normal")]
    entry = classify([pod(waiting={"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{IMAGE}"'})],
                     events)
    assert entry.reason == "ImagePullBackOff" and "pull access denied" in entry.message
    assert "rpc error" not in entry.message


def test_registry_unavailable_is_an_image_pull_problem():
    message = f"image pull failed for {IMAGE} because the registry is unavailable: dial tcp 127.0.0.1:5000: connect: connection refused"
    entry = classify([pod(waiting={"reason": "RegistryUnavailable", "message": message})])
    assert entry.reason == "ImagePullBackOff" and "registry is unavailable" in entry.message


def test_invalid_image_name_says_which_image():
    bad = "Not_Valid:1"
    message = (f'Failed to apply default image tag "{bad}": couldn\'t parse image name "{bad}": invalid '
               "reference format: repository name (library/Not_Valid) must be lowercase")
    p = pod(waiting={"reason": "InvalidImageName", "message": message})
    p["status"]["containerStatuses"][0]["image"] = bad
    entry = classify([p])
    assert entry.reason == "InvalidImageName"
    assert entry.message == (f'image "{bad}" is not a valid image reference (container job): couldn\'t parse image '
                             f'name "{bad}": invalid reference format: repository name (library/Not_Valid) must be '
                             "lowercase")


# --- container config --------------------------------------------------------------------------

@pytest.mark.parametrize("kubelet, expected", [
    ('secret "tmdb-api" not found', 'Secret "tmdb-api" does not exist in namespace team'),
    ('secrets "tmdb-api" not found', 'Secret "tmdb-api" does not exist in namespace team'),  # API-backed cache
    ("couldn't find key api-key in Secret team/tmdb-api", 'Secret "tmdb-api" in namespace team has no key "api-key"'),
    ('configmap "settings" not found', 'ConfigMap "settings" does not exist in namespace team'),
    ("couldn't find key region in ConfigMap team/settings", 'ConfigMap "settings" in namespace team has no key "region"'),
    ("failed to sync secret cache: timed out waiting for the condition",
     "failed to sync secret cache: timed out waiting for the condition"),
])
def test_create_container_config_error_says_which_secret_configmap_or_key(kubelet, expected):
    error = event("Pod", f"{JOB}-x7k2p", "Failed", f"Error: {kubelet}", 4, 28)
    entry = classify([pod(waiting={"reason": "CreateContainerConfigError", "message": kubelet})], [error])
    assert entry.reason == "CreateContainerConfigError"
    assert entry.message == f"container job cannot start: {expected}"
    assert entry.blocked_since == T0 + timedelta(seconds=4)


def test_create_container_error_carries_the_runtimes_message():
    runtime = ('rpc error: code = Unknown desc = failed to generate container spec: failed to apply OCI options: '
               'failed to mkdir "/data/missing": mkdir /data/missing: permission denied')
    entry = classify([pod(waiting={"reason": "CreateContainerError", "message": runtime})])
    assert entry.reason == "CreateContainerError" and entry.message.startswith(
        "container job could not be created: failed to generate container spec")


# --- scheduling and volumes ------------------------------------------------------------------

GPU_MESSAGE = ("0/4 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
               "3 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: 1 Preemption is not helpful "
               "for scheduling, 3 No preemption victims found for incoming pod.")


def test_unschedulable_is_pending_within_the_grace_and_blocked_after_with_the_schedulers_reason():
    p = pod(node=None, conditions=unschedulable(GPU_MESSAGE, since=2))
    assert classify([p], at=61).phase == "Pending"
    entry = classify([p], at=62)
    assert entry.phase == "Blocked" and entry.reason == "Unschedulable" and entry.node is None
    assert entry.message == ("no node can run the pod: 0/4 nodes are available: 1 node(s) had untolerated taint "
                             "{node.kubernetes.io/not-ready: }, 3 Insufficient nvidia.com/gpu.")
    assert entry.blocked_since == T0 + timedelta(seconds=2)


def test_the_dra_note_of_v1_34_is_not_part_of_the_reason():
    """Seen on the control plane: the scheduler's message ends in "no new claims to deallocate,"
    before the preemption part; the entry ended in that dangling note."""
    message = ("0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node "
               "affinity/selector. no new claims to deallocate, preemption: 0/3 nodes are available: "
               "3 Preemption is not helpful for scheduling.")
    entry = classify([pod(node=None, conditions=unschedulable(message, since=2))], at=62)
    assert entry.message == ("no node can run the pod: 0/3 nodes are available: 1 Insufficient nvidia.com/gpu, "
                             "2 node(s) didn't match Pod's node affinity/selector.")


def test_a_missing_pvc_blocks_at_once():
    message = ('0/3 nodes are available: persistentvolumeclaim "drone-data" not found. preemption: 0/3 nodes are '
               "available: 3 Preemption is not helpful for scheduling.")
    entry = classify([pod(node=None, claims=("drone-data",), conditions=unschedulable(message))], at=5)
    assert entry.reason == "UnboundPVC"
    assert entry.message == 'PersistentVolumeClaim "drone-data" does not exist in namespace team'


def test_a_pending_pvc_blocks_after_the_grace():
    message = ("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes "
               "are available: 3 Preemption is not helpful for scheduling.")
    p = pod(node=None, claims=("drone-data",), conditions=unschedulable(message))
    assert classify([p], [], pvcs=[pvc("drone-data", "Pending")], at=30).phase == "Pending"
    entry = classify([p], [], pvcs=[pvc("drone-data", "Pending")], at=90)
    assert entry.reason == "UnboundPVC"
    assert entry.message == ('PersistentVolumeClaim "drone-data" is Pending, not bound to a volume: 0/3 nodes are '
                             "available: pod has unbound immediate PersistentVolumeClaims.")


def test_a_bound_pvc_and_a_scheduled_pod_are_fine():
    entry = classify([pod(claims=("drone-data",), phase="Running", running=True)], pvcs=[pvc("drone-data")])
    assert entry.phase == "Running"


# --- the Job controller -------------------------------------------------------------------

PRIORITY = 'Error creating: pods "daily-29400000-" is forbidden: no PriorityClass with name does-not-exist was found'
QUOTA = ('Error creating: pods "daily-29400000-" is forbidden: exceeded quota: compute, requested: pods=1, '
         "used: pods=2, limited: pods=2")
PSA = ('Error creating: pods "daily-29400000-" is forbidden: violates PodSecurity "restricted:latest": '
       'allowPrivilegeEscalation != false (container "job" must set securityContext.allowPrivilegeEscalation=false)')


@pytest.mark.parametrize("message", [PRIORITY, QUOTA, PSA])
def test_failed_create_carries_the_admission_message(message):
    entry = classify([], [event("Job", JOB, "FailedCreate", message, 1, 25)], the_job=job(active=0))
    assert entry.phase == "Blocked" and entry.reason == "FailedCreate" and entry.node is None
    assert entry.message == "the Job controller cannot create the pod: " + message.removeprefix("Error creating: ")
    assert entry.blocked_since == T0 + timedelta(seconds=1)


def test_failed_create_in_the_events_k8s_io_shape():
    new_style = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": NS},
                 "regarding": {"kind": "Job", "name": JOB, "namespace": NS}, "reason": "FailedCreate",
                 "note": PRIORITY, "type": "Warning", "eventTime": ts(1) + "",
                 "series": {"count": 4, "lastObservedTime": ts(25)}}
    entry = classify([], [new_style], the_job=job(active=0))
    assert entry.reason == "FailedCreate" and "no PriorityClass with name does-not-exist" in entry.message


def test_a_failed_create_before_the_pod_was_created_is_history():
    events = [event("Job", JOB, "FailedCreate", QUOTA, 1, 5),
              event("Job", JOB, "SuccessfulCreate", f"Created pod: {JOB}-x7k2p", 10, type_="Normal")]
    assert classify([], events, the_job=job(active=0)).phase == "Pending"
    assert classify([pod(phase="Running", running=True)], events).phase == "Running"


def test_another_jobs_failed_create_is_not_this_ones():
    other = event("Job", "other-1", "FailedCreate", PRIORITY, 1)
    assert classify([], [other], the_job=job(active=0)).phase == "Pending"


# --- nodes -------------------------------------------------------------------------------------

def test_a_running_pod_on_an_unreachable_node_is_node_lost():
    """The kubelet killed mid-run: the node goes Unknown and the pod stays Running forever."""
    lost = node(ready="Unknown", since=20, message="Kubelet stopped posting node status.")
    entry = classify([pod(phase="Running", running=True)], nodes=[lost], at=70)
    assert entry.phase == "Blocked" and entry.reason == "NodeLost" and entry.node == "thresher-local"
    assert entry.message == ('node "thresher-local" is unreachable (Kubelet stopped posting node status.); the pod '
                             "cannot run or report its end")
    assert entry.blocked_since == T0 + timedelta(seconds=20)


def test_a_not_ready_node_and_a_deleted_node():
    down = node(ready="False", since=10, message="container runtime network not ready: NetworkReady=false")
    entry = classify([pod(phase="Running", running=True)], nodes=[down])
    assert entry.reason == "NodeLost" and 'is NotReady (container runtime network not ready' in entry.message
    ready_false = [{"type": "Ready", "status": "False", "lastTransitionTime": ts(15)}]
    gone = classify([pod(phase="Running", running=True, conditions=ready_false)], nodes=[])
    assert gone.reason == "NodeLost" and gone.message.startswith('node "thresher-local" no longer exists')
    assert gone.blocked_since == T0 + timedelta(seconds=15)


def test_node_grace_delays_node_lost():
    lost = node(ready="Unknown", since=20)
    p = pod(phase="Running", running=True)
    patient = Grace(node_not_ready_seconds=60)
    assert active_run(job(), [p], [], [lost], [], patient, T0 + timedelta(seconds=79)).phase == "Running"
    assert active_run(job(), [p], [], [lost], [], patient, T0 + timedelta(seconds=80)).reason == "NodeLost"


# --- message bounds and the model ------------------------------------------------------------

def test_messages_are_one_bounded_line():
    huge = "line one\nline two " + "x" * 5000
    entry = classify([pod(waiting={"reason": "CreateContainerError", "message": huge})])
    assert "\n" not in entry.message and len(entry.message) == MAX_ACTIVE_MESSAGE and entry.message.endswith("…")


def test_reason_is_set_exactly_when_blocked_in_python_and_in_the_crd():
    with pytest.raises(ValidationError):
        ActiveRun(name="j", phase="Blocked")
    with pytest.raises(ValidationError):
        ActiveRun(name="j", phase="Running", reason="NodeLost")
    with pytest.raises(ValidationError):
        ActiveRun(name="j", phase="Blocked", reason="SomethingElse")
    schema = crd.model_schema(ActiveRun)
    assert schema["properties"]["reason"]["enum"] == list(BLOCKED_REASONS)
    assert schema["x-kubernetes-validations"][0]["rule"] == "(self.phase == 'Blocked') == has(self.reason)"
    assert all(p.get("description") for p in schema["properties"].values()), "kubectl explain needs every field"


# --- decisions ------------------------------------------------------------------------------------

def blocked(reason: str = "ImagePullBackOff", since: float = 0, name: str = JOB) -> ActiveRun:
    return ActiveRun(name=name, phase="Blocked", reason=reason, message="why", blockedSince=T0 + timedelta(seconds=since))


def test_startup_verdict_ends_a_run_blocked_longer_than_the_timeout():
    assert startup_verdict(blocked(), 300, T0 + timedelta(seconds=299)) is None
    verdict = startup_verdict(blocked(), 300, T0 + timedelta(seconds=300))
    assert verdict.outcome == "FailedToStart" and verdict.reason == "ImagePullBackOff" and verdict.job_name == JOB
    assert verdict.message == "blocked for 0:05:00 (ImagePullBackOff), longer than startupTimeoutSeconds=300: why"
    assert startup_verdict(blocked("NodeLost"), 300, T0 + timedelta(seconds=400)).outcome == "NodeLost"


def test_startup_verdict_leaves_running_pending_and_disabled_alone():
    later = T0 + timedelta(days=1)
    assert startup_verdict(ActiveRun(name="j", phase="Running"), 300, later) is None
    assert startup_verdict(ActiveRun(name="j", phase="Pending"), 300, later) is None
    assert startup_verdict(blocked(), None, later) is None and startup_verdict(blocked(), 0, later) is None


def test_run_blocked_condition_and_gauge_counts():
    assert run_blocked_condition([ActiveRun(name="j", phase="Running")]) == (False, "NoRunBlocked",
                                                                             "no active run is blocked")
    entries = [blocked("NodeLost", since=50, name="b"), blocked("FailedCreate", since=10, name="a"),
               ActiveRun(name="c", phase="Pending")]
    assert run_blocked_condition(entries) == (True, "FailedCreate", "run a: why (and 1 more blocked)")
    counts = blocked_counts(entries)
    assert set(counts) == set(BLOCKED_REASONS) and counts["NodeLost"] == counts["FailedCreate"] == 1
    assert sum(counts.values()) == 2
