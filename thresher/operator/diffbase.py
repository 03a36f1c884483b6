"""kopf's diff base for CollectionSchedules, without a PATCH of its own per new schedule (issue 19).

kopf decides between creation, update, resume and "nothing changed" by comparing each event's
body with the last handled one (its *diff base*), which it keeps in an annotation: one PATCH
of the schedule, and one more watch event to process, after every handled creation and spec
change, on top of the operator's own CronJob apply and status write.

Here the diff base is what Thresher's handlers need and no more:

* **spec**: the generation last handled (the API server bumps ``metadata.generation`` on every
  change of spec, and only then). In this process, remembered from the handler that succeeded;
  at first sight, ``status.observedGeneration`` (written by the handler's own status write). A
  generation other than the one handled is a change of spec (kopf's update; the handler reads
  the body, not the diff); a schedule never handled is a creation. Every schedule is reconciled
  at start-up either way (creation, update or resume), so a status that claims too much (a
  refresh of an older process also writes observedGeneration) costs nothing.
* **the annotations the field handlers watch** (``run-now``, ``backfill``): the values last
  handled, kept in kopf's annotation as before, but written only when they change: a user's
  run-now still costs one PATCH, a new schedule none. A handled run-now token must survive a
  restart (its Job may be gone by then, and running it again would be a second run).

Nothing else is compared (labels, other annotations: no handler reacts to them), so the
essence is a few bytes instead of kopf's deep copy of the whole body (managedFields and status
included) on every event, and of Jobs, Pods and CronJobs, whose essence no handler compares,
nothing at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

from thresher.api.names import BACKFILL_ANNOTATION, KIND, KOPF_PREFIX, RUN_NOW_ANNOTATION

WATCHED_ANNOTATIONS = (RUN_NOW_ANNOTATION, BACKFILL_ANNOTATION)
GENERATION = "generation"  # the spec, compared by its metadata.generation
COMPARED = {("spec",), *(("metadata", "annotations", k) for k in WATCHED_ANNOTATIONS)}  # field paths


def watched(essence: dict | None) -> dict[str, str]:
    annotations = ((essence or {}).get("metadata") or {}).get("annotations") or {}
    return {k: annotations[k] for k in WATCHED_ANNOTATIONS if annotations.get(k) is not None}


def essence_of(generation: int | None, annotations: dict[str, str]) -> dict:
    """What the handlers compare (pure): the spec by its generation (the API server bumps it on
    every spec change, and only then), the watched annotations by value."""
    out: dict = {"spec": {GENERATION: generation}}
    if annotations:
        out["metadata"] = {"annotations": dict(annotations)}
    return out


class ScheduleDiffBase(kopf.AnnotationsDiffBaseStorage):
    """See the module's docstring. Same annotation key as before, so schedules handled by an
    older operator (whose annotation holds a whole essence) are read the same way."""

    def __init__(self) -> None:
        super().__init__(prefix=KOPF_PREFIX, key="last-handled-configuration")
        # uid -> (generation, watched annotations) handled by this process
        self._handled: dict[str, tuple[int | None, dict[str, str]]] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        # kopf passes the field of every field handler (spec, the watched annotations); another
        # one (a status field, a part of the spec) is compared kopf's own way.
        if any(tuple(f) not in COMPARED for f in extra_fields or ()):
            return super().build(body=body, extra_fields=extra_fields)
        if body.get("kind") != KIND:  # Jobs, Pods, CronJobs: no handler compares them
            return cast(kopf.BodyEssence, {})
        meta = body.get("metadata") or {}
        return cast(kopf.BodyEssence, essence_of(meta.get("generation"), watched(body)))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = super().fetch(body=body)
        if body.get("kind") != KIND:
            return stored
        meta = body.get("metadata") or {}
        handled = self._handled.get(meta.get("uid"))
        if handled is None:
            # First sight in this process: what the previous one recorded on the object. Kept,
            # so that from now on only this process's handlers move it (a status write of a
            # refresh also sets observedGeneration, and must not hide a spec change).
            handled_generation = (body.get("status") or {}).get("observedGeneration")
            if handled_generation is None:  # never handled (a creation), or by an older operator
                return stored
            handled = self._handled[meta.get("uid")] = (handled_generation, watched(stored))
        return cast(kopf.BodyEssence, essence_of(*handled))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") != KIND:
            return super().store(body=body, patch=patch, essence=essence)
        meta = body.get("metadata") or {}
        annotations = watched(essence)
        self._handled[meta.get("uid")] = (meta.get("generation"), annotations)
        small = {"metadata": {"annotations": annotations}} if annotations else {}
        if (super().fetch(body=body) or {}) != small:  # written only when the watched ones change
            super().store(body=body, patch=patch, essence=cast(kopf.BodyEssence, small))

    def forget(self, uid: str | None) -> None:
        self._handled.pop(uid, None)
