"""One unfinished run of a schedule, as ``status.active`` will list it (issue 13).

A run is ``Pending`` (no pod yet, or a pod waiting on something that fixes itself in seconds:
scheduling, a pull in progress), ``Running``, or ``Blocked``: waiting on a cause that will not
fix itself (an image that cannot be pulled, a missing Secret, no node that fits, a node that
went away). A blocked run carries one of ``BLOCKED_REASONS`` and one human line saying what
exactly is wrong. The reasons are a closed set because they label the
``thresher_schedule_runs_blocked`` gauge (bounded cardinality) and key the runbook.

``thresher/operator/activeruns.py`` computes entries from the Job, its Pods and Events, the
Nodes and PVCs; this module only declares the shape (for the CRD, ``kubectl explain`` and the
``thresher status`` dashboard).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from thresher.api.timestamp import Timestamp

ActivePhase = Literal["Pending", "Running", "Blocked"]

BlockedReason = Literal[
    "ImagePullBackOff",  # ErrImagePull / ImagePullBackOff / a pull refused by the runtime
    "InvalidImageName",  # the image reference does not parse
    "CreateContainerConfigError",  # a Secret, ConfigMap or key the container needs is missing
    "CreateContainerError",  # the runtime could not create the container
    "Unschedulable",  # no node fits, beyond the grace (the scheduler's message)
    "FailedCreate",  # the Job controller cannot create the pod (admission: PriorityClass, quota, Pod Security)
    "UnboundPVC",  # a PersistentVolumeClaim the pod mounts is missing or not bound
    "NodeLost",  # the pod's node is NotReady, unreachable or gone
]
BLOCKED_REASONS: tuple[str, ...] = get_args(BlockedReason)

MAX_ACTIVE_MESSAGE = 1024  # as RunRecord.message: a status line, not a log


class ActiveRun(BaseModel):
    """A run whose Job has not finished: its phase, node and, when blocked, the cause."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                              extra="ignore", json_schema_extra={"x-kubernetes-validations": [
                                  {"rule": "(self.phase == 'Blocked') == has(self.reason)",
                                   "message": "reason is set exactly when phase is Blocked"}]})

    name: str = Field(max_length=253, description="Name of the Job.")
    scheduled_time: Timestamp | None = Field(default=None, alias="scheduledTime",
                                             description="The schedule time the run was created for (creation "
                                             "time for a manual run).")
    start_time: Timestamp | None = Field(default=None, alias="startTime",
                                         description="When the Job controller started the Job.")
    phase: ActivePhase = Field(description="Pending: no pod yet, or waiting on scheduling or a pull in progress. "
                               "Running: a container runs. Blocked: waiting on a cause that will not fix "
                               "itself (see reason).")
    node: str | None = Field(default=None, max_length=253, description="The node of the current pod, once "
                             "scheduled.")
    reason: BlockedReason | None = Field(default=None, description="Why the run is blocked (only when phase is "
                                         "Blocked); one runbook section each.")
    message: str | None = Field(default=None, max_length=MAX_ACTIVE_MESSAGE,
                                description="What exactly is wrong, in one line: which image, Secret, key, "
                                "PriorityClass, PVC or node, with the message Kubernetes gave.")
    blocked_since: Timestamp | None = Field(default=None, alias="blockedSince",
                                            description="When the cause was first observed (the first failed "
                                            "pull, the scheduling failure, the node turning NotReady). The run is "
                                            "ended after spec.startupTimeoutSeconds from here.")

    @model_validator(mode="after")
    def _reason_iff_blocked(self) -> ActiveRun:
        # The same rule as the CEL above, for the operator's side.
        if (self.phase == "Blocked") != (self.reason is not None):
            raise ValueError("reason is set exactly when phase is Blocked")
        return self
