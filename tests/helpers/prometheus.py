"""Run a real Prometheus (the Debian binary) for tests: scrape targets, then query it.

Usage::

    with running_prometheus(tmp_path, targets=["127.0.0.1:9090"]) as prom:
        prom.wait_for_scrape()
        result = prom.query('thresher_schedule_stale{namespace="data"}')

It listens on a free loopback port with a throw-away data directory and a
short scrape interval, and is stopped (then killed, if it lingers) on exit.
Every wait polls with a deadline on ``time.monotonic()``; nothing sleeps in
the hope that something has happened. Reused by the integration tests to
scrape the real operator.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.helpers.tools import require_tool
from thresher.devcluster.process import free_port  # noqa: F401  (tests import it from here)

T = TypeVar("T")

# The job name matches the rules' `up{job=~".*thresher.*"}`.
DEFAULT_JOB = "thresher-operator"


class PrometheusError(RuntimeError):
    """Prometheus failed to start, exited, or answered a query with an error."""



def poll(predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.2,
         describe: str = "condition") -> T:
    """Call ``predicate`` until it returns a truthy value, or raise TimeoutError after ``timeout`` seconds.

    Each try waits on a monotonic deadline; the last exception or value is in the error.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except (OSError, PrometheusError, ValueError) as exc:  # not up yet / transient
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{describe} not met within {timeout}s; last: {last!r}")
        time.sleep(interval)  # pacing between polls, not waiting for an event


@dataclass
class Prometheus:
    """A running Prometheus process and a tiny client for its HTTP API."""

    process: subprocess.Popen
    url: str
    log_path: Path
    job: str
    targets: Sequence[str] = field(default_factory=list)

    def _get(self, path: str, params: dict[str, str] | None = None, timeout: float = 10) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=timeout) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error in the body
            body = json.loads(exc.read() or b"{}")
            raise PrometheusError(f"{path} {params}: HTTP {exc.code}: {body.get('error', body)}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query; returns the ``result`` list (vector) or a one-element list for a scalar."""
        params = {"query": expr}
        if at is not None:
            params["time"] = str(at)
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def alerts(self) -> list[dict]:
        """Active alerts (pending and firing) as /api/v1/alerts reports them."""
        return self._get("/api/v1/alerts")["alerts"]

    def targets_health(self) -> list[dict]:
        return self._get("/api/v1/targets")["activeTargets"]

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except urllib.error.HTTPError:
            return False  # 503 while starting

    def wait_ready(self, timeout: float = 30) -> None:
        poll(self.is_ready, timeout=timeout, describe="prometheus /-/ready")

    def wait_for_scrape(self, timeout: float = 30, after: float | None = None) -> None:
        """Wait until every target has a successful scrape (newer than ``after``, a unix time, when given)."""

        def scraped() -> bool:
            result = self.query(f'timestamp(up{{job="{self.job}"}} == 1)')
            if len(result) != len(self.targets):
                return False
            return after is None or all(float(r["value"][1]) > after for r in result)

        poll(scraped, timeout=timeout, describe=f"a successful scrape of {list(self.targets)}")

    def wait_for_value(self, expr: str, timeout: float = 30) -> list[dict]:
        """Poll ``expr`` until it returns at least one finite sample; return the result."""

        def finite() -> list[dict] | None:
            result = self.query(expr)
            return result if any(math.isfinite(float(r["value"][1])) for r in result) else None

        return poll(finite, timeout=timeout, describe=f"finite data for {expr!r}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def write_config(path: Path, *, targets: Sequence[str], job: str = DEFAULT_JOB, scrape_interval: str = "1s",
                 rule_files: Sequence[Path] = ()) -> Path:
    """A prometheus.yml scraping ``targets`` (host:port) as ``job``."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{
            "job_name": job,
            # As the chart's ServiceMonitor: keep the metrics' own `namespace` label.
            "honor_labels": True,
            "scrape_timeout": scrape_interval,
            "static_configs": [{"targets": list(targets)}],
        }],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def running_prometheus(workdir: Path, *, targets: Sequence[str], job: str = DEFAULT_JOB,
                       scrape_interval: str = "1s", rule_files: Sequence[Path] = (),
                       start_timeout: float = 30) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``targets``; yield it ready; stop it on exit (logs kept in ``workdir``)."""
    binary = require_tool("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "prometheus.yml", targets=targets, job=job,
                          scrape_interval=scrape_interval, rule_files=rule_files)
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
             # Fresh samples only: a short lookback so "absent" shows quickly.
             "--query.lookback-delta=30s"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    prom = Prometheus(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path, job=job,
                      targets=list(targets))
    try:
        prom.wait_ready(start_timeout)
        yield prom
    finally:
        prom.stop()
