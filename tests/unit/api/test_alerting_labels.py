"""spec.alerting.labels: bounded, valid Prometheus label names, reserved names refused (issue 17)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from thresher.api.alerting_labels import INFO_LABELS, MAX_LABELS, AlertingLabels


def test_accepted_labels_become_the_info_series_labels():
    labels = AlertingLabels({"team": "data-platform", "owner": "alice", "consecutiveFailuresSeverity": "critical"})
    assert labels.info_labels() == {"team": "data-platform", "owner": "alice", "tier": "",
                                    "consecutive_failures_severity": "critical", "stale_severity": "",
                                    "run_failed_severity": ""}
    # Always the same label names, set or not: the series' identity stays static.
    assert tuple(AlertingLabels({}).info_labels()) == INFO_LABELS
    assert AlertingLabels(None).root == {}


@pytest.mark.parametrize(("labels", "message"), [
    ({"team-name": "x"}, "alerting.labels: 'team-name' is not a valid Prometheus label name (letters, digits and _, "
                         "not starting with a digit or __)"),
    ({"1team": "x"}, "alerting.labels: '1team' is not a valid Prometheus label name (letters, digits and _, not "
                     "starting with a digit or __)"),
    ({"__name__": "x"}, "alerting.labels: '__name__' is not a valid Prometheus label name (letters, digits and _, "
                        "not starting with a digit or __)"),
    ({"severity": "critical"}, "alerting.labels: 'severity' is reserved (Thresher sets it on every alert)"),
    ({"namespace": "other"}, "alerting.labels: 'namespace' is reserved (Thresher sets it on every alert)"),
    ({"costCenter": "x"}, "alerting.labels: 'costCenter' is not supported; use team, owner, tier for routing or "
                          "consecutiveFailuresSeverity, staleSeverity, runFailedSeverity to override a severity"),
    ({"team": ""}, "alerting.labels.team: '' must be 1-63 letters, digits, '-', '_' or '.', starting and ending "
                   "with a letter or digit"),
    ({"team": "a" * 64}, "alerting.labels.team: '" + "a" * 64 + "' must be 1-63 letters, digits, '-', '_' or '.', "
                         "starting and ending with a letter or digit"),
    ({"owner": "alice@example.org"}, "alerting.labels.owner: 'alice@example.org' must be 1-63 letters, digits, '-', "
                                     "'_' or '.', starting and ending with a letter or digit"),
    ({"staleSeverity": "page"}, "alerting.labels.staleSeverity: 'page' is not a severity; use warning or critical"),
    ({"team": 3}, "alerting.labels.team: the value must be a string"),
])
def test_bad_labels_are_refused_with_a_message_saying_what_is_allowed(labels, message):
    """Pins: a label the rules never copy, or one that breaks matching, must be refused, not ignored."""
    with pytest.raises(ValidationError) as err:
        AlertingLabels(labels)
    assert err.value.errors()[0]["msg"] == f"Value error, {message}"


def test_the_crd_schema_bounds_the_same_keys():
    schema = AlertingLabels.model_json_schema()
    assert schema["additionalProperties"] is False and schema["maxProperties"] == MAX_LABELS
    assert set(schema["properties"]) == {"team", "owner", "tier", "consecutiveFailuresSeverity", "staleSeverity",
                                         "runFailedSeverity"}
    assert schema["properties"]["staleSeverity"]["enum"] == ["warning", "critical"]
    assert schema["properties"]["team"]["maxLength"] == 63
