"""Issue 13 phase 2: unfinished runs -> status.active, RunBlocked, startupTimeoutSeconds.

Pins the bug of issue 13: a run that could not start (bad image, missing Secret or
PriorityClass, no node) showed nothing on the schedule (Ready=True, no active run) until
timeoutSeconds, and was then recorded as TimedOut with the Job controller's words. The pure
step and the reconciler around it are tested here with real-shaped objects and a fake API
that counts calls (the API budget of issue 19: no reads for a schedule without an unfinished
Job, Events only for a run without a running pod for a few seconds).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from thresher.api.activerun import ActiveRun
from thresher.api.names import MANAGED_BY, MANAGED_BY_VALUE, SCHEDULE_LABEL, STARTUP_VERDICT_ANNOTATION
from thresher.api.schedule import parse_schedule
from thresher.operator import desired_status as ds
from thresher.operator import activeruns, runs
from thresher.operator.caches import FireTimes
from thresher.operator.metrics import OperatorMetrics
from thresher.operator.reconciler import EVENTS_READS, RECHECK, Reconciler

NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=timezone.utc)
CRONJOB = {"metadata": {"name": "s", "namespace": "ns", "uid": "cj"}, "status": {}}


def body(status: dict | None = None, **spec) -> dict:
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": "2026-11-22T11:30:00Z"},
            "spec": {"schedule": "0 * * * *", "job": {"container": {"image": "busybox:1.36"}}, **spec},
            "status": status or {}}


def blocked(name: str = "s-1", since: datetime = NOW - timedelta(seconds=30)) -> ActiveRun:
    return ActiveRun(name=name, phase="Blocked", reason="FailedCreate", blockedSince=since,
                     message="the Job controller cannot create the pod: no PriorityClass with name x was found")


def step(current: dict, now: datetime = NOW, **observed) -> ds.Desired:
    observed.setdefault("cronjob", CRONJOB)
    return ds.desired_status(current, parse_schedule(current), ds.Observed(**observed), now, FireTimes())


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


# --- the pure step ---------------------------------------------------------------------------

def test_a_blocked_run_is_listed_with_the_condition_the_event_and_the_gauge_counts():
    first = step(body(), active=(blocked(),))
    assert first.patch["active"][0]["phase"] == "Blocked" and first.patch["active"][0]["reason"] == "FailedCreate"
    assert conditions(first.patch)["RunBlocked"] == ("True", "FailedCreate")
    assert [e.name for e in first.started] == ["s-1"]
    assert first.newly_blocked is not None and first.newly_blocked.message.startswith("run s-1: the Job controller")
    assert first.state.blocked["FailedCreate"] == 1 and first.state.blocked["NodeLost"] == 0
    # Stored, then the same observation again (a restarted operator included): no write, no Event.
    again = step(body(first.patch), active=(blocked(),))
    assert again.patch == {} and again.started == () and again.newly_blocked is None


def test_the_condition_clears_and_the_list_empties_when_the_run_moves_on():
    stored = step(body(), active=(blocked(),)).patch
    running = ActiveRun(name="s-1", phase="Running", node="n1")
    moved = step(body(stored), active=(running,))
    assert conditions(moved.patch)["RunBlocked"] == ("False", "NoRunBlocked")
    assert moved.patch["active"] == [{"name": "s-1", "phase": "Running", "node": "n1"}]
    assert moved.started == () and moved.newly_blocked is None and moved.state.blocked["FailedCreate"] == 0
    ended = step(body({**stored, **moved.patch}))
    assert ended.patch["active"] == []  # a merge patch must clear the list, not leave it


def test_active_runs_are_listed_oldest_first():
    older = ActiveRun(name="s-b", phase="Pending", scheduledTime=NOW - timedelta(hours=2))
    newer = ActiveRun(name="s-a", phase="Running", scheduledTime=NOW - timedelta(hours=1))
    assert [e["name"] for e in step(body(), active=(newer, older)).patch["active"]] == ["s-b", "s-a"]


def test_missing_prerequisites_are_a_condition_and_unchecked_leaves_it_alone():
    missing = step(body(), missing=['PriorityClass "x" does not exist'])
    assert conditions(missing.patch)["PrerequisitesMissing"] == ("True", "NotFound")
    assert conditions(missing.patch)["Ready"] == ("True", "CronJobReady")  # the schedule stays applied
    unchecked = step(body(missing.patch))
    assert unchecked.patch == {}
    found = step(body(missing.patch), missing=[])
    assert conditions(found.patch)["PrerequisitesMissing"] == ("False", "AllFound")
    assert "PrerequisitesMissing" not in conditions(step(body()).patch)


# --- a stopped Job's record ----------------------------------------------------------------------

def stopped_job(terminal: str = "FailureTarget", outcome: str = "FailedToStart") -> dict:
    verdict = {"outcome": outcome, "reason": "ImagePullBackOff", "message": "blocked for 0:00:30: no such image"}
    return {"metadata": {"name": "s-1", "namespace": "ns", "labels": {SCHEDULE_LABEL: "s"},
                         "creationTimestamp": "2026-11-22T11:59:00Z",
                         "annotations": {STARTUP_VERDICT_ANNOTATION: json.dumps(verdict)}},
            "status": {"startTime": "2026-11-22T11:59:00Z", "conditions": [
                {"type": terminal, "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline",
                 "lastTransitionTime": "2026-11-22T12:00:00Z"}]}}


def test_a_stopped_job_is_recorded_with_its_verdict_not_as_timed_out():
    record = runs.run_record(stopped_job(), [])
    assert (record.outcome, record.reason, record.message) == (
        "FailedToStart", "ImagePullBackOff", "blocked for 0:00:30: no such image")
    assert runs.run_record(stopped_job("Failed", "NodeLost"), []).outcome == "NodeLost"


def test_failure_target_ends_only_a_job_the_operator_stopped():
    """A pod on a lost node keeps the Job from Failed; FailureTarget is the end of a stopped run."""
    plain = stopped_job()
    del plain["metadata"]["annotations"]
    assert runs.finished_condition(plain) is None
    assert runs.finished_condition(stopped_job())["type"] == "FailureTarget"


def test_a_stopped_job_that_completed_meanwhile_is_a_success():
    record = runs.run_record(stopped_job("Complete"), [])
    assert record.outcome == "Succeeded" and record.message is None


# --- the reconciler around it ---------------------------------------------------------------------

class FakeKube:
    """Counts the calls; status writes are stored, Events returned for the Job."""

    def __init__(self, current: dict, events: list[dict] | None = None):
        self.current, self.calls, self.events, self.posted, self.stopped = current, [], events or [], [], []

    def get_cronjob(self, namespace, name):
        return CRONJOB

    def get_schedule(self, namespace, name):
        return self.current

    def patch_status(self, namespace, name, fields, resource_version=None):
        self.calls.append("patch_status")
        status = {k: v for k, v in {**self.current.get("status", {}), **fields}.items() if v is not None}
        self.current = {**self.current, "status": status,
                        "metadata": {**self.current["metadata"],
                                     "resourceVersion": str(int(self.current["metadata"]["resourceVersion"]) + 1)}}
        return self.current

    def events_about(self, namespace, name):
        self.calls.append(f"events {name}")
        return self.events

    def get_node(self, name):
        self.calls.append(f"node {name}")
        return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}

    def get_pvc(self, namespace, name):
        self.calls.append(f"pvc {name}")
        return None

    def stop_job(self, namespace, name, annotations):
        self.stopped.append((name, json.loads(annotations[STARTUP_VERDICT_ANNOTATION])))

    def post_event(self, schedule, type_, reason, note):
        self.posted.append((type_, reason, note))

    def job_pods(self, namespace, name):
        return []

    def annotate_job(self, namespace, name, annotations):
        pass


def job(name: str = "s-1", created: datetime = NOW - timedelta(seconds=40)) -> dict:
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": stamp,
                         "labels": {SCHEDULE_LABEL: "s", MANAGED_BY: MANAGED_BY_VALUE}},
            "status": {"startTime": stamp}}


def failed_create(since: datetime) -> dict:
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"reason": "FailedCreate", "involvedObject": {"kind": "Job", "name": "s-1"},
            "message": 'Error creating: pods "s-1-" is forbidden: no PriorityClass with name x was found',
            "firstTimestamp": stamp, "lastTimestamp": stamp}


def reconciler(kube: FakeKube, clock: list[datetime], metrics: OperatorMetrics | None = None) -> Reconciler:
    rec = Reconciler(kube=kube, metrics=metrics or OperatorMetrics(), clock=lambda: clock[0])
    rec.observe_schedule(kube.current)
    rec.observe_cronjob(CRONJOB)
    return rec


def test_a_schedule_without_an_unfinished_job_costs_no_read():
    kube = FakeKube(body(startupTimeoutSeconds=60))
    reconciler(kube, [NOW]).refresh(kube.current)
    assert [c for c in kube.calls if c != "patch_status"] == []


def test_events_are_read_only_after_a_few_seconds_without_a_running_pod():
    kube = FakeKube(body(), events=[failed_create(NOW)])
    clock = [NOW]
    rec = reconciler(kube, clock)
    rec.record_job(job(created=NOW - timedelta(seconds=1)))
    assert not any(c.startswith("events") for c in kube.calls)
    assert kube.current["status"]["active"][0]["phase"] == "Pending"
    assert rec.caches.soon[("ns", "s")] == NOW + timedelta(seconds=4)  # looked at again when worth it
    clock[0] = NOW + timedelta(seconds=5)
    assert rec.due_rechecks() == [("ns", "s")]
    rec.refresh_active("ns", "s")
    assert kube.calls.count("events s-1") == 1
    entry = kube.current["status"]["active"][0]
    assert entry["phase"] == "Blocked" and "no PriorityClass with name x" in entry["message"]


def test_a_waiting_runs_events_are_read_once_per_few_seconds_however_many_events_refresh_it():
    """Each Job and Pod event of a waiting run refreshes its schedule: in a burst that was an
    Events LIST per event; now at most one per EVENTS_MAX_AGE, and a due recheck reads afresh."""
    kube = FakeKube(body(), events=[failed_create(NOW)])
    clock = [NOW]
    rec = reconciler(kube, clock)
    rec.record_job(job())  # 40 s old, no pod: its events are worth reading
    for _ in range(5):
        rec.refresh_active("ns", "s")
    assert kube.calls.count("events s-1") == 1
    clock[0] = NOW + timedelta(seconds=10)  # the recheck (RECHECK) comes after EVENTS_MAX_AGE
    rec.refresh_active("ns", "s")
    assert kube.calls.count("events s-1") == 2
    for i in range(300):  # old entries do not pile up
        rec.caches.remember_events(("ns", f"p{i}"), clock[0] + timedelta(seconds=60 + i), [], timedelta(seconds=5))
    assert len(rec.caches.events) < 300


def pending_pod(waiting: str | None = None) -> dict:
    statuses = [{"name": "main", "image": "reg/x:1", "state": {"waiting": {"reason": waiting, "message": "m"}}}]
    return {"metadata": {"name": "s-1-abc", "namespace": "ns", "creationTimestamp": "2026-11-22T11:59:50Z",
                         "labels": {SCHEDULE_LABEL: "s", "batch.kubernetes.io/job-name": "s-1"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending", **({"containerStatuses": statuses} if waiting else {})}}


def test_events_are_read_only_when_they_can_name_the_cause():
    """A burst of ordinary pending runs (pods waiting for a node or starting) costs no Events
    read: only a Job without a pod (FailedCreate) or a container waiting on a pull/config error."""
    assert activeruns.events_needed(job(), []) is True
    assert activeruns.events_needed(job(), [pending_pod()]) is False
    assert activeruns.events_needed(job(), [pending_pod("ContainerCreating")]) is False
    assert activeruns.events_needed(job(), [pending_pod("InvalidImageName")]) is False  # its status says it all
    assert activeruns.events_needed(job(), [pending_pod("ImagePullBackOff")]) is True
    assert activeruns.events_needed(job(), [pending_pod("CreateContainerConfigError")]) is True
    kube = FakeKube(body())
    clock = [NOW]
    rec = reconciler(kube, clock)
    rec.record_job(job())  # 40 s old and no pod yet: a FailedCreate would be worth reading
    assert kube.calls.count("events s-1") == 1
    clock[0] = NOW + RECHECK  # past EVENTS_MAX_AGE: nothing reused
    rec.pod_changed(pending_pod("ContainerCreating"))
    assert kube.calls.count("events s-1") + kube.calls.count("events s-1-abc") == 1
    assert kube.current["status"]["active"][0]["phase"] == "Pending"


def test_events_reads_are_bounded_and_a_run_left_without_them_is_rechecked():
    """While EVENTS_READS reads are under way (a slow API server), a refresh does not queue a
    further one on its handler thread: it classifies from the watched objects and looks again."""
    kube = FakeKube(body(), events=[failed_create(NOW)])
    clock = [NOW]
    rec = reconciler(kube, clock)
    for _ in range(EVENTS_READS):
        rec.events_reads.acquire()
    rec.record_job(job())
    assert not any(c.startswith("events") for c in kube.calls)
    assert kube.current["status"]["active"][0]["phase"] == "Pending"
    assert rec.caches.soon[("ns", "s")] == NOW + RECHECK
    for _ in range(EVENTS_READS):
        rec.events_reads.release()
    clock[0] = NOW + RECHECK
    rec.refresh_active("ns", "s")
    assert kube.calls.count("events s-1") == 1
    assert kube.current["status"]["active"][0]["phase"] == "Blocked"


def test_a_blocked_run_is_stopped_once_after_the_startup_timeout_and_recorded_as_failed_to_start():
    start = NOW - timedelta(seconds=40)
    kube = FakeKube(body(startupTimeoutSeconds=30), events=[failed_create(NOW - timedelta(seconds=20))])
    clock, metrics = [NOW], OperatorMetrics()
    rec = reconciler(kube, clock, metrics)
    rec.record_job(job(created=start))
    assert [(t, r) for t, r, _ in kube.posted] == [("Normal", "RunStarted"), ("Warning", "RunBlocked")]
    assert kube.stopped == []  # blocked 20 s of 30
    assert rec.caches.soon[("ns", "s")] == NOW + timedelta(seconds=10)  # when the timeout runs out
    labels = {"namespace": "ns", "schedule": "s"}
    assert metrics.registry.get_sample_value("thresher_schedule_runs_blocked", {**labels, "reason": "FailedCreate"}) == 1

    clock[0] = NOW + timedelta(seconds=10)
    rec.refresh_active("ns", "s")
    rec.refresh_active("ns", "s")
    assert [name for name, _ in kube.stopped] == ["s-1"]  # once, however often it is looked at
    verdict = kube.stopped[0][1]
    assert verdict["outcome"] == "FailedToStart" and verdict["reason"] == "FailedCreate"
    assert verdict["message"].startswith("blocked for 0:00:30 (FailedCreate), longer than startupTimeoutSeconds=30")

    # The Job controller fails it (FailureTarget first); the run is recorded from the Job, once.
    ended = job(created=start)
    ended["metadata"]["annotations"] = {STARTUP_VERDICT_ANNOTATION: json.dumps(verdict)}
    ended["status"]["conditions"] = [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
                                      "lastTransitionTime": "2026-11-22T12:00:41Z"}]
    record = rec.record_job(ended)
    assert record is not None and record.outcome == "FailedToStart"
    status = kube.current["status"]
    assert status["recentRuns"][0]["outcome"] == "FailedToStart" and status["consecutiveFailures"] == 1
    assert status["active"] == [] and conditions(status)["RunBlocked"] == ("False", "NoRunBlocked")
    assert ("Warning", "RunFailed") in [(t, r) for t, r, _ in kube.posted]
    assert metrics.registry.get_sample_value(
        "thresher_schedule_runs_total", {**labels, "job_type": "container", "outcome": "failed_to_start"}) == 1
    assert metrics.registry.get_sample_value("thresher_schedule_runs_blocked", {**labels, "reason": "FailedCreate"}) == 0
    ended["status"]["conditions"].append({"type": "Failed", "status": "True", "reason": "DeadlineExceeded"})
    assert rec.record_job(ended) is None  # the Failed event after FailureTarget: nothing new


def test_a_pod_event_refreshes_only_for_an_unfinished_job():
    kube = FakeKube(body())
    rec = reconciler(kube, [NOW])
    pod = {"metadata": {"name": "s-1-abc", "namespace": "ns", "creationTimestamp": "2026-11-22T12:00:00Z",
                        "labels": {SCHEDULE_LABEL: "s", "batch.kubernetes.io/job-name": "s-1"}},
           "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    rec.pod_changed(pod)
    assert kube.calls == []  # its Job is not known as unfinished: no refresh
    rec.record_job(job())
    rec.pod_changed(pod)
    assert kube.current["status"]["active"] == [{
        "name": "s-1", "phase": "Running", "node": "n1", "startTime": "2026-11-22T11:59:50Z",
        "scheduledTime": "2026-11-22T11:59:50Z"}]
    assert "node n1" in kube.calls and not any(c.startswith("events") for c in kube.calls)


def test_a_succeeded_run_posts_a_normal_event():
    kube = FakeKube(body())
    rec = reconciler(kube, [NOW])
    done = job()
    done["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    done["status"]["completionTime"] = "2026-11-22T12:00:00Z"
    rec.record_job(done)
    assert [(t, r) for t, r, _ in kube.posted] == [("Normal", "RunSucceeded")]
