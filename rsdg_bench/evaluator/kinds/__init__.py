"""The built-in task kinds, one module per kind, each a `rsdg_bench.protocol.kind.TaskKind` registered with
`@register_kind` and declared as an entry point of the group `rsdg_bench.kinds` (pyproject.toml), which is how
the task schema finds a kind by name without importing this stage.

Adding a kind: copy `classification.py` to a new module, change its facts and its three model-facing steps,
and declare it under `[project.entry-points."rsdg_bench.kinds"]` (a plug-in package declares its own).
The names below are re-exported for code written against the flat layout (`rsdg_bench.kinds`).
"""

from rsdg_bench.models.registry import require_adapter_kind
from rsdg_bench.protocol.kind import TaskKind, get_kind, kind_names, register_kind

__all__ = ["TaskKind", "get_kind", "kind_names", "register_kind", "require_adapter_kind"]
