"""The benchmarks' request counter (benchmarks/opcost.py) reads the API server's counter right."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from opcost import diff_requests, parse_requests, per, subtract  # noqa: E402

METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="batch",resource="cronjobs",scope="resource",subresource="",verb="APPLY",version="v1"} 7
apiserver_request_total{code="201",component="apiserver",dry_run="",group="batch",resource="cronjobs",scope="resource",subresource="",verb="APPLY",version="v1"} 3
apiserver_request_total{code="403",component="apiserver",dry_run="",group="batch",resource="cronjobs",scope="resource",subresource="",verb="APPLY",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="thresher.dev",resource="collectionschedules",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 40
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/healthz",verb="GET",version=""} 9
apiserver_request_duration_seconds_bucket{verb="PATCH",le="0.1"} 5
"""


def test_requests_are_summed_over_codes_by_verb_and_resource():
    counts = parse_requests(METRICS)
    assert counts["APPLY cronjobs"] == 12
    assert counts["APPLY cronjobs 403"] == 2  # refused ones also on their own
    assert counts["PATCH collectionschedules/status"] == 2
    assert "PATCH" not in " ".join(k for k in counts if k.startswith("PATCH cronjobs"))


def test_a_difference_leaves_out_the_api_servers_own_machinery_and_unchanged_counts():
    before = parse_requests(METRICS)
    after = before.copy()
    after.update({"APPLY cronjobs": 1000, "PUT leases": 50, "GET collectionschedules/status": 0})
    assert diff_requests(after, before) == {"APPLY cronjobs": 1000}
    after.update({"PUT leases 409": 3, "APPLY cronjobs 403": 1})
    assert diff_requests(after, before) == {"APPLY cronjobs": 1000, "APPLY cronjobs 403": 1}


def test_the_operators_share_is_the_difference_of_two_runs():
    with_op = {"POST collectionschedules": 1000, "APPLY cronjobs": 1000, "PATCH collectionschedules": 1000}
    alone = {"POST collectionschedules": 1000, "WATCH collectionschedules": 1}
    assert subtract(with_op, alone) == {"APPLY cronjobs": 1000, "PATCH collectionschedules": 1000,
                                        "WATCH collectionschedules": -1}
    assert per(subtract(with_op, alone), 1000)["APPLY cronjobs"] == 1.0
    assert isinstance(parse_requests(""), Counter)
