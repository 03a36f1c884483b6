"""The ``thresher`` command as users meet it: real subprocesses, real kubeconfigs, real sockets.

Pins issue 12 point 4 (the lazy-import promise broken by ``ctl.py`` importing the operator) and
issue 13's CLI bugs: tracebacks for a missing kubeconfig, an unreachable API server, a missing
extra and ``--log-level FOO``; ``status -o yaml`` silently printing a table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml
from tests.helpers.tools import REPO

HEAVY = ("kopf", "kubernetes", "numpy", "torch")


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=60)


def _thresher(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=60)


def _one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["job", "tmdb", "--help"], ["job", "drone", "--help"],
                                  ["run", "--help"], ["status", "--help"], ["operator", "run", "--help"]])
def test_help_loads_no_heavy_module(argv):
    code = ("import sys\nfrom thresher.cli import app\n"
            f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = _python(code)
    assert "LOADED []" in proc.stdout, proc.stdout[-500:] + proc.stderr


def test_user_commands_live_in_thresher_client_and_the_root_only_mounts():
    from thresher import cli

    names = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
    assert names == set(), "the root only mounts groups; they live beside their code"
    assert "demo" in {g.name for g in cli.app.registered_groups}
    assert not (REPO / "thresher" / "ctl.py").exists()


@pytest.fixture()
def home(tmp_path):
    return {"HOME": str(tmp_path), "KUBECONFIG": ""}


def test_no_kubeconfig_is_one_line(home):
    line = _one_line_error(_thresher("status", env=home), 1)
    assert "no usable kubeconfig at ~/.kube/config" in line and "KUBECONFIG" in line


def _kubeconfig(tmp_path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u", "namespace": "team"}}]}))
    return str(path)


def test_unreachable_api_server_is_one_line(tmp_path, home):
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**home, "KUBECONFIG": _kubeconfig(tmp_path, f"http://127.0.0.1:{port}")}
    for argv in (["status"], ["run", "daily"], ["suspend", "daily"]):
        line = _one_line_error(_thresher(*argv, env=env), 1)
        assert f"cannot reach http://127.0.0.1:{port}" in line and "refused" in line.lower(), line


class _FakeApiServer(BaseHTTPRequestHandler):
    """Answers like a kube-apiserver without the CRD (404) or for a user without rights (403)."""

    status = 404

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "the server could not find the requested resource",
                           "reason": "NotFound" if self.status == 404 else "Forbidden", "code": self.status})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status,expected", [(404, "install the CRD"), (403, "needs get/list/patch")])
def test_api_errors_are_one_line(tmp_path, home, status, expected):
    handler = type("Handler", (_FakeApiServer,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**home, "KUBECONFIG": _kubeconfig(tmp_path, f"http://127.0.0.1:{server.server_port}")}
        assert expected in _one_line_error(_thresher("status", env=env), 1)
    finally:
        server.shutdown()


def test_missing_extra_is_one_line():
    """``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed."""
    for module, argv in (("kopf", ["operator", "run"]), ("kubernetes", ["status"])):
        proc = _python(f"import sys; sys.modules[{module!r}] = None\n"
                       f"from thresher.cli import main; main({argv!r})")
        line = _one_line_error(proc, 1)
        assert f"{module} is not installed" in line and "pip install 'thresher[operator]'" in line


def test_unknown_log_level_is_a_usage_error(tmp_path):
    proc = _thresher("job", "tmdb", "collect", "--log-level", "FOO", "--data-dir", str(tmp_path))
    line = _one_line_error(proc, 2)
    assert "'FOO' is not a log level" in line and "INFO" in line


def test_status_output_formats_are_checked_before_connecting(home):
    """``-o yaml`` used to print the table; an unknown format is a usage error (exit 2)."""
    bad = _thresher("status", "-o", "xml", env=home)
    assert bad.returncode == 2 and "xml" in bad.stderr and "Traceback" not in bad.stderr
