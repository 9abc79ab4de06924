"""No two modules of the dashboard import each other, not even through an import inside a function (a lazy
import hides a cycle, it does not break it)."""

from __future__ import annotations

import ast
from pathlib import Path

import dashboard

PACKAGE = Path(dashboard.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The dashboard modules `path` imports anywhere in its code (`from dashboard import board` names the
    module dashboard.board)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known} - {module_name(path)}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the modules along it."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                if frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    found.append([*path, start])
            elif nxt not in path and nxt > start:  # each cycle once, from its smallest module
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def test_the_dashboard_has_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_lazy_import_cycle():
    # the shape the login page had: auth imports boards inside a function, boards imports auth at the top
    assert cycles({"dashboard.auth": {"dashboard.boards"}, "dashboard.boards": {"dashboard.auth"}}) == [
        ["dashboard.auth", "dashboard.boards", "dashboard.auth"]]


def test_the_graph_sees_imports_inside_functions():
    edges = graph()
    assert "dashboard.api" in edges["dashboard"]  # create_app imports its blueprints when it runs
