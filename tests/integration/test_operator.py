"""The operator end to end on the real local control plane: schedules become CronJobs, runs
(simulated by kwok) are recorded in status, metrics and Events."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from tests.conftest import kubectl_json
from tests.helpers.wait import consistently, eventually
from thresher.api.names import RUN_NOW_ANNOTATION
from thresher.devcluster.cluster import GPU_NODE

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"  # never fires during a test: runs come from run-now


def schedule(name: str, *, cron: str = YEARLY, job: dict | None = None, **spec) -> str:
    body = {
        "apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
        "metadata": {"name": name},
        "spec": {"schedule": cron,
                 "job": job or {"container": {"image": "busybox", "command": ["true"]}}, **spec},
    }
    return yaml.safe_dump(body)


def apply(cluster, namespace: str, manifest: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def get(cluster, namespace: str, kind: str, name: str) -> dict | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def status_of(cluster, namespace: str, name: str) -> dict:
    return (get(cluster, namespace, "collectionschedule", name) or {}).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def simulate(cluster, namespace: str, name: str, *, exit_code: int | None = None,
             message: dict | str | None = None, duration: str = "1s") -> None:
    """Tell kwok how the next runs of this schedule end, through the CronJob's pod template
    (another field manager than the operator's, so server-side apply keeps it)."""
    annotations = {"sim.thresher.dev/duration": duration, "sim.thresher.dev/exit-code": None,
                   "sim.thresher.dev/message": None}
    if exit_code is not None:
        annotations["sim.thresher.dev/exit-code"] = str(exit_code)
    if message is not None:
        annotations["sim.thresher.dev/message"] = message if isinstance(message, str) else json.dumps(message)
    patch = {"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": annotations}}}}}}
    eventually(lambda: get(cluster, namespace, "cronjob", name), timeout=30, message="CronJob exists")
    cluster.kubectl("patch", "cronjob", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def run_now(cluster, namespace: str, name: str) -> str:
    """Ask a run now; the request's token (the operator's Job for it carries the token)."""
    token = uuid.uuid4().hex
    cluster.kubectl("annotate", "--overwrite", "collectionschedule", name, "-n", namespace,
                    f"{RUN_NOW_ANNOTATION}={token}")
    return token


def wait_runs(cluster, namespace: str, name: str, count: int, timeout: float = 60) -> dict:
    return eventually(
        lambda: (s := status_of(cluster, namespace, name)) and len(s.get("recentRuns") or []) >= count and s,
        timeout=timeout, message=f"{count} recorded run(s) of {name}")


def test_schedule_becomes_a_cronjob_with_status(cluster, namespace, operator):
    """Apply -> CronJob with the schedule's fields and an ownerReference; status Ready with a
    next run time; the printer columns show it."""
    apply(cluster, namespace, schedule("daily", cron="30 4 * * *", timeZone="Europe/Berlin", retries=2,
                                       timeoutSeconds=600))
    cj = eventually(lambda: get(cluster, namespace, "cronjob", "daily"), timeout=30, message="CronJob")
    assert cj["spec"]["schedule"] == "30 4 * * *" and cj["spec"]["timeZone"] == "Europe/Berlin"
    assert cj["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 2
    assert cj["metadata"]["ownerReferences"][0]["kind"] == "CollectionSchedule"
    status = eventually(lambda: (s := status_of(cluster, namespace, "daily")).get("nextScheduleTime") and s,
                        timeout=30, message="nextScheduleTime")
    assert condition(status, "Ready")["status"] == "True"
    assert status["nextScheduleTime"].endswith(":30:00Z")  # 04:30 Berlin is hh:30 UTC
    table = cluster.kubectl("get", "collectionschedules", "-n", namespace).stdout
    assert "30 4 * * *" in table.split("\n")[1] and "NEXT RUN" in table.split("\n")[0]
    short = cluster.kubectl("get", "csched", "-n", namespace, "-o", "name").stdout
    assert "daily" in short


def test_run_now_records_the_result_and_a_failure_then_recovery(cluster, namespace, operator):
    """run-now -> Job -> kwok completes the pod with a run-result message -> status shows the
    run and its counts; a failing run raises consecutiveFailures, sets lastFailureTime and
    emits an Event; the next success resets the count."""
    apply(cluster, namespace, schedule("collect"))
    result = {"version": 1, "jobType": "container", "succeeded": True, "items": 120, "valid": 117,
              "quality": 0.975}
    simulate(cluster, namespace, "collect", message=result)
    run_now(cluster, namespace, "collect")
    status = wait_runs(cluster, namespace, "collect", 1)
    (run,) = status["recentRuns"]
    assert run["outcome"] == "Succeeded" and run["manual"] is True
    assert run["result"]["items"] == 120 and run["result"]["quality"] == 0.975
    assert status["lastResult"] == "Succeeded" and status["consecutiveFailures"] == 0
    assert status["lastSuccessfulTime"]

    simulate(cluster, namespace, "collect", exit_code=3,
             message={"jobType": "container", "succeeded": False, "error": "upstream 503"})
    run_now(cluster, namespace, "collect")
    status = wait_runs(cluster, namespace, "collect", 2)
    assert status["consecutiveFailures"] == 1 and status["lastResult"] == "Failed"
    assert status["lastFailureTime"]
    assert "upstream 503" in status["recentRuns"][0]["message"]  # newest first
    events = eventually(lambda: [e for e in kubectl_json(cluster, "get", "events", "-n", namespace)["items"]
                                 if e.get("reason") == "RunFailed"], timeout=20, message="RunFailed event")
    assert "collect" in events[0]["involvedObject"]["name"]

    simulate(cluster, namespace, "collect", message=result)
    run_now(cluster, namespace, "collect")
    status = wait_runs(cluster, namespace, "collect", 3)
    assert status["consecutiveFailures"] == 0
    assert status["stats"]["runs"] == 3 and status["stats"]["succeeded"] == 2


def test_recent_runs_are_newest_first_as_kubectl_explain_says(cluster, namespace, operator):
    """Pins issue 12: the CRD told `kubectl explain` that recentRuns is newest first while the
    operator stored the oldest first, so `jsonpath={.status.recentRuns[0]}` showed the oldest
    run. Three runs recorded one after another: [0] is the last one, as the CRD text says."""
    explain = cluster.kubectl("explain", "collectionschedule.status.recentRuns").stdout
    assert "newest first" in " ".join(explain.split())
    apply(cluster, namespace, schedule("ordered"))
    for items in (1, 2, 3):
        simulate(cluster, namespace, "ordered", message={"jobType": "container", "succeeded": True, "items": items})
        run_now(cluster, namespace, "ordered")
        wait_runs(cluster, namespace, "ordered", items)
    newest = cluster.kubectl("get", "collectionschedule", "ordered", "-n", namespace, "-o",
                             "jsonpath={.status.recentRuns[0].result.items}").stdout
    assert newest == "3"
    status = status_of(cluster, namespace, "ordered")
    assert [r["result"]["items"] for r in status["recentRuns"]] == [3, 2, 1]
    assert status["lastResult"] == status["recentRuns"][0]["outcome"]


def test_stop_after_consecutive_failures_suspends(cluster, namespace, operator):
    apply(cluster, namespace, schedule("fragile", stopAfterConsecutiveFailures=2))
    simulate(cluster, namespace, "fragile", exit_code=1)
    for count in (1, 2):
        run_now(cluster, namespace, "fragile")
        wait_runs(cluster, namespace, "fragile", count)
    eventually(lambda: get(cluster, namespace, "collectionschedule", "fragile")["spec"].get("suspend"),
               timeout=30, message="schedule suspended")
    eventually(lambda: get(cluster, namespace, "cronjob", "fragile")["spec"]["suspend"] is True,
               timeout=30, message="CronJob suspended")
    status = status_of(cluster, namespace, "fragile")
    assert condition(status, "Failing")["status"] == "True" or status["consecutiveFailures"] >= 2


def test_suspend_and_resume_commands(cluster, namespace, operator):
    apply(cluster, namespace, schedule("pausable"))
    eventually(lambda: get(cluster, namespace, "cronjob", "pausable"), timeout=30, message="CronJob")
    env_ns = ["--namespace", namespace]
    _thresher(cluster, "suspend", "pausable", *env_ns)
    eventually(lambda: get(cluster, namespace, "cronjob", "pausable")["spec"]["suspend"] is True,
               timeout=30, message="CronJob suspended")
    eventually(lambda: (s := status_of(cluster, namespace, "pausable")).get("cronJobRef")
               and "nextScheduleTime" not in s, timeout=30, message="no next run while suspended")
    _thresher(cluster, "resume", "pausable", *env_ns)
    eventually(lambda: get(cluster, namespace, "cronjob", "pausable")["spec"]["suspend"] is False,
               timeout=30, message="CronJob resumed")


def _thresher(cluster, *args: str) -> str:
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "thresher.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_status_command_shows_the_dashboard(cluster, namespace, operator):
    apply(cluster, namespace, schedule("dash"))
    simulate(cluster, namespace, "dash", message={"jobType": "container", "succeeded": True, "items": 5})
    run_now(cluster, namespace, "dash")
    wait_runs(cluster, namespace, "dash", 1)
    rows = json.loads(_thresher(cluster, "status", "-n", namespace, "-o", "json"))
    (row,) = rows
    assert row["name"] == "dash" and row["lastResult"] == "Succeeded" and row["runs"] == 1
    assert row["successRate"] == 1.0 and row["lastRunResult"]["items"] == 5
    table = _thresher(cluster, "status", "-n", namespace)
    assert "dash" in table and "Succeeded" in table


def test_every_minute_schedule_fires_by_itself_and_is_recorded(cluster, namespace, operator):
    apply(cluster, namespace, schedule("minutely", cron="* * * * *"))
    status = wait_runs(cluster, namespace, "minutely", 1, timeout=100)
    run = status["recentRuns"][0]
    assert run["manual"] is False and run["scheduledTime"].endswith(":00Z")
    assert status["lastScheduleTime"]


def test_deleting_the_schedule_cascades(cluster, namespace, operator):
    apply(cluster, namespace, schedule("doomed"))
    run_now(cluster, namespace, "doomed")
    wait_runs(cluster, namespace, "doomed", 1)
    cluster.kubectl("delete", "collectionschedule", "doomed", "-n", namespace)
    eventually(lambda: get(cluster, namespace, "cronjob", "doomed") is None, timeout=60,
               message="CronJob garbage-collected")
    eventually(lambda: not kubectl_json(cluster, "get", "jobs", "-n", namespace)["items"], timeout=60,
               message="Jobs garbage-collected")


def test_gpu_drone_schedule_runs_on_the_gpu_node(cluster, namespace, operator):
    apply(cluster, namespace, schedule("drone", resources={"gpus": 1},
                                       job={"drone": {"backend": "cuda"}}))
    run_now(cluster, namespace, "drone")
    pod = eventually(lambda: [p for p in kubectl_json(cluster, "get", "pods", "-n", namespace)["items"]
                              if p["spec"].get("nodeName")], timeout=60, message="drone pod scheduled")[0]
    assert pod["spec"]["nodeName"] == GPU_NODE


def test_cronjob_deleted_or_edited_by_hand_is_restored(cluster, namespace, operator):
    apply(cluster, namespace, schedule("guarded", cron="15 * * * *"))
    eventually(lambda: get(cluster, namespace, "cronjob", "guarded"), timeout=30, message="CronJob")
    cluster.kubectl("patch", "cronjob", "guarded", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"schedule": "0 0 * * *"}}))
    eventually(lambda: get(cluster, namespace, "cronjob", "guarded")["spec"]["schedule"] == "15 * * * *",
               timeout=30, message="schedule restored")
    cluster.kubectl("delete", "cronjob", "guarded", "-n", namespace)
    eventually(lambda: (cj := get(cluster, namespace, "cronjob", "guarded")) and cj["spec"]["schedule"] == "15 * * * *",
               timeout=60, message="CronJob recreated")


def test_spec_that_never_fires_is_reported_not_crashed(cluster, namespace, operator):
    """February 30th passes the schema but never fires: Ready=False with the reason, no CronJob."""
    apply(cluster, namespace, schedule("never", cron="0 0 30 2 *"))
    ready = eventually(lambda: condition(status_of(cluster, namespace, "never"), "Ready"), timeout=30,
                       message="Ready condition")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "never" in ready["message"].lower() or "fire" in ready["message"].lower()
    consistently(lambda: get(cluster, namespace, "cronjob", "never") is None, duration=2,
                 message="no CronJob for an invalid schedule")


def test_metrics_reflect_recorded_runs(cluster, namespace, operator):
    apply(cluster, namespace, schedule("metered"))
    simulate(cluster, namespace, "metered", exit_code=2)
    run_now(cluster, namespace, "metered")
    wait_runs(cluster, namespace, "metered", 1)
    mine = {"namespace": namespace, "schedule": "metered"}
    eventually(lambda: sample(operator.metrics(), "thresher_schedule_runs_total",
                              {**mine, "job_type": "container", "outcome": "failed"}) == 1.0,
               timeout=20, message="failed run counted in metrics")
    assert sample(operator.metrics(), "thresher_schedule_consecutive_failures", mine) == 1.0


def sample(text: str, name: str, labels: dict) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_stale_after_missed_success_and_recovers_by_itself(cluster, namespace, operator):
    """Dead-man's switch: an every-minute schedule whose runs fail has no success after its
    first due time, so with zero grace it turns Stale=True; the next success clears it."""
    apply(cluster, namespace, schedule("deadman", cron="* * * * *", alerting={"staleAfterSeconds": 0},
                                       concurrencyPolicy="Forbid"))
    simulate(cluster, namespace, "deadman", exit_code=1)
    stale = eventually(lambda: condition(status_of(cluster, namespace, "deadman"), "Stale").get("status") == "True"
                       and condition(status_of(cluster, namespace, "deadman"), "Stale"),
                       timeout=110, message="Stale=True after a due run without success")
    assert stale["reason"] == "NoRecentSuccess"
    simulate(cluster, namespace, "deadman", message={"jobType": "container", "succeeded": True})
    run_now(cluster, namespace, "deadman")
    eventually(lambda: condition(status_of(cluster, namespace, "deadman"), "Stale").get("status") == "False",
               timeout=60, message="Stale cleared by a success")
