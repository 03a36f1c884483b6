"""What the dev cluster's and the demo's modules may import (docs/devcluster.md, "Modules of
devcluster and demo"), read from the source with ``ast``: every import counts, the ones inside
functions too (they used to hide a cycle cluster -> node -> images -> cluster)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "thresher"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The thresher modules ``path`` imports (``from pkg import sub`` counts as pkg.sub)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("thresher"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thresher"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _cycle(nodes: set[str]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n] & nodes):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_in_devcluster_and_demo():
    """Pins the cycle cluster -> node -> images -> cluster (held together by imports inside
    functions): shared pieces now live in lower modules."""
    scope = {n for n in MODULES if _within(n, "thresher.devcluster", "thresher.demo")}
    assert _cycle(scope) is None


def test_the_dev_cluster_builds_on_nothing_of_the_product_or_the_demo():
    for name in (n for n in MODULES if _within(n, "thresher.devcluster")):
        bad = {m for m in GRAPH[name] if _within(m, "thresher.demo", "thresher.jobs", "thresher.operator",
                                                  "thresher.api", "thresher.cli", "thresher.ctl")}
        assert not bad, (name, bad)


def test_the_foundations_import_no_other_thresher_module():
    for name in ("thresher.devcluster.process", "thresher.devcluster.kubeconfig", "thresher.devcluster.versions",
                 "thresher.devcluster.pki", "thresher.devcluster.kwok.nodes", "thresher.demo.assets"):
        assert GRAPH[name] == set(), name


def test_the_node_does_not_reach_up_into_the_cluster():
    for name in (n for n in MODULES if _within(n, "thresher.devcluster.node")):
        assert not {m for m in GRAPH[name] if _within(m, "thresher.devcluster.cluster", "thresher.devcluster.cli")}, name


def test_only_the_root_command_imports_the_demo():
    """The job and operator images leave thresher/demo out (.dockerignore): no product module may
    need it. The root `thresher` command mounts `thresher demo` (lazily)."""
    users = {n for n in MODULES if not _within(n, "thresher.demo")
             and any(_within(m, "thresher.demo") for m in GRAPH[n])}
    assert users <= {"thresher.cli"}, users


def test_only_the_root_command_and_the_demo_import_the_dev_cluster():
    """Issue 16: the images leave thresher/devcluster out too (.dockerignore), so that a change
    to the dev cluster rebuilds no image; no product module may need it."""
    users = {n for n in MODULES if not _within(n, "thresher.devcluster", "thresher.demo")
             and any(_within(m, "thresher.devcluster") for m in GRAPH[n])}
    assert users <= {"thresher.cli"}, users
