"""The Helm chart on the real local control plane, and the operator running with ITS credentials.

``install_chart`` installs charts/thresher with the pinned helm into a namespace of the
session's cluster. ``ServiceAccountOperator`` then runs the real operator process as a local
process, authenticated as the chart's ServiceAccount, so the chart's RBAC decides what it may
do (on kwok nodes the Deployment's pod is simulated and runs nothing).

Why a ServiceAccount token and not ``as:`` in the kubeconfig: neither the kubernetes Python
client nor kopf implement impersonation; both silently ignore ``as:`` and would authenticate
with the admin certificate (system:masters), so such a test could never fail. A token from the
TokenRequest API (``kubectl create token``) is exactly what the pod would get mounted, and
``kubectl auth whoami`` with that kubeconfig checks the identity before anything relies on it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helpers.tools import REPO, require_helm, run_tool
from tests.helpers.wait import eventually

CHART = REPO / "charts" / "thresher"
RBAC_RULES = CHART / "files" / "rbac-rules.yaml"
# What a 403 looks like in the operator's log: the client's ApiException text or kopf's message.
FORBIDDEN = re.compile(r"\b403\b|Forbidden|forbidden", re.IGNORECASE)


@functools.cache
def helm_binary() -> str:
    return require_helm()


def helm(cluster, *args: str, timeout: float = 180) -> str:
    """Run helm against the session's cluster; fail with helm's output when it fails."""
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, cwd=REPO)
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@dataclass
class Release:
    """An installed release: its name, namespace and the names the chart derived from them."""

    name: str
    namespace: str

    @property
    def fullname(self) -> str:  # thresher.fullname for a release name without "thresher" in it
        return self.name if "thresher" in self.name else f"{self.name}-thresher"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def install_chart(cluster, release: str, namespace: str, *values: str, upgrade: bool = False) -> Release:
    """``helm install`` (or ``upgrade``) the chart and wait until its Deployment is available."""
    verb = ["upgrade"] if upgrade else ["install"]
    helm(cluster, *verb, release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s", *values)
    return Release(release, namespace)


def uninstall_chart(cluster, release: Release) -> None:
    helm(cluster, "uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "60s")


def manifest(cluster, release: Release) -> list[dict]:
    """The objects helm says it installed (``helm get manifest``)."""
    text = helm(cluster, "get", "manifest", release.name, "--namespace", release.namespace)
    return [d for d in yaml.safe_load_all(text) if d]


def service_account_kubeconfig(cluster, namespace: str, service_account: str, path: Path,
                               duration: str = "2h") -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
    token = cluster.kubectl("create", "token", service_account, "-n", namespace,
                            f"--duration={duration}").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa",
                                                "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    whoami = json.loads(subprocess.run(
        [str(cluster.kubectl_path), f"--kubeconfig={path}", "auth", "whoami", "-o", "json"],
        capture_output=True, text=True, timeout=30, check=True).stdout)
    expected = f"system:serviceaccount:{namespace}:{service_account}"
    assert whoami["status"]["userInfo"]["username"] == expected, whoami
    return path


@dataclass
class OperatorRun:
    """``thresher operator run`` as a local process with a given kubeconfig and arguments.

    Like tests/integration/conftest.py's OperatorProcess, plus: namespace scoping, extra
    environment (job images), and reading the whole log for assertions.
    """

    kubeconfig: Path
    log_path: Path
    args: tuple[str, ...] = ("--all-namespaces",)
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = 0
    liveness_port: int = 0
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        from thresher.devcluster.cluster import free_port

        self.metrics_port = self.metrics_port or free_port()
        self.liveness_port = self.liveness_port or free_port()

    @property
    def metrics_target(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def start(self) -> OperatorRun:
        import urllib.request

        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "thresher.cli", "operator", "run", *self.args,
                 "--metrics-port", str(self.metrics_port), "--liveness-port", str(self.liveness_port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return r.status == 200

        eventually(healthy, timeout=60, message="operator liveness endpoint")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def forbidden_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if FORBIDDEN.search(line)]

    def log_has(self, *fragments: str) -> bool:
        """True when one log line contains every fragment (JSON logs: one record per line)."""
        return any(all(f in line for f in fragments) for line in self.log().splitlines())


def run_tool_in_cluster(cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl as a tool run (no raise): for checks whose failure is the expected answer."""
    return run_tool([str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", *args])


def rbac_rule_set(rules: list[dict] | None) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs} of RBAC rules; None: every rule of files/rbac-rules.yaml."""
    if rules is None:
        doc = yaml.safe_load(RBAC_RULES.read_text())
        rules = doc["namespaced"] + doc["cluster"] + doc["clusterWide"]
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.fixture
def paused_session_operator(request):
    """Stop this session's admin operator (tests/integration/conftest.py) while a test runs its
    own, so only the operator under test reconciles; started again afterwards."""
    op = request.getfixturevalue("operator")
    op.stop()
    yield
    op.start()
