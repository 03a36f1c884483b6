"""A thin adapter over the Kubernetes API: the few calls the operator makes, on plain dicts.

Responses are read raw (``_preload_content=False``) and decoded as JSON, so the rest of the
operator sees exactly what the API server sent (camelCase dicts, the same shape kopf hands to
handlers) and the pure functions never meet client model classes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from kubernetes import client
from kubernetes.client.rest import ApiException

from thresher.api.names import API_VERSION, FIELD_MANAGER, GROUP, KIND, PLURAL, REPORTING_CONTROLLER, VERSION

log = logging.getLogger("thresher.operator")


def _json(response) -> dict:
    return json.loads(response.data)


def _found(read: Callable[[], object]) -> dict | None:
    """The object a read returns, or None when it does not exist (404)."""
    try:
        return _json(read())
    except ApiException as err:
        if err.status == 404:
            return None
        raise


class Kube:
    def __init__(self, api_client: client.ApiClient, *, instance: str = "thresher-operator") -> None:
        # Events' reportingInstance: which replica reported (the pod's name in the chart).
        self.instance = instance
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.events = client.EventsV1Api(api_client)
        self.scheduling = client.SchedulingV1Api(api_client)

    # --- CronJobs -----------------------------------------------------------------

    def apply_cronjob(self, body: dict) -> dict:
        """Server-side apply: create or correct drift in exactly the fields Thresher owns."""
        meta = body["metadata"]
        return _json(self.batch.patch_namespaced_cron_job(
            meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml", _preload_content=False))

    def get_cronjob(self, namespace: str, name: str) -> dict | None:
        return _found(lambda: self.batch.read_namespaced_cron_job(name, namespace, _preload_content=False))

    # --- Jobs and Pods ------------------------------------------------------------

    def create_job(self, body: dict) -> bool:
        """Create a Job; False when one of that name exists already (a retried run-now)."""
        try:
            self.batch.create_namespaced_job(body["metadata"]["namespace"], body, _preload_content=False)
            return True
        except ApiException as err:
            if err.status == 409:
                return False
            raise

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict]:
        return _json(self.batch.list_namespaced_job(namespace, label_selector=label_selector,
                                                    _preload_content=False))["items"]

    def job_pods(self, namespace: str, job_name: str) -> list[dict]:
        return _json(self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}",
            _preload_content=False))["items"]

    def annotate_job(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        try:
            self.batch.patch_namespaced_job(name, namespace, {"metadata": {"annotations": annotations}},
                                            _preload_content=False)
        except ApiException as err:
            if err.status != 404:  # deleted meanwhile: nothing left to mark
                raise

    def stop_job(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """End a Job now, as a failure: its deadline lowered to 1 s (activeDeadlineSeconds counts
        from its start, so the Job controller fails it at once, DeadlineExceeded) and the
        annotations in the same patch. A patch, not a delete: the Job, its pods and their events
        stay for people to read, and the operator has no delete permission."""
        try:
            self.batch.patch_namespaced_job(name, namespace, {"metadata": {"annotations": annotations},
                                                              "spec": {"activeDeadlineSeconds": 1}},
                                            _preload_content=False)
        except ApiException as err:
            if err.status != 404:  # deleted meanwhile: nothing left to stop
                raise

    # --- what a run waits on (read only while a run is unfinished) ---------------------

    def events_about(self, namespace: str, name: str) -> list[dict]:
        """The core Events about one object of the namespace (a Job or a Pod), by field selector."""
        return _json(self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}", _preload_content=False))["items"]

    def get_node(self, name: str) -> dict | None:
        return _found(lambda: self.core.read_node(name, _preload_content=False))

    def get_pvc(self, namespace: str, name: str) -> dict | None:
        return _found(lambda: self.core.read_namespaced_persistent_volume_claim(name, namespace,
                                                                               _preload_content=False))

    # --- what a spec names (checked at reconcile time) ----------------------------------

    def priority_class_exists(self, name: str) -> bool:
        return _found(lambda: self.scheduling.read_priority_class(name, _preload_content=False)) is not None

    def service_account_exists(self, namespace: str, name: str) -> bool:
        return _found(lambda: self.core.read_namespaced_service_account(name, namespace,
                                                                        _preload_content=False)) is not None

    # --- CollectionSchedules -----------------------------------------------------------

    def get_schedule(self, namespace: str, name: str) -> dict | None:
        return _found(lambda: self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))

    def list_schedules(self, namespace: str | None = None) -> list[dict]:
        if namespace:
            data = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                             _preload_content=False)
        else:
            data = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False)
        return _json(data)["items"]

    def patch_status(self, namespace: str, name: str, fields: dict,
                     resource_version: str | None = None) -> dict:
        """Merge-patch the status subresource. With ``resource_version`` it is a compare-and-swap:
        a concurrent writer makes it fail with 409 instead of being overwritten."""
        body: dict = {"status": fields}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return _json(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body, _preload_content=False))

    def patch_schedule(self, namespace: str, name: str, patch: dict) -> dict:
        return _json(self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch, _preload_content=False))

    def delete_schedule(self, namespace: str, name: str, uid: str, resource_version: str) -> bool:
        """Delete the schedule as it was read (preconditions: that object, at that version), for
        ``ttlSecondsAfterFinished``. False when it changed or is gone meanwhile (409, 404): the
        caller decides again on what it reads next."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                    uid=uid, resource_version=resource_version)))
        except ApiException as err:
            if err.status in (404, 409):
                return False
            raise
        return True

    # --- Events -----------------------------------------------------------------------

    def post_event(self, schedule: dict, type_: str, reason: str, note: str) -> None:
        meta = schedule["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "eventTime": now, "type": type_, "reason": reason, "action": reason, "note": note[:1024],
            "reportingController": REPORTING_CONTROLLER, "reportingInstance": self.instance,
            "regarding": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                          "namespace": meta["namespace"], "uid": meta.get("uid")},
        }
        try:
            self.events.create_namespaced_event(meta["namespace"], body, _preload_content=False)
        except ApiException as err:
            # Events are best effort (as client-go's recorder): never lose a run over one.
            log.warning("could not post event", extra={"reason": reason, "status": err.status,
                                                       "schedule": f"{meta['namespace']}/{meta['name']}"})


def is_conflict(err: Exception) -> bool:
    return isinstance(err, ApiException) and err.status == 409


def is_not_found(err: Exception) -> bool:
    return isinstance(err, ApiException) and err.status == 404
