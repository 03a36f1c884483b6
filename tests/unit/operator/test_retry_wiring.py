"""Retries with a delay wired through the reconciler (issue 17), with a fake API that records calls.

Pins what issue 17 asked of ``spec.retryPolicy``: a failed run is retried as a new Job after
the delay, under a deterministic name (an operator restart neither skips nor doubles an
attempt: the due time is in status.retrying), never on exit code 2; the run is recorded once
with its attempts, so consecutiveFailures and thresher_schedule_runs_total count runs, not
attempts; the attempt waiting in its delay shows in status.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from thresher.api.names import ATTEMPT_ANNOTATION, LOGICAL_TIME_ENV, RETRY_OF_ANNOTATION, SCHEDULE_LABEL
from thresher.api.runnames import retry_job_name
from thresher.operator.metrics import OperatorMetrics
from thresher.operator.reconciler import Reconciler

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
FIRST = "s-29922480"  # the Job of 12:00 (the CronJob controller's name, and runAt's)
LABELS = {"namespace": "ns", "schedule": "s"}


class Kube:
    """The calls the retry path makes, answered from memory."""

    def __init__(self, current: dict):
        self.current, self.events, self.created, self.jobs = current, [], [], {}

    def job_pods(self, namespace, name):
        return self.pods.get(name, [])

    pods: dict = {}

    def get_cronjob(self, namespace, name):
        return {"metadata": {"name": name, "namespace": namespace, "uid": "cj"}, "status": {},
                "spec": {"jobTemplate": {"metadata": {"labels": {SCHEDULE_LABEL: name}}, "spec": {
                    "template": {"spec": {"containers": [{"name": "job", "image": "a"}]}}}}}}

    def get_schedule(self, namespace, name):
        return self.current

    def patch_status(self, namespace, name, fields, resource_version=None):
        status = {**self.current.get("status", {}), **fields}
        self.current = {**self.current, "status": {k: v for k, v in status.items() if v is not None},
                        "metadata": {**self.current["metadata"],
                                     "resourceVersion": str(int(self.current["metadata"]["resourceVersion"]) + 1)}}
        return self.current

    def create_job(self, body):
        name = body["metadata"]["name"]
        new = name not in self.jobs
        self.jobs[name] = body
        self.created.append(name)
        return new

    def post_event(self, schedule, type_, reason, note):
        self.events.append((reason, note))

    def annotate_job(self, namespace, name, annotations):
        pass

    def patch_schedule(self, namespace, name, patch):
        pass


def schedule(**spec) -> dict:
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": "2026-11-22T11:00:00Z"},
            "spec": {"schedule": "0 * * * *", "job": {"container": {"image": "a"}}, **spec}, "status": {}}


def failed_job(name: str, end: datetime, annotations: dict | None = None, exit_code: int = 3) -> tuple[dict, list]:
    job = {"metadata": {"name": name, "namespace": "ns", "labels": {SCHEDULE_LABEL: "s"},
                        "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-22T12:00:00Z",
                                        **(annotations or {})},
                        "creationTimestamp": (end - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")},
           "status": {"startTime": (end - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                      "lastTransitionTime": end.strftime("%Y-%m-%dT%H:%M:%SZ")}]}}
    pod = {"metadata": {"name": f"{name}-p", "creationTimestamp": "2026-11-22T12:00:00Z"},
           "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}]}}
    return job, [pod]


def setup(now: list[datetime], **policy) -> tuple[Kube, Reconciler, OperatorMetrics]:
    kube = Kube(schedule(retryPolicy={"attempts": 2, "delaySeconds": 60, **policy}))
    kube.pods = {}
    metrics = OperatorMetrics()
    return kube, Reconciler(kube=kube, metrics=metrics, clock=lambda: now[0]), metrics


def record(kube: Kube, rec: Reconciler, job_and_pods: tuple[dict, list]) -> None:
    job, pods = job_and_pods
    kube.pods[job["metadata"]["name"]] = pods
    rec.record_job(job)


def runs_total(metrics: OperatorMetrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("thresher_schedule_runs_total",
                                             {**LABELS, "job_type": "container", "outcome": outcome})


def test_a_failed_run_waits_its_delay_is_retried_once_and_is_recorded_as_one_run():
    now = [T0 + timedelta(minutes=1)]
    kube, rec, metrics = setup(now)
    record(kube, rec, failed_job(FIRST, now[0]))
    status = kube.current["status"]
    assert status.get("recentRuns", []) == [] and status["consecutiveFailures"] == 0
    (waiting,) = status["retrying"]
    assert waiting["nextAttemptTime"] == "2026-11-22T12:02:00Z" and waiting["attempts"][0]["exitCode"] == 3
    assert not runs_total(metrics, "failed")  # an attempt is not a run (0 or no series yet)
    assert kube.events[-1][0] == "RetryScheduled" and "attempt 2 at 2026-11-22T12:02:00Z" in kube.events[-1][1]
    assert rec.caches.soon[("ns", "s")] == T0 + timedelta(minutes=2)  # the recheck list, no poll of its own

    rec.refresh(kube.current)  # before the delay: nothing
    assert kube.created == []
    now[0] = T0 + timedelta(minutes=2)
    rec.refresh(kube.current)
    second = retry_job_name("s", FIRST, 2)
    assert kube.created == [second]
    job = kube.jobs[second]
    assert job["metadata"]["annotations"][RETRY_OF_ANNOTATION] == FIRST
    assert job["metadata"]["annotations"][ATTEMPT_ANNOTATION] == "2"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": LOGICAL_TIME_ENV, "value": "2026-11-22T12:00:00Z"} in env
    running = kube.current["status"]["retrying"][0]
    assert [a.get("outcome") for a in running["attempts"]] == ["Failed", None] and "nextAttemptTime" not in running

    # A restart: a fresh reconciler over the same status creates nothing new.
    fresh = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: now[0] + timedelta(minutes=5))
    fresh.refresh(kube.current)
    assert kube.created == [second]

    now[0] = T0 + timedelta(minutes=3)
    record(kube, rec, failed_job(second, now[0], {RETRY_OF_ANNOTATION: FIRST, ATTEMPT_ANNOTATION: "2"}))
    status = kube.current["status"]
    assert "retrying" not in status or status["retrying"] == []
    (run,) = status["recentRuns"]
    assert run["jobName"] == FIRST and run["maxAttempts"] == 2
    assert [(a["jobName"], a["outcome"]) for a in run["attempts"]] == [(FIRST, "Failed"), (second, "Failed")]
    assert run["message"].endswith("attempt 2 of 2 failed: no attempts left")
    assert status["consecutiveFailures"] == 1 and runs_total(metrics, "failed") == 1


def test_a_restart_after_the_retry_was_created_but_not_written_creates_it_once():
    """A crash between creating attempt 2 and writing status: the next pass creates the same name
    (AlreadyExists) and writes the attempt; a second Job never exists."""
    now = [T0 + timedelta(minutes=1)]
    kube, rec, _ = setup(now, delaySeconds=0)
    record(kube, rec, failed_job(FIRST, now[0]))
    waiting = kube.current
    rec.refresh(waiting)
    kube.current = waiting  # the status write was lost
    Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: now[0]).refresh(waiting)
    assert kube.created == [retry_job_name("s", FIRST, 2)] * 2 and len(kube.jobs) == 1
    assert len(kube.current["status"]["retrying"][0]["attempts"]) == 2


def test_exit_code_2_is_never_retried():
    now = [T0 + timedelta(minutes=1)]
    kube, rec, metrics = setup(now)
    record(kube, rec, failed_job(FIRST, now[0], exit_code=2))
    status = kube.current["status"]
    assert status.get("retrying", []) == [] and status["recentRuns"][0]["exitCode"] == 2
    assert "exit code 2: a configuration error" in status["recentRuns"][0]["message"]
    assert runs_total(metrics, "failed") == 1
    now[0] += timedelta(hours=1)
    rec.refresh(kube.current)
    assert kube.created == []


def test_forbid_holds_a_due_retry_while_another_run_is_unfinished():
    now = [T0 + timedelta(minutes=1)]
    kube, rec, _ = setup(now, delaySeconds=0)
    record(kube, rec, failed_job(FIRST, now[0]))
    assert rec.caches.soon[("ns", "s")] == now[0]  # delay 0: due at once
    rec.caches.jobs[("ns", "s")] = {"s-other": {"metadata": {"name": "s-other", "namespace": "ns"}, "status": {}}}
    rec.caches.soon.clear()  # as refresh_active does before it refreshes
    rec.refresh(kube.current)
    assert kube.created == [] and now[0] < rec.caches.soon[("ns", "s")] <= now[0] + timedelta(seconds=10)
    rec.caches.jobs[("ns", "s")] = {}
    rec.refresh(kube.current)
    assert kube.created == [retry_job_name("s", FIRST, 2)]


# --- ttlSecondsAfterFinished: a finished one-off schedule is deleted ---------------------------------


def one_off(ttl: int) -> dict:
    body = schedule(runAt="2026-11-22T12:00:00Z", ttlSecondsAfterFinished=ttl)
    body["spec"].pop("schedule")
    return body


class DeletingKube(Kube):
    def __init__(self, current: dict, conflicts: int = 0):
        super().__init__(current)
        self.deleted, self.conflicts = [], conflicts

    def delete_schedule(self, namespace, name, uid, resource_version):
        if self.conflicts:
            self.conflicts -= 1
            return False
        self.deleted.append((name, uid, resource_version))
        return True


def test_a_one_off_schedule_is_deleted_its_ttl_after_its_run_finished():
    """Issue 17: a finished one-off schedule stayed for ever; with ttlSecondsAfterFinished it is
    deleted (the object judged, by uid and resourceVersion), and not before its run finished."""
    now = [T0 + timedelta(minutes=1)]
    kube = DeletingKube(one_off(600), conflicts=1)
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: now[0])
    rec.refresh(kube.current)  # the run has not finished: nothing
    assert kube.deleted == [] and "Expired" not in [e[0] for e in kube.events]
    record(kube, rec, failed_job(FIRST, now[0]))
    assert kube.deleted == [] and rec.caches.soon[("ns", "s")] == now[0] + timedelta(minutes=10)
    now[0] += timedelta(minutes=10)
    rec.refresh(kube.current)  # due, but the object changed meanwhile (409): judged again soon
    assert kube.deleted == [] and rec.caches.soon[("ns", "s")] == now[0] + timedelta(seconds=10)
    rec.refresh(kube.current)
    assert kube.deleted == [("s", "u", kube.current["metadata"]["resourceVersion"])]
    assert kube.events[-1] == ("Expired", "one-off run finished at 2026-11-22T12:01:00Z; schedule deleted "
                                          "(ttlSecondsAfterFinished=600)")


def test_a_one_off_run_waiting_for_a_retry_has_not_finished():
    now = [T0 + timedelta(minutes=1)]
    kube = DeletingKube(one_off(0))
    kube.current["spec"]["retryPolicy"] = {"attempts": 2, "delaySeconds": 60}
    rec = Reconciler(kube=kube, metrics=OperatorMetrics(), clock=lambda: now[0])
    record(kube, rec, failed_job(FIRST, now[0]))
    assert kube.current["status"]["retrying"] and kube.deleted == []


def test_a_finished_job_deleted_before_it_was_recorded_is_recorded_from_its_deletion():
    """Pins the lost-run race: the CronJob's history limits delete a finished Job within seconds,
    and kopf may hand over only the DELETED event. The run (here a retry attempt, which would
    otherwise wait in status.retrying for ever) is recorded from the Job's last state."""
    now = [T0 + timedelta(minutes=1)]
    kube, rec, metrics = setup(now, delaySeconds=0)
    record(kube, rec, failed_job(FIRST, now[0]))
    rec.refresh(kube.current)
    second = retry_job_name("s", FIRST, 2)
    job, _ = failed_job(second, now[0], {RETRY_OF_ANNOTATION: FIRST, ATTEMPT_ANNOTATION: "2"})
    rec.job_deleted(job)
    (run,) = kube.current["status"]["recentRuns"]
    assert [a["jobName"] for a in run["attempts"]] == [FIRST, second] and runs_total(metrics, "failed") == 1
    assert ("ns", "s") not in rec.caches.jobs or second not in rec.caches.jobs[("ns", "s")]
    rec.job_deleted({**job, "metadata": {**job["metadata"], "annotations": {
        **job["metadata"]["annotations"], "thresher.dev/recorded": "true"}}})
    assert runs_total(metrics, "failed") == 1
