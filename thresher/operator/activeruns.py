"""An unfinished Job and what it waits on, in; its ``status.active`` entry out (issue 13).

Pure functions over the plain dicts the Kubernetes API returns (the same shapes kopf hands to
handlers), so they are tested with real-shaped objects and no cluster. The messages they parse
are the ones Kubernetes v1.34 writes; each parser names its source:

- kubelet ``pkg/kubelet/images/image_manager.go``: container waiting ``ErrImagePull`` with the
  runtime's error, ``ImagePullBackOff`` with ``Back-off pulling image "X": <previous error>``,
  ``InvalidImageName`` with ``Failed to apply default image tag "X": ...``; Warning Events
  ``Failed`` ``Failed to pull image "X": <error>`` on the Pod;
- kubelet ``pkg/kubelet/kubelet_pods.go`` / ``util/manager``: ``CreateContainerConfigError``
  with ``secret "X" not found`` (``secrets "X"`` from the API-backed cache), ``configmap "X" not
  found``, ``couldn't find key K in Secret NS/X``, ``couldn't find key K in ConfigMap NS/X``;
- scheduler ``pkg/scheduler/framework/types.go``: ``PodScheduled=False``, reason
  ``Unschedulable``, ``0/N nodes are available: ... preemption: ...``; volume binding:
  ``persistentvolumeclaim "X" not found``, ``pod has unbound immediate PersistentVolumeClaims``;
- Job controller ``pkg/controller/controller_utils.go``: Warning Event ``FailedCreate``
  ``Error creating: pods "J-" is forbidden: <admission error>`` (``no PriorityClass with name X
  was found``, ``exceeded quota: ...``, ``violates PodSecurity "restricted:latest": ...``);
- node lifecycle controller: Node ``Ready=Unknown``, reason ``NodeStatusUnknown``,
  ``Kubelet stopped posting node status.``

How the reconciler uses it (docs/architecture.md, "Unfinished Jobs"): for each unfinished Job
of a schedule it passes the Job's Pods (watched by label), the Events whose ``involvedObject`` is
the Job or one of those Pods (listed only for a run without a running pod), the Nodes the Pods
are bound to and the PVCs their volumes claim; the entries become ``status.active``,
``run_blocked_condition`` the ``RunBlocked`` condition, ``blocked_counts`` the
``thresher_schedule_runs_blocked`` gauge, and ``startup_verdict`` ends runs blocked too long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from thresher.api.activerun import BLOCKED_REASONS, MAX_ACTIVE_MESSAGE, ActiveRun
from thresher.api.names import SCHEDULED_TIMESTAMP_ANNOTATION as SCHEDULED_TIMESTAMP
from thresher.operator.runs import finished_condition, parse_time

# The gauge that reports these entries (registered by the operator's metrics; named here so
# the alert rule, the docs and the metrics have one source).
BLOCKED_GAUGE = "thresher_schedule_runs_blocked"
RUN_BLOCKED_CONDITION = "RunBlocked"

_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "RegistryUnavailable",
               "SignatureValidationFailed"}
_CONTAINER_REASONS = {"InvalidImageName": "InvalidImageName",
                      "CreateContainerConfigError": "CreateContainerConfigError",
                      "CreateContainerError": "CreateContainerError",
                      **{r: "ImagePullBackOff" for r in _IMAGE_PULL}}


@dataclass(frozen=True)
class Grace:
    """How long a cause that may still fix itself is tolerated before the run counts as blocked."""

    # The scheduler retries; a cluster autoscaler may add a node, a provisioner bind a volume.
    unschedulable_seconds: float = 60.0
    # The node lifecycle controller already waits 40 s without heartbeats before NotReady.
    node_not_ready_seconds: float = 0.0


@dataclass(frozen=True)
class _Cause:
    reason: str
    message: str
    since: datetime | None


# --- small readers ----------------------------------------------------------------------------

def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ACTIVE_MESSAGE else text[:MAX_ACTIVE_MESSAGE - 1] + "…"


def _condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _event_text(event: dict) -> str:
    return event.get("message") or event.get("note") or ""  # core/v1 or events.k8s.io/v1


def _event_first(event: dict) -> datetime | None:
    return (parse_time(event.get("firstTimestamp")) or parse_time(event.get("eventTime"))
            or parse_time((event.get("metadata") or {}).get("creationTimestamp")))


def _event_last(event: dict) -> datetime | None:
    series = event.get("series") or {}
    return (parse_time(event.get("lastTimestamp")) or parse_time(series.get("lastObservedTime"))
            or _event_first(event))


def _regards(event: dict, kind: str, name: str) -> bool:
    about = event.get("involvedObject") or event.get("regarding") or {}  # core/v1 or events.k8s.io/v1
    return about.get("kind") == kind and about.get("name") == name


def _about(events: list[dict], kind: str, name: str, reason: str) -> list[dict]:
    """Events of ``reason`` regarding one object, oldest first."""
    found = [e for e in events if e.get("reason") == reason and _regards(e, kind, name)]
    return sorted(found, key=lambda e: _sortable(_event_first(e)))


def _sortable(t: datetime | None) -> str:
    return t.isoformat() if t else ""


def _earliest(events: list[dict]) -> datetime | None:
    times = [t for t in map(_event_first, events) if t is not None]
    return min(times) if times else None


def _pod_started(pod: dict) -> datetime | None:
    return parse_time((pod.get("status") or {}).get("startTime")) or parse_time(pod["metadata"].get("creationTimestamp"))


def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


# --- the causes ---------------------------------------------------------------------------------

_RPC_PREFIX = re.compile(r"^rpc error: code = \w+ desc = ")
_BACKOFF_PREFIX = re.compile(r'^Back-off pulling image "[^"]*"(: )?')


def _pull_detail(waiting: dict, image: str, pod_events: list[dict]) -> str:
    """The registry's or runtime's own words, the same in ErrImagePull and in the back-off."""
    text = waiting.get("message") or ""
    text = _BACKOFF_PREFIX.sub("", text)
    text = re.sub(r"^(ErrImagePull|RegistryUnavailable|SignatureValidationFailed): ", "", text)
    if not text:  # an older kubelet's back-off message names only the image: take the last pull error
        prefix = f'Failed to pull image "{image}": '
        pulls = [e for e in pod_events if _event_text(e).startswith(prefix)]
        if pulls:
            text = _event_text(max(pulls, key=lambda e: _sortable(_event_last(e))))
            text = text[len(prefix):]
    return _RPC_PREFIX.sub("", text) or "no message from the kubelet"


_NOT_FOUND = re.compile(r'^(secrets?|configmaps?) "([^"]+)" not found$')
_NO_KEY = re.compile(r"^couldn't find key (\S+) in (Secret|ConfigMap) ([^/\s]+)/(\S+)$")


def _config_detail(message: str, namespace: str) -> str:
    """Which Secret, ConfigMap or key is missing, from the kubelet's message."""
    if m := _NOT_FOUND.match(message):
        kind = "Secret" if m.group(1).startswith("secret") else "ConfigMap"
        return f'{kind} "{m.group(2)}" does not exist in namespace {namespace}'
    if m := _NO_KEY.match(message):
        return f'{m.group(2)} "{m.group(4)}" in namespace {m.group(3)} has no key "{m.group(1)}"'
    return message or "no message from the kubelet"


def _container_cause(pod: dict, pod_events: list[dict]) -> _Cause | None:
    status = pod.get("status") or {}
    namespace = pod["metadata"]["namespace"]
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = _CONTAINER_REASONS.get(waiting.get("reason", ""))
        if reason is None:
            continue
        image, container = cs.get("image", "?"), cs.get("name", "?")
        if reason == "ImagePullBackOff":
            detail = _pull_detail(waiting, image, pod_events)
            failed = [e for e in pod_events if _event_text(e).startswith(f'Failed to pull image "{image}"')]
            return _Cause(reason, f'image "{image}" cannot be pulled (container {container}): {detail}',
                          _earliest(failed) or _pod_started(pod))
        if reason == "InvalidImageName":
            detail = re.sub(r'^Failed to apply default image tag "[^"]*": ', "", waiting.get("message") or "")
            return _Cause(reason, f'image "{image}" is not a valid image reference (container {container}): '
                          f"{detail}", _pod_started(pod))
        errors = [e for e in pod_events if _event_text(e).startswith("Error: ")]
        if reason == "CreateContainerConfigError":
            detail = _config_detail(waiting.get("message") or "", namespace)
            return _Cause(reason, f"container {container} cannot start: {detail}", _earliest(errors) or _pod_started(pod))
        return _Cause(reason, f"container {container} could not be created: "
                      f"{_RPC_PREFIX.sub('', waiting.get('message') or 'no message from the kubelet')}",
                      _earliest(errors) or _pod_started(pod))
    return None


def _claims(pod: dict) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
            if (v.get("persistentVolumeClaim") or {}).get("claimName")]


def _scheduling_cause(pod: dict, pvcs: dict[str, dict], grace: Grace, now: datetime) -> _Cause | None:
    """Why an unscheduled pod stays unscheduled: a missing or unbound claim, or no node fits."""
    namespace = pod["metadata"]["namespace"]
    scheduled = _condition(pod, "PodScheduled")
    since = parse_time(scheduled.get("lastTransitionTime")) or parse_time(pod["metadata"].get("creationTimestamp"))
    missing = [c for c in _claims(pod) if c not in pvcs]
    if missing:  # will not appear by itself: blocked at once
        return _Cause("UnboundPVC", f'PersistentVolumeClaim "{missing[0]}" does not exist in namespace '
                      f"{namespace}", since)
    if scheduled.get("status") != "False" or scheduled.get("reason") != "Unschedulable":
        return None
    if since is not None and (now - since).total_seconds() < grace.unschedulable_seconds:
        return None
    # v1.34 appends "no new claims to deallocate," (dynamic resource allocation) before the
    # preemption part, which says nothing about this pod's fit.
    why = (scheduled.get("message") or "").split(" preemption: ")[0].strip()
    why = why.removesuffix("no new claims to deallocate,").strip()
    unbound = [c for c in _claims(pod) if ((pvcs[c].get("status") or {}).get("phase")) != "Bound"]
    if unbound:
        phase = (pvcs[unbound[0]].get("status") or {}).get("phase") or "Pending"
        return _Cause("UnboundPVC", f'PersistentVolumeClaim "{unbound[0]}" is {phase}, not bound to a volume: '
                      f"{why}", since)
    return _Cause("Unschedulable", f"no node can run the pod: {why or 'the scheduler gave no message'}", since)


def _node_cause(pod: dict, nodes: dict[str, dict], grace: Grace, now: datetime) -> _Cause | None:
    """A scheduled pod whose node is gone or not Ready: its containers cannot run or report."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return None
    node = nodes.get(node_name)
    pod_ready = _condition(pod, "Ready")
    fallback = parse_time(pod_ready.get("lastTransitionTime")) if pod_ready.get("status") == "False" else None
    if node is None:
        return _Cause("NodeLost", f'node "{node_name}" no longer exists; the pod cannot run or report its end',
                      fallback or now)
    ready = _condition(node, "Ready")
    if ready.get("status") == "True":
        return None
    since = parse_time(ready.get("lastTransitionTime")) or fallback or now
    if (now - since).total_seconds() < grace.node_not_ready_seconds:
        return None
    state = "unreachable" if ready.get("status", "Unknown") == "Unknown" else "NotReady"
    detail = f" ({ready['message']})" if ready.get("message") else ""
    return _Cause("NodeLost", f'node "{node_name}" is {state}{detail}; the pod cannot run or report its end',
                  since)


def _create_cause(job: dict, events: list[dict]) -> _Cause | None:
    """The Job controller's FailedCreate newer than its last SuccessfulCreate."""
    name = job["metadata"]["name"]
    created = _about(events, "Job", name, "SuccessfulCreate")
    last_created = max((t for t in map(_event_last, created) if t), default=None)
    failed = [e for e in _about(events, "Job", name, "FailedCreate")
              if last_created is None or (_event_last(e) and _event_last(e) > last_created)]
    if not failed:
        return None
    newest = max(failed, key=lambda e: _sortable(_event_last(e)))
    detail = re.sub(r"^Error creating: ", "", _event_text(newest))
    return _Cause("FailedCreate", f"the Job controller cannot create the pod: {detail}", _earliest(failed))


# --- what is worth reading ----------------------------------------------------------------------

def events_needed(job: dict, pods: list[dict]) -> bool:
    """Whether Events can say more about this unfinished Job than its Pods already do.

    Only two causes read them: the Job controller's ``FailedCreate`` (a Job without a live pod)
    and the pull or container errors of a pod whose container waits with such a reason (the
    registry's words, the first failure's time). A pod waiting for the scheduler or still
    starting its containers says everything in its own status, so a burst of ordinary pending
    runs costs no Events read (issue 19: one LIST per waiting run kept every handler thread on
    the API server)."""
    live = sorted((p for p in pods if not _terminal(p)), key=lambda p: p["metadata"].get("creationTimestamp", ""))
    if not live:
        return finished_condition(job) is None
    status = live[-1].get("status") or {}
    return any(_CONTAINER_REASONS.get(((cs.get("state") or {}).get("waiting") or {}).get("reason", ""))
               not in (None, "InvalidImageName")
               for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []))


# --- the entry -----------------------------------------------------------------------------------

def active_run(job: dict, pods: list[dict], events: list[dict], nodes: list[dict], pvcs: list[dict],
               grace: Grace, now: datetime) -> ActiveRun | None:
    """The ``status.active`` entry of an unfinished Job; None once the Job has finished.

    ``pods``: the Job's Pods; ``events``: Events regarding the Job and those Pods; ``nodes``:
    Nodes (at least those the Pods are bound to; a missing one counts as gone); ``pvcs``: the
    claims the Pods mount that exist."""
    if finished_condition(job) is not None:
        return None
    meta, status = job["metadata"], job.get("status") or {}
    base = {
        "name": meta["name"],
        "scheduledTime": parse_time((meta.get("annotations") or {}).get(SCHEDULED_TIMESTAMP))
        or parse_time(meta.get("creationTimestamp")),
        "startTime": parse_time(status.get("startTime")),
    }
    live = sorted((p for p in pods if not _terminal(p)), key=lambda p: p["metadata"].get("creationTimestamp", ""))
    if not live:
        cause = _create_cause(job, events)
        return _entry(base, "Pending", None, cause)
    pod = live[-1]  # the current attempt
    node = (pod.get("spec") or {}).get("nodeName")
    pod_events = [e for e in events if _regards(e, "Pod", pod["metadata"]["name"])]
    cause = (_node_cause(pod, {n["metadata"]["name"]: n for n in nodes}, grace, now)
             or _container_cause(pod, pod_events)
             or (None if node else _scheduling_cause(pod, {c["metadata"]["name"]: c for c in pvcs}, grace, now)))
    running = (pod.get("status") or {}).get("phase") == "Running"
    return _entry(base, "Running" if running else "Pending", node, cause)


def _entry(base: dict, phase: str, node: str | None, cause: _Cause | None) -> ActiveRun:
    if cause is None:
        return ActiveRun(**base, phase=phase, node=node)
    assert cause.reason in BLOCKED_REASONS, cause.reason
    return ActiveRun(**base, phase="Blocked", node=node, reason=cause.reason, message=_one_line(cause.message),
                     blockedSince=cause.since)


# --- decisions on the entries ------------------------------------------------------------------

@dataclass(frozen=True)
class StartupVerdict:
    """End this run: it has been blocked longer than ``startupTimeoutSeconds``."""

    job_name: str
    outcome: Literal["FailedToStart", "NodeLost"]
    reason: str
    message: str


def startup_verdict(entry: ActiveRun, startup_timeout_seconds: int | None, now: datetime) -> StartupVerdict | None:
    """Whether a blocked run has waited long enough to be ended and recorded as a failure.

    Measured from ``blockedSince`` (when the cause appeared), so a run that ran for an hour
    and then lost its node gets the full timeout too. ``None`` or 0 disables it."""
    if entry.phase != "Blocked" or not startup_timeout_seconds or entry.blocked_since is None:
        return None
    blocked = (now - entry.blocked_since).total_seconds()
    if blocked < startup_timeout_seconds:
        return None
    outcome = "NodeLost" if entry.reason == "NodeLost" else "FailedToStart"
    message = (f"blocked for {timedelta(seconds=int(blocked))} ({entry.reason}), longer than "
               f"startupTimeoutSeconds={startup_timeout_seconds}: {entry.message}")
    return StartupVerdict(entry.name, outcome, entry.reason or "", _one_line(message))


def run_blocked_condition(entries: list[ActiveRun]) -> tuple[bool, str, str]:
    """``RunBlocked``: (status, reason, message). True names the oldest blocked run; False once
    no run is blocked (the run moved on or ended)."""
    blocked = [e for e in entries if e.phase == "Blocked"]
    if not blocked:
        return False, "NoRunBlocked", "no active run is blocked"
    first = min(blocked, key=lambda e: (_sortable(e.blocked_since), e.name))
    others = f" (and {len(blocked) - 1} more blocked)" if len(blocked) > 1 else ""
    return True, first.reason or "", _one_line(f"run {first.name}: {first.message}{others}")


def blocked_counts(entries: list[ActiveRun]) -> dict[str, int]:
    """Blocked runs per reason, every reason present (0 included) so the gauge's series exist
    before the first blocked run and drop back to 0 after it."""
    counts = dict.fromkeys(BLOCKED_REASONS, 0)
    for e in entries:
        if e.phase == "Blocked" and e.reason:
            counts[e.reason] += 1
    return counts
