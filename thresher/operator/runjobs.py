"""The Job of one run, from the schedule's CronJob: pure (issue 17).

Every run the operator creates itself (a manual run, a due time of an interval or ``runAt``, a
backfilled logical time, a retry) is the CronJob's ``jobTemplate`` copied, as ``kubectl create
job --from=cronjob/X`` does, under a deterministic name (``thresher/api/runnames.py``), owned by
the CronJob like the CronJob controller's own Jobs, so run recording, history and deletion
treat all runs alike. A run with a logical time gets it three ways: the
``THRESHER_LOGICAL_TIME`` variable in every container (for the payload), the
``thresher.dev/logical-time`` annotation, and the CronJob controller's own
``batch.kubernetes.io/cronjob-scheduled-timestamp`` annotation, which run recording already
reads as the run's ``scheduledTime``.
"""

from __future__ import annotations

import copy
from datetime import datetime

from thresher.api.runnames import LOGICAL_TIME_ANNOTATION, LOGICAL_TIME_ENV, format_logical_time
from thresher.api.names import SCHEDULED_TIMESTAMP_ANNOTATION as SCHEDULED_TIMESTAMP


def run_job(cronjob: dict, name: str, annotations: dict[str, str], logical_time: datetime | None = None) -> dict:
    """A Job named ``name`` from ``cronjob``'s template, with ``annotations`` added."""
    meta = cronjob["metadata"]
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    job_meta = template.get("metadata") or {}
    merged = {**(job_meta.get("annotations") or {}), **annotations}
    spec = template["spec"]
    if logical_time is not None:
        value = format_logical_time(logical_time)
        merged.update({LOGICAL_TIME_ANNOTATION: value, SCHEDULED_TIMESTAMP: value})
        for container in spec["template"]["spec"].get("containers", []):
            env = [e for e in container.get("env") or [] if e.get("name") != LOGICAL_TIME_ENV]
            container["env"] = [*env, {"name": LOGICAL_TIME_ENV, "value": value}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": job_meta.get("labels") or {},
            "annotations": merged,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }
