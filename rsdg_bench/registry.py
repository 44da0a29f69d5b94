"""Finding adapters: built-ins, installed plug-ins, and files.

Three ways in, tried in this order for a name:
1. `path/to/file.py:ClassName`: a class in a file (no packaging needed);
2. built-ins, registered with :func:`register_adapter` in `baselines/`;
3. plug-ins: installed packages that declare an entry point in the group `rsdg_bench.adapters`
   (`[project.entry-points."rsdg_bench.adapters"] mymodel = "mypkg.adapter:MyAdapter"`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AdapterError

if TYPE_CHECKING:  # the adapter base class imports torch: listing adapters does not need it
    from .adapters import Adapter

ENTRY_POINT_GROUP = "rsdg_bench.adapters"
_BUILTINS: dict[str, type[Adapter]] = {}


def register_adapter(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: make an adapter available under `name`."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        if name in _BUILTINS and _BUILTINS[name] is not cls:
            raise AdapterError(f"two adapters are registered as {name!r}: {_BUILTINS[name]} and {cls}")
        cls.name = name
        _BUILTINS[name] = cls
        return cls

    return decorate


BUILTIN_PACKAGE = "rsdg_bench.baselines"
_DECLARED = re.compile(r'^@register_adapter\(\s*"([^"]+)"\s*\)', re.MULTILINE)


@cache
def builtin_modules() -> dict[str, str]:
    """name → module of every built-in adapter, read from the `@register_adapter("name")` lines of the
    baselines' sources: listing adapters imports none of them (torch models take seconds to import)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations)))
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        for name in _DECLARED.findall(path.read_text(encoding="utf-8")):
            if name in found:
                raise AdapterError(f"two built-in adapters are registered as {name!r}: {found[name]} and "
                                   f"{BUILTIN_PACKAGE}.{path.stem}")
            found[name] = f"{BUILTIN_PACKAGE}.{path.stem}"
    return found


def _builtin(name: str) -> type[Adapter]:
    """Import the module that registers built-in `name` (once) and return its class."""
    importlib.import_module(builtin_modules()[name])
    return _BUILTINS[name]


def builtin_adapter(name: str) -> type[Adapter]:
    """The built-in adapter `name` and nothing else: never a file, never a plug-in. What static submission
    checks use to compare a bundle's claimed built-in with the harness's own code; a name that is not a
    built-in is refused before anything is imported."""
    if name not in builtin_modules():
        raise AdapterError(f"{name!r} is not a built-in adapter",
                           f"built-ins: {', '.join(sorted(builtin_modules()))}")
    return _builtin(name)


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
        from .adapters import Adapter

        defined = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, Adapter) and v.__module__ == module_name)
        raise AdapterError(f"no class {class_name!r} in {path}"
                           + (f" (its Adapter classes: {', '.join(defined)})" if defined else " (it defines no Adapter)"),
                           f"give --adapter {path}:<ClassName> with a class defined in that file")
    return _check_class(cls, spec, class_name or path.stem)


def _check_class(cls: object, where: str, name: str) -> type[Adapter]:
    from .adapters import Adapter

    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterError(f"{where} is not an Adapter subclass", "subclass rsdg_bench.adapters.Adapter")
    if not cls.name:
        cls.name = name
    return cls


def resolve_adapter(spec: str) -> type[Adapter]:
    """The adapter class for a name or `file.py:Class` spec."""
    if ".py:" in spec:
        return _from_file(spec)
    plugins = [entry for entry in entry_points(group=ENTRY_POINT_GROUP) if entry.name == spec]
    if (spec in builtin_modules() or spec in _BUILTINS) and plugins:
        raise AdapterError(f"the plug-in adapter {spec!r} ({plugins[0].value}) has the name of a built-in adapter",
                           f"rename the entry point in the plug-in's pyproject.toml ([project.entry-points."
                           f"\"{ENTRY_POINT_GROUP}\"]) and reinstall it; built-in names are reserved")
    if len(plugins) > 1:
        raise AdapterError(f"two installed plug-ins register the adapter {spec!r}: "
                           f"{', '.join(e.value for e in plugins)}", "uninstall or rename one of them")
    if spec in _BUILTINS:  # imported already, or registered at run time by a script of the user's
        return _BUILTINS[spec]
    if spec in builtin_modules():
        return _builtin(spec)
    for entry in plugins:
        if entry.name == spec:
            try:
                loaded = entry.load()
            except Exception as exc:
                raise AdapterError(f"plug-in adapter {spec!r} ({entry.value}) failed to import: {exc}",
                                   "fix or reinstall the package that provides it") from exc
            return _check_class(loaded, f"entry point {entry.value}", spec)
    raise AdapterError(f"unknown adapter {spec!r}",
                       f"use one of: {', '.join(sorted(available_adapters()))}, or --adapter path/to/file.py:Class")


def available_adapters() -> dict[str, str]:
    """name → where it comes from (built-in or the plug-in's import path); imports nothing."""
    found = {name: "built-in" for name in [*builtin_modules(), *_BUILTINS]}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, f"plug-in {entry.value}")
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
