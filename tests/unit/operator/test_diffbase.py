"""kopf's diff base for schedules (operator/diffbase.py): creations, spec changes and run-now
are told apart as kopf's annotation told them, without a PATCH per new schedule."""

from __future__ import annotations

import json

import kopf

from thresher.api.names import BACKFILL_ANNOTATION, KOPF_PREFIX, RUN_NOW_ANNOTATION
from thresher.operator.diffbase import ScheduleDiffBase

KEY = f"{KOPF_PREFIX}/last-handled-configuration"


def schedule(generation: int = 1, observed: int | None = None, annotations: dict | None = None) -> kopf.Body:
    body = {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u-1", "generation": generation,
                         "labels": {"team": "a"}, "annotations": dict(annotations or {}),
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"schedule": f"{generation} 3 * * *", "job": {"container": {"image": "busybox"}}}}
    if observed is not None:
        body["status"] = {"observedGeneration": observed}
    return kopf.Body(body)


def stored(storage: ScheduleDiffBase, body: kopf.Body) -> dict:
    """What ``store`` writes after a handled cycle (the patch's annotations)."""
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    return dict(patch.get("metadata", {}).get("annotations", {}))


def test_a_new_schedule_is_a_creation_and_handling_it_writes_nothing():
    storage = ScheduleDiffBase()
    new = schedule()
    assert storage.fetch(body=new) is None  # kopf: creation
    assert stored(storage, new) == {}  # no PATCH of its own
    # The handler's own status write comes back: nothing changed.
    echo = schedule(observed=1)
    assert storage.fetch(body=echo) == storage.build(body=echo)


def test_a_spec_change_is_a_change_of_spec_only():
    storage = ScheduleDiffBase()
    stored(storage, schedule(observed=1))
    changed = schedule(generation=2, observed=1)
    old, new = storage.fetch(body=changed), storage.build(body=changed)
    assert old["spec"] != new["spec"]
    assert {k: v for k, v in old.items() if k != "spec"} == {k: v for k, v in new.items() if k != "spec"}
    # A label or an unrelated annotation is not a change (no handler reacts to them).
    relabelled = schedule(observed=1, annotations={"note": "x"})
    assert storage.fetch(body=relabelled) == storage.build(body=relabelled)


def test_run_now_is_a_change_once_and_its_token_survives_a_restart():
    storage = ScheduleDiffBase()
    stored(storage, schedule(observed=1))
    asked = schedule(observed=1, annotations={RUN_NOW_ANNOTATION: "t1"})
    old = storage.fetch(body=asked)
    assert RUN_NOW_ANNOTATION not in old.get("metadata", {}).get("annotations", {})
    written = stored(storage, asked)  # the token handled: written, so a restart knows it
    assert json.loads(written[KEY]) == {"metadata": {"annotations": {RUN_NOW_ANNOTATION: "t1"}}}
    after = schedule(observed=1, annotations={RUN_NOW_ANNOTATION: "t1", **written})
    assert storage.fetch(body=after) == storage.build(body=after)
    assert stored(storage, after) == {}  # unchanged: no second write
    restarted = ScheduleDiffBase()
    assert restarted.fetch(body=after) == restarted.build(body=after)  # resume, not a second run


def test_after_a_restart_the_status_tells_what_was_handled():
    restarted = ScheduleDiffBase()
    current = schedule(generation=3, observed=3)
    assert restarted.fetch(body=current) == restarted.build(body=current)  # resume
    behind = schedule(generation=3, observed=2)  # changed while the operator was down
    assert ScheduleDiffBase().fetch(body=behind)["spec"] != ScheduleDiffBase().build(body=behind)["spec"]


def test_a_refresh_writing_observed_generation_does_not_hide_a_spec_change():
    """Only a handler that succeeded moves the handled generation in a running process: a
    status write of a refresh (which also sets observedGeneration) while the update handler
    waits for a retry leaves the change pending."""
    storage = ScheduleDiffBase()
    assert storage.fetch(body=schedule(observed=1)) == storage.build(body=schedule(observed=1))
    changed = schedule(generation=2, observed=1)
    assert storage.fetch(body=changed) != storage.build(body=changed)  # the handler fails: no store
    refreshed = schedule(generation=2, observed=2)
    assert storage.fetch(body=refreshed) != storage.build(body=refreshed)  # still a change
    stored(storage, refreshed)  # the retried handler succeeded
    assert storage.fetch(body=refreshed) == storage.build(body=refreshed)


def test_an_older_operators_whole_essence_is_still_read():
    whole = {"spec": {"schedule": "0 3 * * *"}, "metadata": {"annotations": {RUN_NOW_ANNOTATION: "t0"}}}
    body = schedule(annotations={KEY: json.dumps(whole), RUN_NOW_ANNOTATION: "t0"})
    assert ScheduleDiffBase().fetch(body=body) == whole  # no status yet: kopf's comparison as before
    with_status = schedule(observed=1, annotations={KEY: json.dumps(whole), RUN_NOW_ANNOTATION: "t0"})
    storage = ScheduleDiffBase()
    assert storage.fetch(body=with_status) == storage.build(body=with_status)


def test_the_essence_is_what_the_handlers_compare_and_no_more():
    storage = ScheduleDiffBase()
    assert storage.build(body=schedule(generation=4, annotations={"note": "x"})) == {"spec": {"generation": 4}}
    asked = schedule(annotations={RUN_NOW_ANNOTATION: "t", "note": "x"})
    assert storage.build(body=asked) == {"spec": {"generation": 1},
                                         "metadata": {"annotations": {RUN_NOW_ANNOTATION: "t"}}}


def test_the_handlers_own_fields_keep_the_essence_small():
    """kopf passes every field handler's field (spec, the watched annotations) as extra fields;
    they are compared already. A first version fell back to kopf's whole essence for them, which
    never equals a fetched one: every status write was an update, a second reconcile each."""
    storage = ScheduleDiffBase()
    fields = {("spec",), ("metadata", "annotations", RUN_NOW_ANNOTATION),
              ("metadata", "annotations", BACKFILL_ANNOTATION)}
    body = schedule(observed=1)
    assert storage.build(body=body, extra_fields=fields) == {"spec": {"generation": 1}}
    stored(storage, body)
    assert storage.fetch(body=body) == storage.build(body=body, extra_fields=fields)
    assert "status" in storage.build(body=kopf.Body({**body, "status": {"x": 1}}),
                                     extra_fields={("status", "x")})  # kopf's own way


def test_other_kinds_are_not_compared():
    storage = ScheduleDiffBase()
    job = kopf.Body({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "uid": "j-1"},
                     "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}})
    assert storage.fetch(body=job) is None
    assert storage.build(body=job) == {}


def _handlers_run_after_a_restart(body: kopf.Body) -> tuple[str, list[str]]:
    """kopf's own decision for the first event a new process sees (the listing, initial=True):
    the cause and the names of Thresher's handlers it calls, with a fresh diff base (memory gone)."""
    import logging
    import types

    from kopf._cogs.structs import diffs
    from kopf._core.intents import causes

    from thresher.api.names import GROUP, PLURAL, VERSION
    from thresher.operator import handlers

    registry = kopf.OperatorRegistry()
    handlers.register(registry, types.SimpleNamespace(metrics=None))  # registration only
    storage = ScheduleDiffBase()
    old, new = storage.fetch(body=body), storage.build(body=body)
    cause = causes.detect_changing_cause(
        finalizer="f", raw_event={"type": None, "object": dict(body)}, body=body, old=old, new=new,
        diff=diffs.diff(old, new), initial=True, indices={}, logger=logging.getLogger(__name__),
        patch=kopf.Patch(), memo=kopf.Memo(),
        resource=kopf.Resource(GROUP, VERSION, PLURAL, kind="CollectionSchedule", namespaced=True))
    called = sorted(h.id.split("/")[0].rsplit(".", 1)[-1] for h in registry._changing.iter_handlers(cause))
    return cause.reason.value, called


def test_a_run_now_asked_just_before_a_kill_runs_after_the_restart_exactly_once():
    """kill -9 between the user's annotation and kopf's PATCH of the diff base (or before the run-now
    handler ran at all): the next process runs it (the Job's name comes from the token, so a run the
    dead process had already started is not started twice); once handled, a restart does not again."""
    # The schedule was handled (status), the token never made it into kopf's annotation.
    pending = schedule(observed=1, annotations={RUN_NOW_ANNOTATION: "t1"})
    assert _handlers_run_after_a_restart(pending) == ("update", ["resume_schedule", "run_now"])
    # Killed before even the creation was handled (no status, no annotation): both with the creation.
    unhandled = schedule(annotations={RUN_NOW_ANNOTATION: "t1"})
    assert _handlers_run_after_a_restart(unhandled) == ("create", ["reconcile_schedule", "run_now"])
    # Handled and written: a restart resumes, the token is not run again.
    storage = ScheduleDiffBase()
    stored(storage, schedule(observed=1))
    written = stored(storage, pending)
    handled = schedule(observed=1, annotations={RUN_NOW_ANNOTATION: "t1", **written})
    assert _handlers_run_after_a_restart(handled) == ("resume", ["resume_schedule"])
