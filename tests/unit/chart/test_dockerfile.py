"""The Dockerfile: hadolint-clean, and shaped as the chart and the Pod Security context expect.

No image is built here (no container runtime on CI); these checks pin the
properties that a build would otherwise reveal only in a cluster.
"""

from __future__ import annotations

import fnmatch
import re

from tests.helpers.tools import REPO, require_tool, run_tool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def stages() -> dict[str, list[str]]:
    """Instructions of each named stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(2)
            result[current] = [line]
        elif current:
            result[current].append(line)
    return result


def test_hadolint():
    result = run_tool([require_tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_targets_and_base_images():
    s = stages()
    assert set(s) == {"base", "builder", "operator", "jobs", "jobs-gpu"}
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^ARG GPU_BASE_IMAGE=nvidia/cuda:\S+-runtime-\S+$", text, re.M)
    assert s["base"][0].startswith("FROM ${BASE_IMAGE}")
    assert s["jobs-gpu"][0].startswith("FROM ${GPU_BASE_IMAGE}")
    assert s["operator"][0].startswith("FROM base") and s["jobs"][0].startswith("FROM base")


def test_final_stages_run_as_10001_with_thresher_entrypoint_and_no_build_tools():
    extras = {"operator": "[operator]", "jobs": "[jobs]", "jobs-gpu": "[jobs,gpu]"}
    for name, extra in extras.items():
        lines = stages()[name]
        users = [ln for ln in lines if ln.startswith("USER ")]
        assert users and users[-1] in ("USER 10001", "USER 10001:10001"), name
        assert 'ENTRYPOINT ["thresher"]' in lines, name
        body = " ".join(lines)
        assert f'"${{whl}}{extra}"' in body, f"{name} must install {extra}"
        assert "--only-binary=:all:" in body, f"{name} could compile sdists"
        for tool in ("gcc", "build-essential", "g++", "make ", "-dev "):
            assert tool not in body, f"{name} installs {tool.strip()}"
        # The wheel is built in the builder stage, never in a final one.
        assert "pip wheel" not in body, name


def test_operator_default_command_matches_the_chart():
    cmd = next(ln for ln in stages()["operator"] if ln.startswith("CMD "))
    assert '"operator", "run", "--metrics-port", "9090", "--liveness-port", "8080"' in cmd


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for p in patterns:
            negate = p.startswith("!")
            pat = p[1:] if negate else p
            parts = path.split("/")
            hit = any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts)))
            if pat.startswith("**/"):
                hit = hit or any(fnmatch.fnmatch(part, pat[3:]) for part in parts)
            if hit:
                verdict = not negate
        return verdict

    for kept in ("pyproject.toml", "thresher/cli.py", "thresher/operator/metrics.py"):
        assert not ignored(kept), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/unit/chart/test_dockerfile.py", "charts/thresher/Chart.yaml",
                    "thresher/__pycache__/cli.cpython-311.pyc", "thresher.egg-info/PKG-INFO"):
        assert ignored(dropped), dropped
