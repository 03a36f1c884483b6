"""Helpers of the operator scale benchmark: a small threaded API client, watch recorders, the
operator process with its /proc accounting, and the (pure) workload generator.

The client talks HTTP to the API server directly (requests, one pooled session) rather than
through the kubernetes package, so the benchmark's own overhead stays small next to what it
measures on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

from thresher.api.names import API_VERSION

GROUP_PATH = f"/apis/{API_VERSION}"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- workload (pure) ------------------------------------------------------------------------

# Schedules that rarely fire during a benchmark (daily or rarer), so runs come from run-now and
# the counts stay exact; H terms in several forms, macros, weekday ranges.
CRONS = ("H H * * *", "H H(0-5) * * 1-5", "@weekly", "@monthly", "H 4 1 * *", "30 4 * * *",
         "H/15 H(0-1) 1 1 *", "H(0-29) H 15 * *", "0 0 1 1 *", "@yearly")
ZONES = (None, "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "UTC",
         "America/Sao_Paulo", "Asia/Kolkata")
TMDB_COLLECTIONS = ("daily", "weekly", "hourly", "monthly")
GPU_EVERY = 200  # one GPU drone schedule in 200: the kwok GPU node has 8 GPUs


def schedule_body(i: int, name: str) -> dict:
    """The i-th CollectionSchedule of the benchmark workload: tmdb, drone and container jobs,
    mixed schedules and time zones."""
    kind = ("tmdb", "drone", "container")[i % 3]
    if kind == "tmdb":
        job = {"tmdb": {"collection": TMDB_COLLECTIONS[i % len(TMDB_COLLECTIONS)],
                        "apiKeySecretRef": {"name": "tmdb-api", "key": "api-key"}}}
    elif kind == "drone":
        job = {"drone": {"task": "process", "inputPath": "incoming", "outputPath": "health"}}
    else:
        job = {"container": {"image": "busybox:1.36", "command": ["sh", "-c", f"echo run {i}"]}}
    spec: dict = {"schedule": CRONS[i % len(CRONS)], "job": job, "retries": i % 3}
    zone = ZONES[i % len(ZONES)]
    if zone:
        spec["timeZone"] = zone
    if kind == "drone" and i % GPU_EVERY == 1:
        spec["resources"] = {"gpus": 1}
        job["drone"]["backend"] = "cuda"
    if i % 7 == 0:
        spec["timeoutSeconds"] = 3600
    return {"apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
            "metadata": {"name": name}, "spec": spec}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None,
            "mean": statistics.fmean(values) if values else None}


# --- API client -----------------------------------------------------------------------------


class Api:
    """Admin client for one dev cluster (certificates from its state directory)."""

    def __init__(self, state_dir: Path, pool: int = 32) -> None:
        cfg = yaml.safe_load((state_dir / "kubeconfig").read_text())
        self.server = cfg["clusters"][0]["cluster"]["server"]
        pki = state_dir / "pki"
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        self.session.mount("https://", adapter)
        self.session.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
        self.session.verify = str(pki / "ca.crt")
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override the cluster's CA

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                ok: Iterable[int] = (200, 201), **params) -> dict:
        data = json.dumps(body) if body is not None else None
        resp = self.session.request(method, self.server + path, data=data, params=params or None,
                                    headers={"Content-Type": content_type}, timeout=60)
        if resp.status_code not in tuple(ok):
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else {}

    def request_text(self, path: str) -> str:
        resp = self.session.get(self.server + path, timeout=60)
        resp.raise_for_status()
        return resp.text

    def list(self, path: str, **params) -> dict:
        return self.request("GET", path, **params)

    def create_namespace(self, name: str) -> None:
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}, ok=(201, 409))

    def delete_namespace(self, name: str, wait: float = 0) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{name}", ok=(200, 202, 404))
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline:
            if self.session.get(f"{self.server}/api/v1/namespaces/{name}", timeout=10).status_code == 404:
                return
            time.sleep(1)

    def wait_service_account(self, namespace: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = self.session.get(f"{self.server}/api/v1/namespaces/{namespace}/serviceaccounts/default",
                                    timeout=10)
            if resp.status_code == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"no default ServiceAccount in {namespace}")


def parallel(fn: Callable, items: list, threads: int) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


# --- watch recorders ------------------------------------------------------------------------


class Watch(threading.Thread):
    """Streams one collection's watch events and calls ``on_event(type, obj, received_at)``.
    Restarts the stream when it ends, from the last resourceVersion seen."""

    def __init__(self, api: Api, path: str, on_event: Callable[[str, dict, float], None]) -> None:
        super().__init__(daemon=True)
        self.api, self.path, self.on_event = api, path, on_event
        self.stopped = threading.Event()
        self.ready = threading.Event()
        listing = api.list(path, limit=1)  # the current resourceVersion: events from here on
        self.rv = listing["metadata"]["resourceVersion"]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                with self.api.session.get(self.api.server + self.path, stream=True, timeout=(10, 90),
                                          params={"watch": "1", "resourceVersion": self.rv,
                                                  "allowWatchBookmarks": "true",
                                                  "timeoutSeconds": "60"}) as resp:
                    self.ready.set()
                    for line in resp.iter_lines():
                        if self.stopped.is_set():
                            return
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":  # 410 Gone: relist from now
                            self.rv = self.api.list(self.path, limit=1)["metadata"]["resourceVersion"]
                            break
                        self.rv = obj["metadata"].get("resourceVersion", self.rv)
                        if event["type"] != "BOOKMARK":
                            self.on_event(event["type"], obj, time.time())
            except (requests.RequestException, ValueError):
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopped.set()


def ready_condition(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


class Recorder:
    """First time each CronJob appeared and each schedule turned Ready, and each schedule's
    recorded runs, from watch events (wall-clock receive times)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cronjob_added: dict[str, float] = {}
        self.cronjob_events: dict[str, int] = {}
        self.ready_at: dict[str, float] = {}
        self.runs: dict[str, list[str]] = {}
        self.runs_complete_at: dict[str, float] = {}
        self.expect_runs: dict[str, int] = {}
        self.jobs_done_at: dict[str, float] = {}
        self.events: Counter[str] = Counter()  # "resource TYPE": what every watcher of them receives

    def on_cronjob(self, type_: str, obj: dict, at: float) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            self.events[f"cronjobs {type_}"] += 1
            self.cronjob_events[name] = self.cronjob_events.get(name, 0) + 1
            if type_ == "ADDED":
                self.cronjob_added.setdefault(name, at)

    def on_schedule(self, type_: str, obj: dict, at: float) -> None:
        name = obj["metadata"]["name"]
        runs = [r["jobName"] for r in (obj.get("status") or {}).get("recentRuns") or []]
        with self.lock:
            self.events[f"collectionschedules {type_}"] += 1
            if ready_condition(obj):
                self.ready_at.setdefault(name, at)
            self.runs[name] = runs
            want = self.expect_runs.get(name)
            if want is not None and len(runs) >= want:
                self.runs_complete_at.setdefault(name, at)

    def on_job(self, type_: str, obj: dict, at: float) -> None:
        done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (obj.get("status") or {}).get("conditions") or [])
        if done:
            with self.lock:
                self.jobs_done_at.setdefault(obj["metadata"]["name"], at)


# --- the operator process -------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Operator:
    """`thresher operator run` as a child process, with CPU seconds and peak RSS from /proc."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_args: list[str] | None = None,
                 env: dict | None = None, command: list[str] | None = None) -> None:
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.extra_args = extra_args or []
        # What runs instead of `thresher operator run` (benchmarks/kopf_floor.py); same arguments.
        self.command = command or ["-m", "thresher.cli", "operator", "run"]
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.metrics_port = self.liveness_port = 0

    def start(self, timeout: float = 60) -> None:
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.command, "--all-namespaces",
                 "--metrics-port", str(self.metrics_port), "--liveness-port", str(self.liveness_port),
                 *self.extra_args], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("operator not healthy")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def memory(self) -> dict:
        status = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0]) / 1024  # MiB
        return status

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as resp:
            return resp.read().decode()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Profile:
    """``py-spy record`` of a process while a ``with`` block runs (raw collapsed stacks, for
    ``profile_summary``); nothing when ``path`` is None or py-spy is not installed."""

    def __init__(self, pid: int, path: Path | None, rate: int = 100) -> None:
        self.pid, self.path, self.rate = pid, path, rate
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Profile:
        spy = Path(sys.executable).parent / "py-spy"
        if self.path is not None and spy.exists():
            # --gil: only the thread holding the GIL, i.e. Python's CPU (not threads waiting on I/O)
            self.proc = subprocess.Popen([str(spy), "record", "--pid", str(self.pid), "--rate", str(self.rate),
                                          "--format", "raw", "--gil", "--nonblocking", "-o", str(self.path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)  # attached before the work starts
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)


def profile_summary(path: Path, top: int = 25) -> dict[str, float]:
    """Share of samples per function (inclusive: anywhere on the stack) in a raw py-spy file."""
    total, inclusive = 0, Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame.split(" (")[0] + " (" + frame.rsplit("/", 1)[-1]] += int(count)
    return {k: round(v / total, 3) for k, v in inclusive.most_common(top)} if total else {}


def runs_in_metrics(text: str, namespace: str) -> dict[str, float]:
    """thresher_schedule_runs_total summed over outcomes, per schedule of ``namespace``."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "thresher_schedule_runs":
            continue
        for s in family.samples:
            if s.name == "thresher_schedule_runs_total" and s.labels.get("namespace") == namespace:
                totals[s.labels["schedule"]] = totals.get(s.labels["schedule"], 0) + s.value
    return totals


def wait_until(probe: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``probe`` until true; the time.time() it became true. Raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return time.time()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
