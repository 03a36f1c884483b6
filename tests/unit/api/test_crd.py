"""The generated CRD: committed copy up to date, structural, documented, and parseable by kubectl."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from tests.unit.api.test_cron import expressions
from thresher.api import cron, crd
from thresher.api.schedule import SCHEDULE_REGEX
from thresher.cli import app

REPO = Path(__file__).resolve().parents[3]


def walk(node: dict, path: str = ""):
    """Every schema node with its path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def schema() -> dict:
    return crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("rel", crd.CRD_PATHS, ids=str)
def test_committed_crd_is_up_to_date(rel):
    assert (REPO / rel).read_text() == crd.render(), "run `thresher crd generate`"


def test_rendered_yaml_has_no_anchors():
    text = crd.render()
    assert "&id" not in text and "*id" not in text


def test_schema_is_structural(schema):
    for path, node in walk(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string") or \
            node.get("x-kubernetes-preserve-unknown-fields"), f"{path}: no type"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties false"
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title"} & set(node), path
        assert node.get("uniqueItems") is not True, path
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties with additionalProperties"
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(key, True), bool), f"{path}: {key} must be a boolean in OpenAPI v3.0"


def test_every_field_is_documented(schema):
    for path, node in walk(schema):
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description (kubectl explain)"


def test_status_is_exact_so_nothing_is_kept_unvalidated(schema):
    for path, node in walk(schema["properties"]["status"], ".status"):
        assert not node.get("x-kubernetes-preserve-unknown-fields"), path


def test_no_privilege_fields_exist(schema):
    text = yaml.safe_dump(schema)
    for forbidden in ("privileged", "hostPath", "hostNetwork", "hostPID", "allowPrivilegeEscalation",
                      "securityContext", "capabilities"):
        assert forbidden not in text


def test_defaults_are_valid_for_their_nodes(schema):
    spec = schema["properties"]["spec"]["properties"]
    assert spec["resources"]["default"] == {} and spec["alerting"]["default"] == {}
    assert spec["concurrencyPolicy"]["default"] in spec["concurrencyPolicy"]["enum"]
    for path, node in walk(schema):
        if "default" in node and node["type"] == "object":
            missing = [r for r in node.get("required", []) if "default" not in node["properties"][r]]
            assert not missing, f"{path}: default {{}} cannot satisfy required {missing}"


def test_lists_and_cel(schema):
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert status["properties"]["recentRuns"]["maxItems"] == 20
    env = spec["properties"]["job"]["properties"]["container"]["properties"]["env"]
    assert env["x-kubernetes-list-map-keys"] == ["name"] and "name" in env["items"]["required"]
    job_rules = [r["rule"] for r in spec["properties"]["job"]["x-kubernetes-validations"]]
    assert any("has(self.tmdb), has(self.drone), has(self.container)" in r for r in job_rules)
    root_rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert root_rules == ["self.metadata.name.size() <= 52"]
    for _path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] and rule["rule"]
            # The API server wants a path relative to the node, starting with a dot.
            assert rule.get("fieldPath", ".")[0] == ".", rule
            if "fieldPath" in rule:
                assert rule["fieldPath"][1:] in node["properties"], rule


def test_names_and_columns():
    names = crd.crd()["spec"]["names"]
    assert names["shortNames"] == ["csched"] and names["categories"] == ["thresher"]
    columns = {c["name"]: c for c in crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    # string: kubectl shows a future date column as <invalid> (it renders dates as ages)
    assert columns["Next Run"] == {"name": "Next Run", "type": "string", "jsonPath": ".status.nextScheduleTime"}
    assert columns["Failures"]["type"] == "integer"
    assert list(columns)[:6] == ["Schedule", "Suspend", "Last Result", "Last Success", "Next Run", "Failures"]
    assert crd.crd()["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_kubectl_parses_the_crd(tmp_path):
    """kubectl's own decoder (offline): the YAML is one valid CustomResourceDefinition object."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required on PATH"
    out = subprocess.run([kubectl, "annotate", "--local", "-f", str(REPO / crd.CRD_PATHS[0]), "checked=yes",
                          "-o", "yaml"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["spec"]["names"]["plural"] == "collectionschedules"


# --- the schedule regex in CEL agrees with cron.py ----------------------------------------------

_SCHEDULE = re.compile(SCHEDULE_REGEX)


@settings(max_examples=150, deadline=None)
@given(expr=expressions())
def test_admission_regex_accepts_what_cron_accepts(expr):
    """Admission must never refuse a schedule the operator would run."""
    assert cron.validate_schedule(expr) is None
    assert _SCHEDULE.match(expr)


@pytest.mark.parametrize("expr", ["H * * * *", "H(0-29)/10 H(8-17) * * mon-fri", "@daily", "0 0 1 JAN,jul ?",
                                  "*/5 * * * *", "7/15 1,2,3 1-31/2 * 0-6"])
def test_admission_regex_accepts(expr):
    assert _SCHEDULE.match(expr)


@pytest.mark.parametrize("expr", ["60 * * * *", "* 24 * * *", "* * 32 * *", "* * * 13 *", "* * * * 7",
                                  "* * * *", "@every", "@every 5", "@DAILY", " @daily", "* * H * *", "H(0-99) * * * *", "x * * * *"])
def test_admission_regex_refuses(expr):
    assert not _SCHEDULE.match(expr)
    assert cron.validate_schedule(expr) is not None


# --- the converter on models other teams might write --------------------------------------------


class Inner(BaseModel):
    """Inner doc."""

    model_config = ConfigDict(extra="forbid")
    level: Literal["a", "b"] = Field(default="a", description="Level.")
    fixed: Literal["only"] = Field(default="only", description="A constant.")


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: Inner = Field(description="Field doc wins over the model doc.")
    maybe: Inner | None = Field(default=None, description="Optional nested.")
    many: list[Inner] = Field(default_factory=list, max_length=3, description="List of nested.")
    labels: dict[str, str] = Field(default_factory=dict, description="Map.")
    rate: float = Field(default=1.0, gt=0, le=40, description="Exclusive minimum.")
    tags: set[str] = Field(default_factory=set, description="A set.")
    port: int | str = Field(default=80, description="Int or string.")


def test_converter_handles_refs_optionals_literals_maps_and_constraints():
    out = crd.model_schema(Outer)
    props = out["properties"]
    assert props["inner"]["description"] == "Field doc wins over the model doc."
    assert props["inner"]["properties"]["level"] == {"default": "a", "description": "Level.", "enum": ["a", "b"],
                                                     "type": "string"}
    assert props["inner"]["properties"]["fixed"]["enum"] == ["only"]
    assert props["maybe"]["type"] == "object" and "nullable" not in props["maybe"] and "default" not in props["maybe"]
    assert props["many"]["items"]["properties"]["level"]["type"] == "string" and props["many"]["maxItems"] == 3
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert props["rate"]["minimum"] == 0 and props["rate"]["exclusiveMinimum"] is True
    assert props["tags"]["x-kubernetes-list-type"] == "set" and "uniqueItems" not in props["tags"]
    assert props["port"]["x-kubernetes-int-or-string"] is True
    assert out["required"] == ["inner"] and "additionalProperties" not in out


def test_converter_refuses_non_structural_unions():
    class Bad(BaseModel):
        either: list[str] | str = Field(description="Not structural.")

    with pytest.raises(crd.SchemaError, match="either: union"):
        crd.model_schema(Bad)


# --- the command --------------------------------------------------------------------------------


def test_cli_generate_and_check(tmp_path):
    runner = CliRunner()
    stale = runner.invoke(app, ["crd", "generate", "--check", "--root", str(tmp_path)])
    assert stale.exit_code == 1 and "+++ manifests/crds/" in stale.output
    written = runner.invoke(app, ["crd", "generate", "--root", str(tmp_path)])
    assert written.exit_code == 0
    assert (tmp_path / crd.CRD_PATHS[1]).read_text() == crd.render()
    fresh = runner.invoke(app, ["crd", "generate", "--check", "--root", str(tmp_path)])
    assert fresh.exit_code == 0, fresh.output
    path = tmp_path / crd.CRD_PATHS[0]
    path.write_text(path.read_text().replace("csched", "cs"))
    edited = runner.invoke(app, ["crd", "generate", "--check", "--root", str(tmp_path)])
    assert edited.exit_code == 1 and "-    - cs\n" in edited.output


def test_docs_mention_every_field(schema):
    """docs/api.md drifts silently otherwise."""
    docs = (REPO / "docs" / "api.md").read_text()
    spec, status = schema["properties"]["spec"]["properties"], schema["properties"]["status"]["properties"]
    names = set(spec) | set(status) | set(spec["resources"]["properties"]) | set(spec["alerting"]["properties"])
    names |= set(spec["storage"]["properties"]) | set(spec["tolerations"]["items"]["properties"])
    names |= set(status["recentRuns"]["items"]["properties"]) | set(status["stats"]["properties"])
    missing = sorted(n for n in names if f"`{n}`" not in docs and f"`{n} " not in docs)
    assert not missing, f"docs/api.md does not mention {missing}"
