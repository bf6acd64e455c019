"""Dependencies point down: no import cycle between ssmttm's modules, nor between its subpackages.

Every ``.py`` file under ``ssmttm/`` is parsed (never imported) and every import statement in it is
read, including the ones inside functions: an import moved into a function to dodge a cycle is still
a dependency, and this test still sees it. Two graphs are checked:

- modules (``ssmttm.report.tables`` -> ``ssmttm.report.evalcurves``);
- top-level units, a subpackage or a top-level module (``ssmttm.data`` -> ``ssmttm.weights``): a
  package that imports another must not be imported back by any of its modules.

One kind of edge is left out: a package's ``__init__`` importing a module inside it (a lazy registry
factory, a re-export). Python imports a package before any of its modules, so "module -> its
package" is implied by every import and "package -> its own module" is the package's facade, not a
dependency between layers.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "ssmttm"

Graph = dict[str, dict[str, list[str]]]  # importer -> imported -> ["path:line", ...]


def module_files(root: Path = REPO / PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module and package of the source tree."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import of ``name`` loads: the longest prefix of ``name`` that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported package module, line) for every import statement of ``path``, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..y import z
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # "from pkg import name" loads pkg.name when that is a module, else pkg itself
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == PACKAGE:
                resolved = _resolve(target, modules)
                if resolved is not None:
                    found.append((resolved, node.lineno))
    return sorted(set(found))


def _is_facade_edge(importer: str, imported: str, modules: dict[str, Path]) -> bool:
    """A package's __init__ importing a module inside that package."""
    return modules[importer].name == "__init__.py" and imported.startswith(importer + ".")


def module_graph(modules: dict[str, Path] | None = None) -> Graph:
    modules = modules or module_files()
    top = next(iter(modules.values())).parents[len(next(iter(modules)).split(".")) - 1]
    graph: Graph = defaultdict(lambda: defaultdict(list))
    for module, path in modules.items():
        graph[module]  # every module is a node, importing or not
        for imported, line in imports_of(module, path, modules):
            if imported != module and not _is_facade_edge(module, imported, modules):
                graph[module][imported].append(f"{path.relative_to(top.parent)}:{line}")
    return graph


def unit_of(module: str) -> str:
    """``ssmttm.data.fetch`` -> ``ssmttm.data``; ``ssmttm.weights`` -> itself; ``ssmttm`` -> itself."""
    return ".".join(module.split(".")[:2])


def unit_graph(graph: Graph) -> Graph:
    units: Graph = defaultdict(lambda: defaultdict(list))
    for importer, targets in graph.items():
        units[unit_of(importer)]
        for imported, sites in targets.items():
            a, b = unit_of(importer), unit_of(imported)
            if a != b and b != PACKAGE:  # every module's import implies the root package: not a layer
                units[a][b] += [f"{importer} -> {imported} ({s})" for s in sites]
    return units


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one node (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def a_cycle(graph: Graph, component: list[str]) -> list[str]:
    """One shortest cycle through the component's first node: [a, b, ..., a]."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if child in members and child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")


def describe(graph: Graph, components: list[list[str]]) -> str:
    lines = []
    for comp in components:
        cycle = a_cycle(graph, comp)
        lines.append(f"cycle among {len(comp)} node(s): " + " -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:]):
            lines.append(f"    {a} -> {b}: " + "; ".join(graph[a][b][:3]))
    return "\n".join(lines)


def test_no_module_import_cycles():
    graph = module_graph()
    comps = strongly_connected(graph)
    assert not comps, "import cycles between modules (move the shared helper down a level):\n" + describe(graph, comps)


def test_no_subpackage_import_cycles():
    units = unit_graph(module_graph())
    comps = strongly_connected(units)
    assert not comps, ("import cycles between subpackages / top-level modules (move the shared helper down a "
                       "level):\n" + describe(units, comps))


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    """The parser is not vacuous: it finds imports at any depth and resolves relative ones."""
    root = tmp_path / PACKAGE
    (root / "low").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low" / "__init__.py").write_text("from .base import thing\n")  # facade edge: ignored
    (root / "low" / "base.py").write_text("def thing():\n    from ssmttm import high\n")
    (root / "high.py").write_text("from ssmttm.low import base\n")
    modules = module_files(root)
    graph = module_graph(modules)
    assert set(graph[f"{PACKAGE}.low.base"]) == {f"{PACKAGE}.high"}  # inside a function
    assert set(graph[f"{PACKAGE}.high"]) == {f"{PACKAGE}.low.base"}
    assert not graph[f"{PACKAGE}.low"]
    comps = strongly_connected(graph)
    assert comps == [[f"{PACKAGE}.high", f"{PACKAGE}.low.base"]]
    assert "ssmttm.high -> ssmttm.low.base -> ssmttm.high" in describe(graph, comps)
    units = unit_graph(graph)
    assert strongly_connected(units) == [[f"{PACKAGE}.high", f"{PACKAGE}.low"]]


def test_the_real_graph_has_the_known_edges():
    graph = module_graph()
    assert "ssmttm.data.fetch" in graph["ssmttm.weights"]  # module level
    assert "ssmttm.eval.metrics" in graph["ssmttm.config"]  # inside a function
    assert "ssmttm.weight_cache" in graph["ssmttm.data.vocals"]
