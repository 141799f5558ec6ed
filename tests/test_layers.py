"""The package's floors: imports flow one way and never in a circle.

Every ``import`` / ``from ... import`` of every module under ``src/mdm`` is read
with :mod:`ast`, including those inside functions (a function-local import that
hides a cycle is still a cycle). A module belongs to the floor of its first name
under ``mdm`` (``mdm.nn.ssd`` -> ``nn``). A module may import its own package,
any lower floor, and a neighbour on its floor only where the floor says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mdm

PACKAGE = Path(mdm.__file__).parent

# Bottom to top: (names on the floor, whether they may import each other).
FLOORS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("config", "configs"), False),  # the dataclasses, and the preset files they read
    (("nn", "data"), False),  # the network and the data stand beside each other, neither imports the other
    (("diffusion", "checkpoint"), False),
    (("tasks",), False),
    (("training", "evaluation", "pipeline", "quickstart", "bench", "demo"), True),
    (("cli",), False),
    (("__main__",), False),  # python -m mdm
)
# What a floor may not import although it sits below: the network knows nothing of diffusion (above it anyway),
# and diffusion never reads data.
FORBIDDEN = {("diffusion", "data")}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """The ``mdm`` modules named by every import statement in ``tree``, at any depth."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, up level - 1
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # from mdm import tasks
    return {m for m in found if m == "mdm" or m.startswith("mdm.")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (names that are not modules are resolved to their module)."""
    sources = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for target in imported_modules(tree, name, path.name == "__init__.py"):
            while target not in sources and "." in target:  # from mdm.config import X: X is a name
                target = target.rpartition(".")[0]
            if target in sources and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def floor_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]], floors=FLOORS, forbidden=FORBIDDEN) -> list[str]:
    """Every import of a module on a higher floor, of a neighbour it may not import, or of a forbidden floor."""
    level = {unit: (i, peers) for i, (units, peers) in enumerate(floors) for unit in units}
    bad = []
    for source, targets in sorted(graph.items()):
        a = floor_of(source)
        for target in sorted(targets):
            b = floor_of(target)
            if a == b or b == "":
                continue  # its own package, or mdm/__init__ (the version)
            if a not in level or b not in level:
                bad.append(f"{source} -> {target}: no floor for {a if a not in level else b!r}")
            elif level[b][0] > level[a][0] or (level[b][0] == level[a][0] and not level[a][1]) \
                    or (a, b) in forbidden:
                bad.append(f"{source} -> {target}: {a} may not import {b}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm, iteratively)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph.get(node, ()):
                    groups.append(_cycle_in(sorted(group), graph))
    return groups


def _cycle_in(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A path ``a -> ... -> a`` inside a strongly connected group (breadth first from its first module)."""
    members, start = set(group), group[0]
    parent, queue = {start: None}, [start]
    for node in queue:
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return group


# ---------------------------------------------------------------------------- the checker itself

def test_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    root = tmp_path / "mdm"
    (root / "nn").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "nn" / "__init__.py").write_text("")
    (root / "config.py").write_text("def f():\n    from mdm.nn import ssd  # upward, hidden in a function\n")
    (root / "nn" / "ssd.py").write_text("from mdm.config import f\n")
    (root / "nn" / "scan.py").write_text("from . import ssd\nimport mdm.config\n")
    graph = import_graph(root)
    assert graph == {"mdm": set(), "mdm.config": {"mdm.nn", "mdm.nn.ssd"}, "mdm.nn": set(),
                     "mdm.nn.ssd": {"mdm.config"}, "mdm.nn.scan": {"mdm.config", "mdm.nn", "mdm.nn.ssd"}}
    assert upward_imports(graph) == ["mdm.config -> mdm.nn: config may not import nn",
                                     "mdm.config -> mdm.nn.ssd: config may not import nn"]
    assert cycles(graph) == [["mdm.config", "mdm.nn.ssd", "mdm.config"]]
    (root / "nn" / "layout.py").write_text("from mdm.nn.scan import x\n")  # a longer cycle, inside one floor
    (root / "nn" / "ssd.py").write_text("import mdm.nn.layout\n")
    assert cycles(import_graph(root)) == [["mdm.config", "mdm.nn.ssd", "mdm.nn.layout", "mdm.nn.scan",
                                           "mdm.config"]]


def test_checker_refuses_neighbours_that_may_not_meet():
    graph = {"mdm.nn.scan": {"mdm.data.sample"}, "mdm.data.sample": set(), "mdm.diffusion.base": {"mdm.data.sample"},
             "mdm.training.run": {"mdm.evaluation.figures"}, "mdm.evaluation.figures": set(),
             "mdm.cli": {"mdm.training.run"}, "mdm.tools": {"mdm.config"}, "mdm.config": set()}
    assert upward_imports(graph) == ["mdm.diffusion.base -> mdm.data.sample: diffusion may not import data",
                                     "mdm.nn.scan -> mdm.data.sample: nn may not import data",
                                     "mdm.tools -> mdm.config: no floor for 'tools'"]
    assert cycles(graph) == []


# ---------------------------------------------------------------------------- the package

@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def test_the_graph_sees_the_package(graph):
    assert {"mdm.config", "mdm.nn.ssd", "mdm.tasks", "mdm.training.run", "mdm.cli"} <= set(graph)
    assert "mdm.diffusion.multimodal" in graph["mdm.tasks"]
    assert all(floor_of(m) in {u for units, _ in FLOORS for u in units} | {""} for m in graph)


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_imports_flow_down(graph):
    assert upward_imports(graph) == []


def test_config_imports_nothing_from_mdm(graph):
    assert all(floor_of(t) == "config" for m in graph if floor_of(m) == "config" for t in graph[m])
