"""rsdg-bench: benchmark suite and leaderboard harness for remote-sensing domain generalization.

The public Python API (`rsdg_bench.api`, docs/python-api.md) is importable from here:
`list_tasks`, `load_task`, `open_split`, `evaluate`, `load_results`, `build_leaderboard`, and the types a
plain model needs (`InputContract`, `Normalization`). They load on first use, so `import rsdg_bench` (and
the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from . import _moved

_moved.install()  # the flat layout's module paths (`rsdg_bench.results`, …) still import, with a warning
_version: ModuleType | None
try:  # written at install time by setuptools-scm from git (pyproject's [tool.setuptools_scm])
    from rsdg_bench import _version
except ImportError:  # a source tree that was never installed: nothing says which code this is
    _version = None
# The version the install was built as (in an editable checkout, as of its install: `results.git_commit` names
# the code), and the commit it was built from (None from a setuptools-scm that does not write it)
__version__: str = getattr(_version, "__version__", "0+unknown")
BUILT_FROM_COMMIT: str | None = getattr(_version, "__commit_id__", None)

_API = {
    "list_tasks": "api", "load_task": "api", "open_split": "api", "evaluate": "api", "load_results": "api",
    "build_leaderboard": "api", "Evaluation": "api", "Leaderboard": "api",
    "Adapter": "models.adapters", "InputContract": "models.adapters", "Normalization": "models.adapters",
    "register_adapter": "models.registry", "Task": "protocol.task_schema",
}
__all__ = ["__version__", "BUILT_FROM_COMMIT", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
