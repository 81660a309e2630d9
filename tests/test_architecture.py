"""The package layout is a contract: imports flow one way and never in a cycle.

The import graph is read from the source with ``ast`` (every ``import`` and
``from ... import``, including those under ``if TYPE_CHECKING:`` and inside
functions), so a lazy or type-only import counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "georet"

#: layer → the georet layers it may import (besides :data:`OPEN`)
ALLOWED = {
    "errors": set(),
    "lazy": set(),
    "files": set(),
    "provenance": set(),
    "testing": {"geo", "index", "search"},
    "models": {"errors"},
    "geo": {"errors"},
    "index": {"errors", "geo", "models"},
    "search": {"errors", "geo", "models", "index"},
    "training": {"errors", "geo", "models"},
    "demo": {"errors", "geo", "models", "index", "search"},
    "server": {"errors", "search", "root"},
    "doctor": {"errors", "models", "index", "root"},
    "cli": {"errors", "geo", "models", "index", "search", "training", "demo", "doctor", "server", "root"},
    "data": {"errors", "geo"},
    "root": set(),
}


#: base utilities every layer may import: the error type, the lazy-export helper, atomic writes
OPEN = {"errors", "lazy", "files"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """georet modules imported by one file (``from georet.x import y`` counts y when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "georet")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "georet":
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file():
                    found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    edges = graph()
    assert len(edges) > 30  # the whole package was read
    # a package's __init__ re-exports its own modules; that is not a cycle between concepts
    module_edges = {m: {t for t in targets if not (m != t and t.startswith(m + ".") and m.count(".") == 1)}
                    for m, targets in edges.items()}
    assert find_cycle(module_edges) is None, " -> ".join(find_cycle(module_edges))


def test_no_import_cycle_between_layers():
    layers: dict[str, set[str]] = {}
    for module, targets in graph().items():
        layers.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    assert find_cycle(layers) is None, " -> ".join(find_cycle(layers))


@pytest.mark.parametrize("module, targets", sorted(graph().items()))
def test_imports_follow_the_layers(module, targets):
    own = layer(module)
    wrong = sorted(t for t in targets if layer(t) != own and layer(t) not in ALLOWED[own] | OPEN)
    assert not wrong, f"{module} ({own}) may not import {wrong}"


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_imports_count(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from georet.search import GeoIndex\n")
    assert imports_of(source) == {"georet.search"}
