"""The import graph of src/retrievegan: imports only go down the floors of docs/architecture.md ("Layers"), and no
module imports itself through others (no cycle). Every import counts, also one inside a function.

Floors, ground first (a package's floor holds all its modules unless a module is named on its own):

0. ground: the top-level library modules (errors, io, seeds, config, runs, weights, device, ...)
1. data: datasets, preprocessing, the patch bank
2. learning: embed (patch features, co-occurrence, pre-filter), models (networks, methods), train (the loop)
3. evaluation: eval, estimate, study
4. entry points: commands, cli, cluster, dvcsync, dvcstages, refdocs, verify
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "retrievegan"
FLOORS: dict[str, int] = {
    "retrievegan.data": 1,
    "retrievegan.embed": 2,
    "retrievegan.models": 2,
    "retrievegan.train": 2,
    "retrievegan.eval": 3,
    "retrievegan.estimate": 3,
    "retrievegan.study": 3,
    "retrievegan.commands": 4,
    "retrievegan.cli": 4,
    "retrievegan.cluster": 4,
    "retrievegan.dvcsync": 4,
    "retrievegan.dvcstages": 4,
    "retrievegan.refdocs": 4,
    "retrievegan.verify": 4,
    "retrievegan.__main__": 4,
}
FLOOR_NAMES = ("ground", "data", "learning", "evaluation", "entry points")


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package (a package by its ``__init__``)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def floor(module: str) -> int:
    """The floor of a module: the longest prefix named in FLOORS, else the ground floor."""
    prefixes = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    return FLOORS[max(prefixes, key=len)] if prefixes else 0


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_imports_only_go_down_the_floors():
    graph = import_graph()
    upward = sorted(
        f"{a} ({FLOOR_NAMES[floor(a)]}) imports {b} ({FLOOR_NAMES[floor(b)]})"
        for a, targets in graph.items()
        for b in targets
        if floor(b) > floor(a)
    )
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_see_a_violation():
    """The checks themselves: an upward edge and a cycle in a made-up graph are found."""
    graph = {"retrievegan.io": {"retrievegan.eval.claims"}, "retrievegan.eval.claims": {"retrievegan.io"}}
    assert cycles(graph) == [["retrievegan.eval.claims", "retrievegan.io"]]
    assert floor("retrievegan.io") < floor("retrievegan.eval.claims")
    assert floor("retrievegan.commands.train") == 4 and floor("retrievegan.data.box_grid") == 1


@pytest.mark.parametrize("name", ["retrievegan.runs", "retrievegan.weights", "retrievegan.io"])
def test_ground_floor_modules_exist(name):
    assert name in modules() and floor(name) == 0
