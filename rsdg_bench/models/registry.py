"""Finding adapters: built-ins, installed plug-ins, and files.

Three ways in, tried in this order for a name:
1. `path/to/file.py:ClassName`: a class in a file (no packaging needed);
2. adapters registered in code with :func:`register_adapter` (a user's script, a test; a built-in once its
   module is imported);
3. entry points of the group `rsdg_bench.adapters`: the built-ins, declared in rsdg-bench's own
   pyproject.toml, and installed plug-ins
   (`[project.entry-points."rsdg_bench.adapters"] mymodel = "mypkg.adapter:MyAdapter"`).
Listing names reads package metadata and imports nothing (torch models take seconds to import); an adapter's
module is imported when the adapter is asked for. The registry is `rsdg_bench.base.registry.Registry`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.registry import Registry

if TYPE_CHECKING:  # the adapter base class imports torch: listing adapters does not need it
    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.protocol.task_schema import Task

ENTRY_POINT_GROUP = "rsdg_bench.adapters"


def _check_adapter_class(cls: object) -> None:
    from rsdg_bench.models.adapters import Adapter

    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterError(f"{cls!r} is not an Adapter subclass", "subclass rsdg_bench.models.adapters.Adapter")


ADAPTERS: Registry[type[Adapter]] = Registry("adapter", ENTRY_POINT_GROUP, AdapterError, check=_check_adapter_class)


def register_adapter(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: make an adapter available under `name` (set as the class's `name`)."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        cls.name = name
        return ADAPTERS.register(cls)

    return decorate


def builtin_entries() -> dict[str, tuple[str, str]]:
    """name → (module, class name) of every built-in adapter, from rsdg-bench's own entry points (imports
    nothing)."""
    found = {}
    for name, entry in ADAPTERS.declared().items():
        if ADAPTERS.is_builtin(entry):
            module, _, attr = entry.value.partition(":")
            found[name] = (module, attr)
    return found


def builtin_modules() -> dict[str, str]:
    """name → module of every built-in adapter (imports nothing)."""
    return {name: module for name, (module, _) in builtin_entries().items()}


def builtin_adapter(name: str) -> type[Adapter]:
    """The built-in adapter `name` and nothing else: never a file, never a plug-in. What static submission
    checks use to compare a bundle's claimed built-in with the harness's own code; a name that is not a
    built-in is refused before anything is imported."""
    if name not in builtin_entries():
        raise AdapterError(f"{name!r} is not a built-in adapter",
                           f"built-ins: {', '.join(sorted(builtin_entries()))}")
    return ADAPTERS.get(name)


def _from_file(spec: str) -> type[Adapter]:
    file_part, _, class_name = spec.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise AdapterError(f"adapter file {path} not found", "give --adapter path/to/file.py:ClassName")
    module_name = f"rsdg_bench_user_adapter_{abs(hash(path.resolve()))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise AdapterError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None:
        from rsdg_bench.models.adapters import Adapter

        defined = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, Adapter) and v.__module__ == module_name)
        raise AdapterError(f"no class {class_name!r} in {path}"
                           + (f" (its Adapter classes: {', '.join(defined)})" if defined else " (it defines no Adapter)"),
                           f"give --adapter {path}:<ClassName> with a class defined in that file")
    return _check_class(cls, spec, class_name or path.stem)


def _check_class(cls: object, where: str, name: str) -> type[Adapter]:
    from rsdg_bench.models.adapters import Adapter

    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterError(f"{where} is not an Adapter subclass", "subclass rsdg_bench.models.adapters.Adapter")
    if not cls.name:
        cls.name = name
    return cls


def resolve_adapter(spec: str) -> type[Adapter]:
    """The adapter class for a name or `file.py:Class` spec."""
    if ".py:" in spec:
        return _from_file(spec)
    ADAPTERS.declared()  # an installed plug-in that takes a built-in's name is an error, even once it is loaded
    if spec not in ADAPTERS:
        raise AdapterError(f"unknown adapter {spec!r}",
                           f"use one of: {', '.join(sorted(available_adapters()))}, or --adapter path/to/file.py:Class")
    return ADAPTERS.get(spec)


def available_adapters() -> dict[str, str]:
    """name → where it comes from (built-in, registered in code, or the plug-in's import path); imports nothing."""
    declared = ADAPTERS.declared()
    found = {}
    for name in ADAPTERS.names():
        entry = declared.get(name)
        if entry is None:
            found[name] = f"registered by {ADAPTERS.source(name)}"
        else:
            found[name] = "built-in" if ADAPTERS.is_builtin(entry) else f"plug-in {entry.value}"
    return found


def adapters_doing(kind: str) -> list[str]:
    """The installed adapters that declare `kind` (imports each; one that fails to import is left out)."""
    doers = []
    for name in sorted(available_adapters()):
        try:
            if kind in resolve_adapter(name).kinds:
                doers.append(name)
        except AdapterError:
            continue
    return doers


def require_adapter_kind(task: Task, adapter: Adapter | type[Adapter]) -> None:
    """Refuse a task whose kind the adapter (instance or class) does not declare in its `kinds`."""
    if task.kind not in adapter.kinds:
        doers = adapters_doing(task.kind)
        raise AdapterError(f"adapter {adapter.name!r} does not do {task.kind} (task {task.id}; it declares "
                           f"{', '.join(sorted(adapter.kinds))})",
                           "pick a task of its kind (`rsdg-bench tasks list`) or an adapter that does "
                           f"{task.kind}: " + (", ".join(doers) if doers else "none is installed; `rsdg-bench "
                                               "adapter new NAME` starts one"))
