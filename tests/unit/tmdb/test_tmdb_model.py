"""The TmdbJob API model: the contract the operator renders into --spec and the CRD."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from thresher.api.tmdb import CUSTOM_NEEDS_SOURCES_CEL, TmdbJob, TmdbSource, tmdb_job_schema

from .support import job


def _walk_properties(schema: dict, defs: dict, path: str = ""):
    if "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}{name}", prop
        target = prop
        if "items" in prop:
            target = prop["items"]
        for option in prop.get("anyOf", [target]):
            if "$ref" in option:
                yield from _walk_properties(option, defs, f"{path}{name}.")
        if "$ref" in target:
            yield from _walk_properties(target, defs, f"{path}{name}.")


def test_every_field_has_a_description_for_kubectl_explain():
    schema = tmdb_job_schema()
    fields = list(_walk_properties(schema, schema.get("$defs", {})))
    assert len(fields) > 20
    missing = [name for name, prop in fields if not prop.get("description")]
    assert missing == []


def test_camel_case_aliases_and_defaults():
    spec = job()
    dumped = spec.model_dump(by_alias=True)
    for alias in ("apiKeySecretRef", "appendToResponse", "changesWindowDays", "operatingHours", "apiBaseUrl",
                  "requestsPerSecond", "requestTimeoutSeconds", "maxRetries", "timeZone", "maxDetailRequests",
                  "exportBaseUrl", "minPopularity", "includeAdult", "includeVideo"):
        assert alias in dumped
    assert spec.collection == "daily" and spec.language == "en-US" and spec.workers == 8
    assert spec.requests_per_second == 38 and spec.api_key_secret_ref.key == "api-key"
    # populate_by_name: the Python names work too
    assert TmdbJob(api_key_secret_ref={"name": "x"}, requests_per_second=5).requests_per_second == 5


def test_secret_ref_is_required_and_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="apiKeySecretRef"):
        TmdbJob.model_validate({})
    with pytest.raises(ValidationError, match="apiKey"):
        job(apiKey="inline-secret")  # a key is never inline


@pytest.mark.parametrize("fields", [
    {"requestsPerSecond": 41}, {"requestsPerSecond": 0}, {"workers": 0}, {"workers": 33},
    {"changesWindowDays": 15}, {"changesWindowDays": 0}, {"appendToResponse": [f"a{i}" for i in range(21)]},
    {"operatingHours": "8-22"}, {"operatingHours": "08-24"}, {"collection": "yearly"},
    {"sources": [{"endpoint": "popular", "pages": 501}], "collection": "custom"},
    {"sources": [{"endpoint": "search"}], "collection": "custom"}, {"language": "english"},
    {"apiBaseUrl": "ftp://x"}, {"exportBaseUrl": "files.tmdb.org/p/exports"}, {"maxDetailRequests": -1},
    {"maxDetailRequests": 1_000_001}, {"minPopularity": -0.5}, {"collection": "full"},
])
def test_out_of_range_values_are_rejected(fields):
    with pytest.raises(ValidationError):
        job(**fields)


def test_custom_needs_sources_and_the_rule_has_a_cel_twin():
    with pytest.raises(ValidationError, match="custom"):
        job(collection="custom")
    assert job(collection="custom", sources=[{"endpoint": "popular"}]).sources[0].pages == 1
    assert "size(self.sources)" in CUSTOM_NEEDS_SOURCES_CEL


def test_hourly_defaults_to_operating_hours_08_22():
    assert job(collection="hourly").effective_operating_hours() == "08-22"
    assert job(collection="daily").effective_operating_hours() is None
    assert job(collection="hourly", operatingHours="00-23").effective_operating_hours() == "00-23"


_sources = st.builds(
    TmdbSource,
    endpoint=st.sampled_from(["popular", "top_rated", "now_playing", "upcoming", "trending_day", "trending_week",
                              "discover"]),
    pages=st.integers(1, 500),
    params=st.dictionaries(st.sampled_from(["with_genres", "vote_average.gte", "sort_by"]),
                           st.text("0123456789.|,", min_size=1, max_size=6), max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(sources=st.lists(_sources, min_size=1, max_size=5), enrich=st.booleans(),
       rps=st.floats(0.1, 40), workers=st.integers(1, 32))
def test_any_valid_spec_round_trips_through_camel_case_json(sources, enrich, rps, workers):
    """The operator renders the spec as camelCase JSON; the job must read back exactly the same spec."""
    spec = job(collection="custom", sources=[s.model_dump() for s in sources], enrich=enrich,
               requestsPerSecond=rps, workers=workers)
    again = TmdbJob.model_validate(json.loads(spec.model_dump_json(by_alias=True)))
    assert again == spec
