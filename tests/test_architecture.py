"""The package layering holds: no import cycle between samdg's subpackages (and top-level modules).

The graph is built from the source (``ast``), so it sees every import: module level, inside functions (lazy),
under ``TYPE_CHECKING``. A node is a subpackage (``samdg.training``) or a top-level module (``samdg.paths``); an
edge A -> B means some module of A imports something of B. A cycle is reported with the file and line of each
import that closes it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import samdg

PACKAGE_ROOT = Path(samdg.__file__).parent
Edges = dict[str, dict[str, list[str]]]


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str | None:
    """``samdg.training.trainer`` -> ``samdg.training``; ``samdg.paths`` -> itself; outside samdg -> None."""
    parts = module.split(".")
    if parts[0] != "samdg" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``tree``; ``from X import name`` also yields ``X.name``."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((target, node.lineno))
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> Edges:
    """{node: {imported node: ["file:line", ...]}} over every .py file under ``root``."""
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        source = _node(module)
        if source is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in _imported_modules(tree, module, path.name == "__init__.py"):
            destination = _node(target)
            location = f"{path.relative_to(root.parent)}:{line}"
            if destination and destination != source and location not in edges[source][destination]:
                edges[source][destination].append(location)
    return edges


def find_cycle(edges: Edges) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, nodes in sorted order for a stable answer)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for following in sorted(edges.get(node, {})):
            if state.get(following) == "open":
                return path[path.index(following):] + [node, following]
            if following not in state:
                cycle = visit(following, path + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return None


def describe(cycle: list[str], edges: Edges) -> str:
    steps = [f"{a} -> {b} ({', '.join(edges[a][b])})" for a, b in zip(cycle, cycle[1:])]
    return "import cycle between samdg packages:\n  " + "\n  ".join(steps)


def test_no_import_cycle_between_samdg_packages():
    edges = import_graph()
    assert "samdg.training" in edges and "samdg.models" in edges["samdg.training"]  # the graph sees the tree
    cycle = find_cycle(edges)
    assert cycle is None, describe(cycle, edges)


def test_the_check_sees_lazy_relative_and_top_level_imports(tmp_path):
    """A cycle closed only by an import inside a function, or by a relative import, is still a cycle."""
    package = tmp_path / "samdg"
    for folder in ("training", "inference"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "paths.py").write_text("from .training import loop\n")
    (package / "training" / "loop.py").write_text("def final_check():\n    from samdg.inference.slices import run\n")
    (package / "inference" / "slices.py").write_text("from ..training import loop\n\ndef run():\n    pass\n")
    edges = import_graph(package)
    assert edges["samdg.training"]["samdg.inference"] == ["samdg/training/loop.py:2"]
    assert edges["samdg.inference"]["samdg.training"] == ["samdg/inference/slices.py:1"]
    assert edges["samdg.paths"]["samdg.training"] == ["samdg/paths.py:1"]
    cycle = find_cycle(edges)
    assert cycle == ["samdg.inference", "samdg.training", "samdg.inference"]
    assert "samdg/training/loop.py:2" in describe(cycle, edges)
    (package / "inference" / "slices.py").write_text("def run():\n    pass\n")
    assert find_cycle(import_graph(package)) is None
