"""What `adapter list` shows of a built-in adapter (its task kinds, whether it trains), read from its source.

Importing the built-ins to read two class attributes loads torch, timm and smp and took 12.5 s; the
attributes are literals in each class body (or the `Adapter` base class's defaults), so they are read from
the syntax tree instead (the class named by the adapter's entry point in pyproject.toml). A built-in whose attributes are
not plain literals on a direct `Adapter` subclass is imported after all (`resolve_adapter`), so the listing
is never wrong, only slower; a test holds the static reading equal to the imported classes.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FACTS = ("kinds", "trainable")


@dataclass(frozen=True)
class AdapterFacts:
    kinds: frozenset[str]
    trainable: bool


def adapter_facts(name: str) -> AdapterFacts:
    """The kinds and trainability of adapter `name`: a built-in's from its source when they are literals,
    anything else (a plug-in, a file adapter, a computed attribute) from the imported class."""
    from rsdg_bench.models.registry import builtin_entries, resolve_adapter

    if name in builtin_entries():
        facts = _static_facts(*builtin_entries()[name])
        if facts is not None:
            return facts
    cls = resolve_adapter(name)
    return AdapterFacts(frozenset(cls.kinds), bool(cls.trainable))


def _static_facts(module_name: str, class_name: str) -> AdapterFacts | None:
    tree = _parse(_module_file(module_name))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            if [ast.unparse(base) for base in node.bases] != ["Adapter"]:
                return None
            own = _literal_attributes(node)
            if own is None:
                return None
            values = {**_base_defaults(), **own}
            return AdapterFacts(frozenset(values["kinds"]), bool(values["trainable"]))
    return None


@cache
def _base_defaults() -> dict[str, Any]:
    tree = _parse(_module_file("rsdg_bench.models.adapters"))
    base = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Adapter")
    defaults = _literal_attributes(base)
    if defaults is None or set(FACTS) - set(defaults):
        raise RuntimeError("rsdg_bench.models.adapters.Adapter must assign `kinds` and `trainable` as literals")
    return defaults


def _literal_attributes(node: ast.ClassDef) -> dict[str, Any] | None:
    """`kinds` and `trainable` as assigned in the class body (`True`/`False`, `frozenset({...})` of strings);
    None when one of them is assigned something that is not a literal."""
    found: dict[str, Any] = {}  # literal values
    for statement in node.body:
        target, value = None, None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        if value is None or not (isinstance(target, ast.Name) and target.id in FACTS):
            continue
        if (isinstance(value, ast.Call) and ast.unparse(value.func) == "frozenset" and len(value.args) == 1
                and not value.keywords):
            value = value.args[0]
        try:
            found[target.id] = ast.literal_eval(value)
        except ValueError:  # computed: the static reading gives up on this class
            return None
    return found


def _module_file(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module_name)
    return Path(spec.origin)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
