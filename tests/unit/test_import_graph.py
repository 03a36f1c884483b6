"""The import graph of the ``thresher`` package: no cycles, and the operator never imports job code.

Read from the source with ``ast`` (nothing is imported), imports inside functions included:
a cycle held together by function-level imports is still a cycle (issue 12 found
devcluster's cluster -> node -> images -> cluster).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "thresher"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``thresher`` modules that module ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b``: b is a submodule of a, or a name defined in a.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_module_and_function_level_imports_are_edges(tmp_path):
    edges = graph()
    assert "thresher.api.cron" in edges["thresher.api.schedule"]  # from thresher.api import cron
    assert "thresher.operator.builders" in edges["thresher.operator.reconciler"]
    source = tmp_path / "mod.py"
    source.write_text("from . import sibling\n\ndef f():\n    from thresher.x.deep import name\n"
                      "    import thresher.y\n")
    known = {"thresher.x.mod", "thresher.x.sibling", "thresher.x.deep", "thresher.y"}
    assert imported("thresher.x.mod", source, known) == {"thresher.x.sibling", "thresher.x.deep", "thresher.y"}


def test_no_import_cycles_among_thresher_modules():
    found = cycles(graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_operator_does_not_import_job_code():
    """Issue 12: the operator imported ExitCode and logging set-up from jobs/harness.py."""
    bad = sorted(f"{src} -> {dst}" for src, dsts in graph().items() if src.startswith("thresher.operator")
                 for dst in dsts if dst == "thresher.jobs" or dst.startswith("thresher.jobs."))
    assert bad == []


# What each part may import (docs/architecture.md shows this table). The command modules
# (thresher.cli and whatever mounts commands) and the demo are not listed: they may use any part.
MAY_IMPORT = {
    "thresher.api": {"thresher.api"},
    "thresher.logs": set(),
    "thresher.operator": {"thresher.api", "thresher.logs", "thresher.operator"},
    "thresher.jobs": {"thresher.api", "thresher.logs", "thresher.jobs"},
    "thresher.devcluster": {"thresher.api", "thresher.logs", "thresher.devcluster"},
    # kubectl-side user commands: they patch schedules the way the operator's adapter does.
    "thresher.client": {"thresher.api", "thresher.logs", "thresher.operator", "thresher.client"},
}


def part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_each_part_imports_only_what_the_architecture_allows():
    bad = sorted(f"{src} -> {dst}" for src, dsts in graph().items() if part(src) in MAY_IMPORT
                 for dst in dsts if part(dst) not in MAY_IMPORT[part(src)])
    assert bad == [], "see docs/architecture.md, Modules: " + ", ".join(bad)
