"""Which fields of a task definition changed: named in every refusal of work made for another task version."""

from __future__ import annotations

from typing import Any


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths (`training.iterations`, `targets[1].split`) where two resolved task definitions differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(set(old) | set(new), key=str)
                for change in changed_fields(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [change for i, (a, b) in enumerate(zip(old, new, strict=True))
                for change in changed_fields(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [prefix or "(the whole definition)"]
