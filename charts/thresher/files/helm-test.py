"""`helm test` of the Thresher chart: create a tiny CollectionSchedule, run it now (the
thresher.dev/run-now annotation, as `thresher run` does) and wait until the operator records
the run in the schedule's status. Runs as the test Pod in the operator image (Python and the
kubernetes client are there); any failure is one line on stderr and exit code 1.

Settings come from the environment (the Pod sets them): THRESHER_TEST_NAMESPACE,
THRESHER_TEST_SCHEDULE, THRESHER_TEST_IMAGE (the job's image), THRESHER_TEST_TIMEOUT (seconds).
"""

import os
import sys
import time
import uuid

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "thresher.dev", "v1alpha1", "collectionschedules"
RUN_NOW = "thresher.dev/run-now"


def schedule(name, image):
    """Once a year on its own (never during the test); one run, no retries, small."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CollectionSchedule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "helm-test"}},
        "spec": {
            "schedule": "0 0 1 1 *", "retries": 0, "timeoutSeconds": 120,
            "resources": {"cpu": "10m", "memory": "32Mi", "memoryLimit": "128Mi"},
            "job": {"container": {"image": image, "command": ["python", "-c", "print('thresher helm test run')"]}},
        },
    }


def condition(status, kind):
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


class Failed(Exception):
    pass


def wait(what, probe, timeout, interval=2.0):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise Failed(f"no {what} after {timeout:.0f}s")
        time.sleep(interval)


def main():
    ns, name = os.environ["THRESHER_TEST_NAMESPACE"], os.environ["THRESHER_TEST_SCHEDULE"]
    image, timeout = os.environ["THRESHER_TEST_IMAGE"], float(os.environ.get("THRESHER_TEST_TIMEOUT", "300"))
    config.load_config()  # in the Pod: its ServiceAccount; elsewhere: KUBECONFIG
    api = client.CustomObjectsApi()

    def get():
        try:
            return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(then_wait):
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status != 404:
                raise
        if then_wait:
            wait(f"deletion of {ns}/{name}", lambda: get() is None, 60, 1)

    delete(then_wait=True)  # what an interrupted earlier test left
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, schedule(name, image))
    print(f"created CollectionSchedule {ns}/{name} (job image {image})", flush=True)
    try:
        def ready():
            status = (get() or {}).get("status") or {}
            cond = condition(status, "Ready")
            if cond.get("status") == "False":
                raise Failed(f"schedule not Ready: {cond.get('reason')}: {cond.get('message')}")
            return cond.get("status") == "True" and status
        status = wait("Ready condition from the operator (is it running and watching this namespace?)",
                      ready, 60)
        print(f"Ready: CronJob {status.get('cronJobRef', {}).get('name')}", flush=True)

        api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                           {"metadata": {"annotations": {RUN_NOW: uuid.uuid4().hex}}})
        print("run-now requested; waiting for the recorded run", flush=True)
        runs = wait("recorded run", lambda: ((get() or {}).get("status") or {}).get("recentRuns"), timeout)
        run = runs[0]
        print(f"recorded run {run.get('jobName')}: {run.get('outcome')} {run.get('message') or ''}".rstrip(),
              flush=True)
        if run.get("outcome") != "Succeeded":
            raise Failed(f"the run did not succeed: {run.get('outcome')}: {run.get('message')}")
    finally:
        delete(then_wait=False)  # its CronJob and Jobs go with it (ownerReferences)
    print("ok: the operator turned the schedule into a CronJob, ran it on demand and recorded the run")


if __name__ == "__main__":
    try:
        main()
    except Failed as err:
        print(f"helm test failed: {err}", file=sys.stderr)
        sys.exit(1)
    except ApiException as err:
        print(f"helm test failed: API error {err.status} {err.reason}: {(err.body or '')[:300]}", file=sys.stderr)
        sys.exit(1)
