"""DroneJob: the operator's contract (aliases, descriptions, constraints, defaults)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from thresher.api.drone import ALL_INDEX_NAMES, INPUT_KINDS, DroneJob, Thresholds


def _walk(schema: dict, defs: dict, seen: set, path: str = ""):
    """Yield (path, property schema) for every property, following $ref into $defs."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return
        seen.add(name)
        yield from _walk(defs[name], defs, seen, path)
        return
    for key, prop in schema.get("properties", {}).items():
        yield f"{path}.{key}", prop
        for sub in [prop, *prop.get("anyOf", []), *prop.get("allOf", []), prop.get("items", {})]:
            yield from _walk(sub, defs, seen, f"{path}.{key}")


def test_every_field_has_a_description_for_kubectl_explain():
    schema = DroneJob.model_json_schema(by_alias=True)
    props = list(_walk(schema, schema.get("$defs", {}), set()))
    assert len(props) > 25  # the nested thresholds were walked too
    missing = [path for path, prop in props if not prop.get("description")]
    assert missing == []


def test_defaults_and_camel_case_aliases():
    job = DroneJob()
    assert job.task == "process" and job.input_path == "input" and job.output_path == "output"
    assert job.recursive is True and job.backend == "auto" and job.indices == []
    assert set(job.extensions) >= {"jpg", "jpeg", "png", "tif", "tiff", "mp4", "avi", "mov"}
    dumped = job.model_dump(by_alias=True)
    for alias in ("inputPath", "outputPath", "batchSize", "videoFrameIntervalSeconds", "healthMapMaxSize",
                  "reportPeriodDays", "retentionDays", "backupKeep", "dryRun", "primaryIndex"):
        assert alias in dumped
    assert DroneJob.model_validate(dumped) == job
    assert DroneJob(batch_size=3).batch_size == DroneJob.model_validate({"batchSize": 3}).batch_size == 3


@pytest.mark.parametrize("bad", [
    {"batchSize": 0}, {"batchSize": 257}, {"backend": "tpu"}, {"task": "explode"},
    {"indices": ["NDWI"]}, {"unknownField": 1}, {"healthMapMaxSize": 10}, {"videoFrameIntervalSeconds": 0},
    {"extensions": ["j.pg"]}, {"thresholds": {"ndvi": {"vegetation": 0.5, "stressed": 0.2}}},
    {"indices": ["VARI"], "primaryIndex": "NDVI"},
])
def test_rejects_invalid_specs(bad):
    with pytest.raises(ValidationError):
        DroneJob.model_validate(bad)


def test_thresholds_cover_every_index_and_input_kind_with_stressed_not_below_vegetation():
    t = Thresholds()
    for kind in INPUT_KINDS:
        for name in ALL_INDEX_NAMES:
            vegetation, stressed = t.cuts(name, kind)
            assert stressed >= vegetation
    assert Thresholds(ndvi={"vegetation": 0.1, "stressed": 0.5}).cuts("NDVI", "dn16") == (0.1, 0.5)


@pytest.mark.parametrize("alias", ["inputPath", "outputPath", "statePath", "backupPath"])
@pytest.mark.parametrize("value", ["..", "../x", "a/../../etc", "a/.."])
def test_parent_directory_in_a_path_is_refused_with_one_line(alias, value):
    """Issue 14: '..' in the drone paths escaped the data volume; refused like storage.subPath."""
    with pytest.raises(ValidationError, match=f"drone {alias} must not contain '..'"):
        DroneJob.model_validate({alias: value})
    assert DroneJob.model_validate({alias: "a..b/c"})  # '..' inside a name is fine


def test_path_rules_are_in_the_schema_for_admission():
    rules = DroneJob.model_json_schema(by_alias=True)["x-kubernetes-validations"]
    assert {r["fieldPath"] for r in rules} == {".inputPath", ".outputPath", ".statePath", ".backupPath",
                                               ".parallelism"}
