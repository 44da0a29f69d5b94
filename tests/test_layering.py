"""The house plan holds: each stage of the data flow imports only itself and the stages below it, and no module
imports another that, directly or not, imports it back (docs/architecture.md, "Stages").

Every import counts, at module level or inside a function: a lazy import is still a dependency at run time.
Only imports under `if TYPE_CHECKING:` are left out (annotations; nothing runs them). Lookups through the
registries (a kind or an adapter found by name through its entry point) are not imports, which is the point
of them: the task schema finds the built-in kinds without importing the evaluator.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The folders setuptools maps into the namespace (pyproject.toml [tool.setuptools.package-dir])
FOLDERS = {"rsdg_bench": "rsdg_bench", "rsdg_bench.prep": "prep", "rsdg_bench.baselines": "baselines",
           "rsdg_bench.leaderboards": "leaderboards"}
# Lowest first. A module belongs to the stage of the longest prefix that names it.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("rsdg_bench", "rsdg_bench._version", "rsdg_bench.base")),  # the root package: version facts only
    ("datasets", ("rsdg_bench.datasets",)),
    ("prep", ("rsdg_bench.prep",)),
    ("protocol", ("rsdg_bench.protocol",)),
    ("scoring", ("rsdg_bench.scoring",)),
    ("models", ("rsdg_bench.models",)),
    ("evaluator", ("rsdg_bench.evaluator",)),
    ("baselines", ("rsdg_bench.baselines",)),  # built-in adapters may use the evaluator's sliding windows
    ("records", ("rsdg_bench.records",)),
    ("train", ("rsdg_bench.train",)),
    ("run", ("rsdg_bench.run",)),
    ("hub", ("rsdg_bench.hub",)),
    ("submissions", ("rsdg_bench.submissions",)),
    ("board", ("rsdg_bench.leaderboards",)),
    ("front", ("rsdg_bench.api", "rsdg_bench.demo", "rsdg_bench.torchgeo_bridge")),
    ("cli", ("rsdg_bench.cli",)),
]


def stage_of(module: str) -> int:
    best, rank = "", None
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    if rank is None:
        raise AssertionError(f"{module} belongs to no stage: add it to STAGES (and to docs/architecture.md)")
    return rank


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if folder == "rsdg_bench" and parts[0] in {"prep", "baselines", "leaderboards"}:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _imports(tree: ast.AST, skip: set[int]) -> list[ast.Import | ast.ImportFrom]:
    found = []
    for node in ast.iter_child_nodes(tree):
        if _type_checking_only(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        found.extend(_imports(node, skip))
    return found


@cache
def imports_of(module: str) -> frozenset[str]:
    """The modules of the project `module` imports (a name imported from a package counts as its submodule
    when there is one, else as the package)."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8")), set()):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                       for alias in node.names]
        for target in targets:
            while target and target not in modules():  # `import a.b.c` of an attribute path: its module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return frozenset(found)


def test_every_module_belongs_to_a_stage():
    assert len(modules()) > 100
    for module in modules():
        stage_of(module)


def test_no_stage_imports_a_stage_above_it():
    upward = [f"{module} ({STAGES[stage_of(module)][0]}) imports {target} ({STAGES[stage_of(target)][0]})"
              for module in modules() for target in sorted(imports_of(module))
              if stage_of(target) > stage_of(module)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = {module: imports_of(module) for module in modules()}
    circles = _strongly_connected(graph)
    assert not circles, "\n".join(" → ".join(sorted(circle)) for circle in circles)


def _strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (iterative: the graph is deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                    circles.append(component)
    return circles


@pytest.mark.parametrize("graph, circular", [
    ({"a": frozenset({"b"}), "b": frozenset({"a"}), "c": frozenset()}, True),
    ({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset()}, False),
])
def test_the_circle_finder_finds_a_circle(graph, circular):
    assert bool(_strongly_connected(graph)) == circular


def test_the_layering_check_sees_a_lazy_upward_import(tmp_path: Path):
    """The check reads imports inside functions too, and leaves out only TYPE_CHECKING blocks."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from x import a\n"
                     "def f():\n    from y import b\n")
    assert [node.module for node in _imports(tree, set()) if isinstance(node, ast.ImportFrom)] == ["typing", "y"]


def test_the_flat_layouts_module_paths_import_the_moved_modules_with_a_warning():
    """Code written against 0.1 (`from rsdg_bench.adapters import Adapter`) keeps working for one release, and
    is told where each module went."""
    import importlib
    import sys

    from rsdg_bench._moved import OLD_TO_NEW

    for old, new in OLD_TO_NEW.items():
        assert f"rsdg_bench.{new}" in modules(), f"{old} points at {new}, which does not exist"
        assert f"rsdg_bench.{old}" not in modules(), f"rsdg_bench.{old} exists again: drop its alias"
        sys.modules.pop(f"rsdg_bench.{old}", None)
        with pytest.warns(DeprecationWarning, match=f"rsdg_bench.{old} moved to rsdg_bench.{new}"):
            aliased = importlib.import_module(f"rsdg_bench.{old}")
        assert aliased is importlib.import_module(f"rsdg_bench.{new}")
    from rsdg_bench.adapters import Adapter  # noqa: F401  (the spelling of 0.1's plug-in docs)
    from rsdg_bench.kinds import get_kind, require_adapter_kind  # noqa: F401
