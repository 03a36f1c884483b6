"""The operator under test: the real `thresher operator run` command as a subprocess, pointed
at the session's cluster (so kill -9 and restarts are tested exactly as they happen)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import NAMESPACE_PREFIX
from tests.helpers.wait import eventually
from thresher.devcluster.cluster import free_port


# Watching only this session's namespaces (tests/conftest.py) keeps a demo operator or another
# test session on the same cluster from racing the operator under test.
TEST_NAMESPACES = (f"{NAMESPACE_PREFIX}*",)


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, namespaces: tuple[str, ...] = TEST_NAMESPACES,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.env = env or {}
        self.log_path = log_path
        self.namespaces = namespaces
        self.extra_args = extra_args
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, attempts: int = 3) -> None:
        """Start and wait for liveness. A free port picked earlier can be taken by the time the
        operator binds it (other processes, other operators of the same test): then new ports."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        for attempt in range(attempts):
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "thresher.cli", "operator", "run",
                     *(arg for ns in self.namespaces for arg in ("--namespace", ns)),
                     "--metrics-port", str(self.metrics_port), "--liveness-port", str(self.liveness_port),
                     *self.extra_args],
                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                eventually(self.healthy, timeout=60, message="operator liveness endpoint")
                return
            except AssertionError:
                with open(self.log_path, "rb") as log:
                    log.seek(log_start)
                    port_taken = b"Address already in use" in log.read()
                if not port_taken or attempt == attempts - 1:
                    raise
                self.stop()
                self.metrics_port, self.liveness_port = free_port(), free_port()

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log tail:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            return resp.read().decode()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def operator(cluster, crd, tmp_path_factory):
    op = OperatorProcess(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()
