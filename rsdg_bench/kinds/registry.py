"""The registry of task kinds: one object per kind, registered by decorator; a duplicate name is an error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import AdapterError, TaskError

if TYPE_CHECKING:
    from ..adapters import Adapter
    from ..task_schema import Task
    from .base import TaskKind

_KINDS: dict[str, TaskKind] = {}


def register_kind(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: make a task kind available under its `name`."""
    existing = _KINDS.get(cls.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise TaskError(f"two task kinds are registered as {cls.name!r}: {type(existing).__module__}."
                        f"{type(existing).__qualname__} and {cls.__module__}.{cls.__qualname__}",
                        "give the new kind its own name")
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> TaskKind:
    if name not in _KINDS:
        raise TaskError(f"no task kind {name!r}", f"the kinds are {', '.join(_KINDS)}")
    return _KINDS[name]


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def require_adapter_kind(task: Task, adapter: Adapter | type[Adapter]) -> None:
    """Refuse a task whose kind the adapter (instance or class) does not declare in its `kinds`."""
    if task.kind not in adapter.kinds:
        from ..registry import adapters_doing

        doers = adapters_doing(task.kind)
        raise AdapterError(f"adapter {adapter.name!r} does not do {task.kind} (task {task.id}; it declares "
                           f"{', '.join(sorted(adapter.kinds))})",
                           "pick a task of its kind (`rsdg-bench tasks list`) or an adapter that does "
                           f"{task.kind}: " + (", ".join(doers) if doers else "none is installed; `rsdg-bench "
                                               "adapter new NAME` starts one"))
