"""CollectionSchedule in, desired CronJob out (and the Job of a manual run): pure builders.

Everything a schedule's pods run with is decided here, so the security properties are
reviewable in one place: pods never get the operator's ServiceAccount or an API token, run
under the Pod Security ``restricted`` profile, and Secrets are referenced, never copied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from thresher.api.names import (
    API_VERSION,
    JOB_NAME_LABEL,
    JOB_TYPE_LABEL,
    KIND,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    MANUAL_ANNOTATION,
    RESULT_PATH,
    RUN_ID_ENV,
    RUN_TOKEN_ANNOTATION,
    SCHEDULE_LABEL,
    ExitCode,
)
from thresher.api.schedule import CollectionSchedule, CollectionScheduleSpec
from thresher.api.timing import TEMPLATE_SCHEDULE, CronJobTiming
from thresher.operator.runjobs import run_job

CONTAINER_NAME = "job"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
DEFAULT_DATA_DIR = "/data"
JOB_UID = 10001  # the non-root user of Thresher's job images (see Dockerfile)


@dataclass(frozen=True)
class JobImages:
    """Images of Thresher's own jobs; the operator's configuration, not the user's spec."""

    cpu: str = "thresher-jobs:0.1.0"
    gpu: str = "thresher-jobs-gpu:0.1.0"
    pull_policy: str = "IfNotPresent"
    # Secrets (in each schedule's namespace) every run's pod pulls its image with: a private
    # registry's credentials. A name missing in a namespace only warns (the kubelet pulls
    # without it, and a registry that demands credentials blocks the run with its 401).
    pull_secrets: tuple[str, ...] = ()


def labels(name: str, job_type: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGED_BY_VALUE, SCHEDULE_LABEL: name, JOB_TYPE_LABEL: job_type}


def owner_reference(schedule: dict) -> dict:
    meta = schedule["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def _data_dir(spec: CollectionScheduleSpec) -> str:
    return spec.storage.mount_path if spec.storage else DEFAULT_DATA_DIR


def _quality_args(spec: CollectionScheduleSpec) -> list[str]:
    args = []
    if spec.alerting.min_quality_rate is not None:
        args += ["--min-quality-rate", str(spec.alerting.min_quality_rate)]
    if spec.alerting.min_items is not None:
        args += ["--min-items", str(spec.alerting.min_items)]
    return args


def job_container(spec: CollectionScheduleSpec, images: JobImages) -> dict:
    """The one container of every run: image, command, environment and limits."""
    job, data_dir = spec.job, _data_dir(spec)
    env: list[dict] = [{"name": "THRESHER_DATA_DIR", "value": data_dir}]
    if job.tmdb is not None:
        tmdb = job.tmdb
        if tmdb.time_zone is None and spec.time_zone:
            # Operating hours are meant in the schedule's own zone unless the job says otherwise.
            tmdb = tmdb.model_copy(update={"time_zone": spec.time_zone})
        ref = tmdb.api_key_secret_ref
        env.append({"name": "TMDB_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        container = {
            "image": images.cpu,
            "command": ["thresher", "job", "tmdb", "collect"],
            "args": ["--spec", tmdb.model_dump_json(by_alias=True, exclude_none=True),
                     "--data-dir", data_dir, *_quality_args(spec)],
        }
    elif job.drone is not None:
        if job.drone.parallelism > 1:
            # The indexes of one run share its id (the Job's name): their shard files meet under it.
            env.append({"name": RUN_ID_ENV, "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}})
        container = {
            "image": images.gpu if spec.resources.gpus > 0 else images.cpu,
            "command": ["thresher", "job", "drone", "run"],
            "args": ["--spec", job.drone.model_dump_json(by_alias=True, exclude_none=True),
                     "--data-dir", data_dir],
        }
    else:
        c = job.container
        container = {"image": c.image}
        if c.command:
            container["command"] = list(c.command)
        if c.args:
            container["args"] = list(c.args)
        if c.working_dir:
            container["workingDir"] = c.working_dir
        env += [e.model_dump(by_alias=True, exclude_none=True) for e in c.env]

    requests = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    limits = {}
    if spec.resources.cpu_limit:
        limits["cpu"] = spec.resources.cpu_limit
    if spec.resources.memory_limit:
        limits["memory"] = spec.resources.memory_limit
    if spec.resources.gpus:
        limits[GPU_RESOURCE] = str(spec.resources.gpus)
    resources = {"requests": requests, **({"limits": limits} if limits else {})}

    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.storage:
        mount = {"name": "data", "mountPath": spec.storage.mount_path, "readOnly": spec.storage.read_only}
        if spec.storage.sub_path:
            mount["subPath"] = spec.storage.sub_path
        mounts.append(mount)
    elif job.kind != "container":
        mounts.append({"name": "data", "mountPath": DEFAULT_DATA_DIR})

    return {
        "name": CONTAINER_NAME,
        **container,
        "imagePullPolicy": images.pull_policy,
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
        # Thresher jobs write their run result here; other containers' log tail stands in.
        "terminationMessagePath": RESULT_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def pod_spec(spec: CollectionScheduleSpec, images: JobImages) -> dict:
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
    if spec.storage:
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": spec.storage.claim_name, "readOnly": spec.storage.read_only}})
    elif spec.job.kind != "container":
        volumes.append({"name": "data", "emptyDir": {}})

    node_selector = dict(spec.node_selector)
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.resources.gpus:
        node_selector.setdefault(GPU_NODE_LABEL, "true")
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})

    pod: dict = {
        "restartPolicy": "Never",
        # Jobs never talk to the API server: no token is mounted into them.
        "automountServiceAccountToken": False,
        "containers": [job_container(spec, images)],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.job.kind != "container":
        pod["securityContext"].update({"runAsUser": JOB_UID, "runAsGroup": JOB_UID, "fsGroup": JOB_UID})
    if images.pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in images.pull_secrets]
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def job_spec(spec: CollectionScheduleSpec, images: JobImages, name: str) -> dict:
    rules: list[dict] = [
        # Evictions, preemptions and node drains are not the job's fault: do not spend a retry.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
    if spec.job.kind != "container":
        # A Thresher job exiting with CONFIG will fail the same way again: stop at once.
        rules.append({"action": "FailJob", "onExitCodes": {
            "containerName": CONTAINER_NAME, "operator": "In", "values": [int(ExitCode.CONFIG)]}})
    body: dict = {
        "backoffLimit": spec.retries,
        "podFailurePolicy": {"rules": rules},
        "template": {
            "metadata": {"labels": labels(name, spec.job.kind)},
            "spec": pod_spec(spec, images),
        },
    }
    if spec.timeout_seconds:
        body["activeDeadlineSeconds"] = spec.timeout_seconds
    shards = fan_out(spec)
    if shards > 1:
        # One pod per shard; retries count per index, so a shard that keeps failing does not use up the
        # others' retries or stop them, and its exit 5 (bad inputs, reported) ends only that index.
        del body["backoffLimit"]
        body.update({"completionMode": "Indexed", "completions": shards, "parallelism": shards,
                     "backoffLimitPerIndex": spec.retries})
        rules.append({"action": "FailIndex", "onExitCodes": {
            "containerName": CONTAINER_NAME, "operator": "In", "values": [int(ExitCode.PARTIAL)]}})
    return body


def fan_out(spec: CollectionScheduleSpec) -> int:
    """How many indexes a run of this spec has: the drone job's parallelism, else 1."""
    return spec.job.drone.parallelism if spec.job.drone is not None else 1


HOSTNAME_LABEL = "kubernetes.io/hostname"


def shared_storage_problem(spec: CollectionScheduleSpec, pvc: dict) -> str | None:
    """Why the indexes of a fanned-out run cannot share this claim, or None. ReadWriteMany is shared
    across nodes; ReadWriteOnce only by pods on one node, so the spec must pin one (nodeSelector
    kubernetes.io/hostname); ReadWriteOncePod never. Access modes from the claim's status (what was
    bound), else its spec."""
    shards = fan_out(spec)
    if shards <= 1:
        return None
    modes = set((pvc.get("status") or {}).get("accessModes") or (pvc.get("spec") or {}).get("accessModes") or [])
    name = (pvc.get("metadata") or {}).get("name", "?")
    if "ReadWriteMany" in modes:
        return None
    if "ReadWriteOnce" in modes and HOSTNAME_LABEL in spec.node_selector:
        return None
    have = ", ".join(sorted(modes)) or "no access modes"
    pin = "" if "ReadWriteOncePod" in modes and "ReadWriteOnce" not in modes else \
        f", or pin one node with nodeSelector {HOSTNAME_LABEL}"
    return (f'PersistentVolumeClaim "{name}" is {have}: job.drone.parallelism {shards} needs a ReadWriteMany '
            f"claim{pin}")


def build_cronjob(schedule: dict, parsed: CollectionSchedule, images: JobImages) -> dict:
    """The CronJob a schedule wants, for server-side apply (only fields Thresher owns)."""
    meta = schedule["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parsed.spec
    # An interval no cron expression repeats keeps the CronJob as a suspended run template: the
    # operator creates its Jobs at the due times (docs/architecture.md, who fires which runs).
    times = spec.times(namespace, name)
    # Without a schedule (only runAt) the CronJob is the template of that one run.
    timing = times.cronjob() if times is not None else CronJobTiming(TEMPLATE_SCHEDULE, "UTC", True)
    cron_spec: dict = {
        "schedule": timing.schedule,
        "suspend": spec.suspend or timing.suspend_for_template,
        "concurrencyPolicy": spec.concurrency_policy,
        "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
        "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": labels(name, spec.job.kind)},
            "spec": job_spec(spec, images, name),
        },
    }
    if timing.time_zone:
        cron_spec["timeZone"] = timing.time_zone
    if spec.starting_deadline_seconds is not None:
        cron_spec["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name, spec.job.kind),
            "ownerReferences": [owner_reference(schedule)],
        },
        "spec": cron_spec,
    }


def manual_job_name(cronjob_name: str, token: str) -> str:
    """Deterministic per run-now token, so a retried request cannot start two runs.
    11 characters are added, as the CronJob controller does (hence the 52-character limit)."""
    return f"{cronjob_name}-m{hashlib.sha256(token.encode()).hexdigest()[:9]}"


def manual_job(cronjob: dict, token: str) -> dict:
    """A Job from the CronJob's template, as `kubectl create job --from=cronjob/...` makes it."""
    return run_job(cronjob, manual_job_name(cronjob["metadata"]["name"], token),
                   {MANUAL_ANNOTATION: "true", RUN_TOKEN_ANNOTATION: token})


def drifted(desired: object, actual: object) -> bool:
    """True when ``actual`` lacks or differs in anything ``desired`` sets. Extra fields in
    ``actual`` (API defaults, other managers' annotations) are not drift."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return True
        return any(drifted(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(drifted(d, a) for d, a in zip(desired, actual))
    return desired != actual
