"""kopf's diff base for CollectionSchedules, without a PATCH of its own per new schedule (issue 19).

kopf decides between creation, update, resume and "nothing changed" by comparing each event's
body with the last handled one (its *diff base*), which it keeps in an annotation: one PATCH
of the schedule, and one more watch event to process, after every handled creation and spec
change, on top of the operator's own CronJob apply and status write.

Here the diff base is what Thresher's handlers need and no more:

* **spec**: the generation last handled. In this process, remembered from the handler that
  succeeded; at start-up, ``status.observedGeneration`` (written by the handler's own status
  write). A generation other than the one handled makes a change of spec (kopf's update, whose
  handler re-reads the body anyway); a schedule never handled is a creation. Every schedule is
  reconciled at start-up either way (creation, update or resume).
* **the annotations the field handlers watch** (``run-now``, ``backfill``): the values last
  handled, kept in kopf's annotation as before, but written only when they change: a user's
  run-now still costs one PATCH, a new schedule none. A handled run-now token must survive a
  restart (its Job may be gone by then, and running it again would be a second run).

Everything else in the essence (labels, other annotations) is taken from the body itself: no
handler reacts to it, so it never makes a change. Building the essence copies only the parts
compared, not the whole body (kopf deep-copies it, managedFields and status included, on every
event).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from thresher.api.names import BACKFILL_ANNOTATION, KIND, KOPF_PREFIX, RUN_NOW_ANNOTATION

WATCHED_ANNOTATIONS = (RUN_NOW_ANNOTATION, BACKFILL_ANNOTATION)
HANDLED_GENERATION = "handled-generation"  # stands for an older spec in a fetched essence
SKIPPED = ("apiVersion", "kind", "metadata", "status")


def watched(essence: dict | None) -> dict[str, str]:
    annotations = ((essence or {}).get("metadata") or {}).get("annotations") or {}
    return {k: annotations[k] for k in WATCHED_ANNOTATIONS if k in annotations}


def fetched_essence(current: dict, handled_generation: int | None, generation: int | None,
                    handled_annotations: dict[str, str]) -> dict:
    """The diff base as kopf compares it (pure): the current essence with the watched annotations
    as last handled, and a stand-in spec when the generation handled is not the current one."""
    essence = dict(current)  # nested parts are replaced, never changed in place
    annotations = {k: v for k, v in (essence.get("metadata") or {}).get("annotations", {}).items()
                   if k not in WATCHED_ANNOTATIONS}
    annotations.update(handled_annotations)
    meta = {k: v for k, v in (essence.get("metadata") or {}).items() if k != "annotations"}
    if annotations:
        meta["annotations"] = annotations
    if meta:
        essence["metadata"] = meta
    else:
        essence.pop("metadata", None)
    if handled_generation != generation:
        essence["spec"] = {HANDLED_GENERATION: handled_generation}
    return essence


class ScheduleDiffBase(kopf.AnnotationsDiffBaseStorage):
    """See the module's docstring. Same annotation key as before, so schedules handled by an
    older operator (whose annotation holds a whole essence) are read the same way."""

    def __init__(self) -> None:
        super().__init__(prefix=KOPF_PREFIX, key="last-handled-configuration")
        # uid -> (generation, watched annotations) handled by this process
        self._handled: dict[str, tuple[int | None, dict[str, str]]] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if extra_fields:  # a handler filtering on a status field: kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        slim = {k: v for k, v in body.items() if k not in SKIPPED}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(slim))  # copies only these parts

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = super().fetch(body=body)
        if body.get("kind") != KIND:  # Jobs, Pods, CronJobs: kopf's way (no handler compares them)
            return stored
        generation = body.get("metadata", {}).get("generation")
        handled = self._handled.get(body.get("metadata", {}).get("uid"))
        if handled is not None:
            handled_generation, annotations = handled
        else:  # first sight in this process: what the previous one recorded on the object
            handled_generation = (body.get("status") or {}).get("observedGeneration")
            if stored is None and handled_generation is None:
                return None  # never handled: a creation
            annotations = watched(stored)
            if handled_generation is None:  # an older operator's whole essence, no status yet
                return stored
        return fetched_essence(self.build(body=body), handled_generation, generation, annotations)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") != KIND:
            return super().store(body=body, patch=patch, essence=essence)
        meta = body.get("metadata") or {}
        annotations = watched(essence)
        self._handled[meta.get("uid")] = (meta.get("generation"), annotations)
        small = {"metadata": {"annotations": annotations}} if annotations else {}
        if (super().fetch(body=body) or {}) != small:  # written only when the watched ones change
            super().store(body=body, patch=patch, essence=small)

    def forget(self, uid: str | None) -> None:
        self._handled.pop(uid, None)
