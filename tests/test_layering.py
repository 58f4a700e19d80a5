"""The package's import graph: no cycle (imports inside functions and under
TYPE_CHECKING count too) and imports only go down the layers of ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "rrnet"

# A module of the key's layer may not import any module of these layers.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "utils": ("io", "preprocess", "models", "training", "inference", "evaluation", "plots", "cli"),
    "io": ("preprocess", "models", "training", "inference", "evaluation", "plots", "cli"),
    "models": ("training", "inference", "evaluation", "plots", "cli", "cluster"),
    "preprocess": ("models", "training", "inference", "evaluation", "plots", "cli", "cluster"),
    "plots": ("training", "inference", "evaluation", "cli", "cluster"),
    "training": ("inference", "evaluation", "cli", "cluster"),
    "inference": ("training", "evaluation", "cli"),
    "cluster": ("training", "evaluation", "cli"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["rrnet", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _graph() -> dict[str, set[str]]:
    """Module -> the rrnet modules it imports (``from pkg import sub`` names the submodule)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names if a.name.startswith("rrnet"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*kept, base] if base else kept)
                if base == "rrnet" or base.startswith("rrnet."):
                    for alias in node.names:
                        full = f"{base}.{alias.name}"
                        deps.add(resolve(full) if full in mods else resolve(base))
        graph[name] = {d for d in deps if d and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_go_down_the_layers(layer: str) -> None:
    graph = _graph()
    wrong = [
        f"{module} -> {dep}"
        for module, deps in graph.items()
        if module.startswith(f"rrnet.{layer}.") or module == f"rrnet.{layer}"
        for dep in deps
        if dep.count(".") and dep.split(".")[1] in FORBIDDEN[layer]
    ]
    assert wrong == []


def test_the_top_level_holds_only_entry_points_and_shared_modules() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= {"__init__", "labels", "grid", "store", "demo"}
