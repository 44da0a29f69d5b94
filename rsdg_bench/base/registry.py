"""One registry for every axis of variation: adapters, dataset preparers, task kinds, metric conventions.

A `Registry` holds named objects of one axis. An object comes in two ways:
- `registry.register(obj)` (usable as a class decorator): the name is read from the object's `name`;
- an entry point of the registry's group in an installed package's metadata
  (`[project.entry-points."<group>"] <name> = "package.module:Object"`), loaded when its name is first asked
  for. rsdg-bench declares its own built-ins this way too (pyproject.toml), so a lower stage can look up a
  kind or an adapter by name without importing the stage that implements it, and listing names imports
  nothing.
A name registered twice by different objects, or an entry point whose object calls itself by another name,
is an error that names both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from rsdg_bench.base.errors import RsdgError

T = TypeVar("T")
R = TypeVar("R")  # what is registered (returned as it came)
HOME_DISTRIBUTION = "rsdg-bench"  # the distribution whose entry points are built-ins


@cache
def _installed(group: str) -> tuple[EntryPoint, ...]:
    """The entry points of `group` in the installed packages' metadata, read once per process (about 3 ms a
    read; registrations at import time ask often)."""
    return tuple(entry_points(group=group))


def _qualified(obj: object) -> str:
    target = obj if isinstance(obj, type) else type(obj)
    return f"{target.__module__}.{target.__qualname__}"


def _normalized(distribution: str) -> str:
    return distribution.lower().replace("_", "-")


class Registry(Generic[T]):
    """Named objects of one axis of variation, registered in code or declared as entry points.

    `what` names the axis in errors ("adapter", "task kind"); `error` is the `RsdgError` subclass raised;
    `store` turns a registered object into what is kept (a kind's class → its one instance); `check` raises
    when a registered object lacks what the axis requires."""

    def __init__(self, what: str, group: str | None, error: type[RsdgError] = RsdgError,
                 store: Callable[[Any], T] = lambda obj: obj, check: Callable[[Any], None] | None = None) -> None:
        self.what = what
        self.group = group
        self.error = error
        self._store = store
        self._check = check
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    # registering
    def register(self, obj: R, name: str | None = None) -> R:
        """Register `obj` under `name` (default: its `name` attribute); returns `obj`, so it decorates."""
        name = name if name is not None else getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise self.error(f"{_qualified(obj)} has no name to be registered as a {self.what} under",
                             "give it a class attribute `name = \"...\"`")
        source = _qualified(obj)
        claimed = self._sources.get(name)
        if claimed is None and name in self.declared():  # declared by an entry point, not yet loaded
            module, _, attr = self.declared()[name].value.partition(":")
            claimed = f"{module}.{attr}"
        if claimed is not None and claimed != source:
            raise self.error(f"two {self.what}s are registered as {name!r}: {claimed} and {source}",
                             f"give the new {self.what} its own name")
        if self._check is not None:
            self._check(obj)
        self._items[name] = self._store(obj)
        self._sources[name] = source
        return obj

    # entry points
    def entry_points(self) -> list[EntryPoint]:
        """The installed entry points of this registry's group (reads metadata; imports nothing)."""
        return list(_installed(self.group)) if self.group else []

    def declared(self) -> dict[str, EntryPoint]:
        """name → entry point; two installed packages declaring one name is an error, as is a plug-in taking
        a built-in's name (built-ins: entry points of rsdg-bench itself)."""
        found: dict[str, EntryPoint] = {}
        for entry in self.entry_points():
            other = found.get(entry.name)
            if other is not None and other.value != entry.value:
                builtin = next((e for e in (other, entry) if self.is_builtin(e)), None)
                if builtin is not None:
                    plugin = entry if builtin is other else other
                    raise self.error(f"the plug-in {self.what} {entry.name!r} ({plugin.value}) has the name of a "
                                     f"built-in {self.what}",
                                     f"rename the entry point in the plug-in's pyproject.toml ([project.entry-points."
                                     f"\"{self.group}\"]) and reinstall it; built-in names are reserved")
                raise self.error(f"two installed packages declare the {self.what} {entry.name!r}: {other.value} "
                                 f"and {entry.value}", "uninstall or rename one of them")
            found[entry.name] = entry
        return found

    @staticmethod
    def is_builtin(entry: EntryPoint) -> bool:
        dist = getattr(entry, "dist", None)
        return dist is not None and _normalized(dist.name) == HOME_DISTRIBUTION

    def _load(self, entry: EntryPoint) -> T:
        try:
            obj = entry.load()
        except Exception as exc:  # a broken plug-in must say which package it is
            raise self.error(f"{self.what} {entry.name!r} ({entry.value}) failed to import: {exc}",
                             "fix or reinstall the package that provides it") from exc
        own = getattr(obj, "name", None)
        if not own and isinstance(obj, type):  # an adapter class may leave its name to its registration
            setattr(obj, "name", entry.name)  # a class that declares no `name` attribute
            own = entry.name
        if own != entry.name:
            raise self.error(f"{self.what} {entry.value} is declared as {entry.name!r} but calls itself {own!r}",
                             "make the entry-point name equal the object's `name`")
        if entry.name not in self._items:
            self.register(obj)
        return self._items[entry.name]

    # looking up
    def names(self) -> list[str]:
        """Every name: registered in code, then declared by entry points (in their installed order)."""
        return [*self._items, *(name for name in self.declared() if name not in self._items)]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self.declared()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The object registered as `name`, loading its entry point on first use."""
        if name in self._items:
            return self._items[name]
        declared = self.declared()
        if name not in self._items and name in declared:
            return self._load(declared[name])
        if name not in self._items:
            if not self._items and not declared:  # even the built-ins are missing: metadata from an older install
                raise self.error(f"no {self.what} {name!r}: no installed package declares any {self.what} (entry-point "
                                 f"group {self.group})",
                                 "rsdg-bench's installed metadata predates its entry points: reinstall it "
                                 "(`pip install -e .` in a checkout) and remove any stale rsdg_bench.egg-info beside it")
            raise self.error(f"no {self.what} {name!r}",
                             f"the {self.what}s are {', '.join(sorted(self.names())) or 'none'}")
        return self._items[name]

    def source(self, name: str) -> str:
        """Where `name` comes from: its module path, or its entry point's value (imports nothing)."""
        if name in self._sources:
            return self._sources[name]
        return self.declared()[name].value

    def loaded(self) -> dict[str, T]:
        """Every object, each entry point loaded."""
        return {name: self.get(name) for name in self.names()}
