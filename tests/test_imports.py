"""glth_core's imports go one way: no module imports itself back through others, and the core
never imports ray or mlflow.

The walk reads every module's source with ``ast``: imports at module level and inside functions
alike (a function-level import is still a dependency, only a later one); imports under
``if TYPE_CHECKING:`` never run and are left out. ``import a.b`` and ``from a import b`` count as
an edge to the module ``a.b`` when it is one, else to ``a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("ray", "mlflow")


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name → source file, for every module of ``package`` under ``root``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) of every import ``name``'s source runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in known else base, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module → {module of ``package`` it imports: the line of the first such import}."""
    mods = modules(root, package)
    graph = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        for target, line in imported(name, path, set(mods)):
            if target in mods and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (its modules in import order, the first repeated at the end) for every strongly
    connected set of modules that import each other (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_cycle_in(graph, component, v))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _cycle_in(graph, component: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``component`` (breadth first)."""
    parents = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
            if w in component and w not in parents:
                parents[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def describe(graph, cycle: list[str]) -> str:
    return " → ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" → {cycle[-1]}"


def test_glth_core_imports_go_one_way():
    graph = import_graph(ROOT, "glth_core")
    assert len(graph) > 30 and graph["glth_core.kinds"]  # the walk saw the package and its edges
    found = [describe(graph, c) for c in cycles(graph)]
    assert not found, "import cycles in glth_core:\n" + "\n".join(found)


def test_glth_core_never_imports_ray_or_mlflow():
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for name, path in modules(ROOT, "glth_core").items()
        for target, line in imported(name, path, set())
        if target.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_the_walk_finds_cycles_through_functions_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\nfrom pkg.sub import b\n"
    )
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import ray\nimport pkg.a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b": 4} and graph["pkg.sub.b"] == {"pkg.c": 2}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import ray\n")
    assert cycles(import_graph(tmp_path, "pkg")) == []
    assert ("ray", 1) in imported("pkg.c", pkg / "c.py", set())
