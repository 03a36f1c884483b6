"""What a stretch of work costs, counted: API requests by verb and resource (the API server's own
``apiserver_request_total``, before and after), watch events, and the operator's CPU and memory.

    with Cost(api, op) as cost:   # op may be None (the operator stopped)
        ...                       # the work
    cost.result(per=1000)         # {"api_requests": {"PATCH collectionschedules/status": 1000, ...}, ...}

The counter covers every client of the API server (the benchmark's own creates and watches, the
controllers), so per-operator figures are the difference of two runs of the same work, one with
the operator stopped (``diff_requests``). Parsing is a line scan of the API server's /metrics
(no Prometheus parser: the text is megabytes of histograms).
"""

from __future__ import annotations

import re
from collections import Counter

# apiserver_request_total{code="201",component="apiserver",...,resource="cronjobs",...,verb="PATCH",...} 42
_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# Requests of the API server's own machinery (leases, health, discovery): not what a benchmark does.
IGNORED_RESOURCES = frozenset({"leases", "", "apiservices", "endpointslices"})


def parse_requests(text: str) -> Counter[str]:
    """``apiserver_request_total`` summed over codes, keyed "VERB resource[/subresource]"; the
    refused ones (4xx, 5xx) also under "VERB resource CODE"."""
    counts: Counter[str] = Counter()
    for match in _LINE.finditer(text):
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key, value = f"{labels.get('verb', '?')} {resource}", int(float(match["value"]))
        counts[key] += value
        if labels.get("code", "200") >= "400":
            counts[f"{key} {labels['code']}"] += value
    return counts


def diff_requests(after: Counter[str], before: Counter[str], ignored=IGNORED_RESOURCES) -> dict[str, int]:
    """Requests made between two snapshots, without the API server's own machinery, largest first."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    kept = {k: v for k, v in delta.items() if v > 0 and k.split(" ")[1].split("/")[0] not in ignored}
    return dict(sorted(kept.items(), key=lambda kv: (-kv[1], kv[0])))


def subtract(counts: dict[str, int], baseline: dict[str, int]) -> dict[str, int]:
    """``counts`` less the same keys of ``baseline`` (the same work without the operator)."""
    return {k: v for k in sorted(set(counts) | set(baseline))
            if (v := counts.get(k, 0) - baseline.get(k, 0)) != 0}


def per(counts: dict[str, int], n: int) -> dict[str, float]:
    return {k: round(v / n, 3) for k, v in counts.items()}


class Cost:
    """Counts API requests, and the operator's CPU seconds and memory, over a ``with`` block.
    ``api`` needs ``request_text(path)``; ``op`` ``cpu_seconds()`` and ``memory()`` (or None)."""

    def __init__(self, api, op=None) -> None:
        self.api, self.op = api, op
        self.requests: dict[str, int] = {}
        self.cpu_s: float | None = None
        self.memory: dict | None = None
        self._before: Counter[str] | None = None

    def __enter__(self) -> Cost:
        self._before = parse_requests(self.api.request_text("/metrics"))
        self._cpu0 = self.op.cpu_seconds() if self.op else None
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._before is None:
            return
        self.requests = diff_requests(parse_requests(self.api.request_text("/metrics")), self._before)
        if self.op:
            self.cpu_s = self.op.cpu_seconds() - self._cpu0
            self.memory = self.op.memory()
        self._before = None

    def result(self, n: int) -> dict:
        out: dict = {"api_requests": self.requests, "api_requests_per_item": per(self.requests, n)}
        if self.cpu_s is not None:
            out.update(operator_cpu_s=round(self.cpu_s, 2), operator_cpu_ms_per_item=round(1000 * self.cpu_s / n, 2),
                       operator_mem_mib=self.memory)
        return out
