"""The package's import graph has no cycles: layers import downwards only.

Read from the source (every ``import`` statement, at module level, inside
functions and under ``TYPE_CHECKING`` alike), so it runs in milliseconds and
catches a cycle that a lazy import hides from Python itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "service"


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                # ``from pkg import module`` imports the module; else the name's module.
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "service.api.app" in graph and "service.core.errors" in graph["service.api.errors"]
    assert cycles(graph) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # a -> b -> a, one of them lazily inside a function
        ({"a.py": "import service.b", "b.py": "def f():\n    from service import a"}, 1),
        # relative imports, under TYPE_CHECKING
        (
            {
                "a.py": "from .b import x",
                "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a",
            },
            1,
        ),
        ({"a.py": "import service.b", "b.py": "import json"}, 0),
    ],
)
def test_the_check_finds_a_cycle(tmp_path: Path, source: dict[str, str], expected: int) -> None:
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in source.items():
        (package / name).write_text(text + "\n")
    assert len(cycles(import_graph(tmp_path))) == expected
