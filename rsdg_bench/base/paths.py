"""Where prepared data and results live by default.

Data root: `--data-root`, else `$RSDG_DATA`, else `$XDG_DATA_HOME/rsdg-bench/data`
(`~/.local/share/rsdg-bench/data`). Results: `--results`, else `$RSDG_RESULTS`, else `./rsdg-results`
(results belong to the user's project, so they sit where the command is run).
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def default_data_root() -> Path:
    if env := os.environ.get("RSDG_DATA"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "rsdg-bench" / "data"


def default_results_root() -> Path:
    if env := os.environ.get("RSDG_RESULTS"):
        return Path(env).expanduser()
    return Path("rsdg-results")


# A name that becomes one path component (a dataset, domain, split, checkpoint key, schema or map id):
# letters, digits, `_ . + -`, not starting with a dot, so it can never climb out of its folder.
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


def is_safe_name(value: object) -> bool:
    """Whether `value` is a `SAFE_NAME`: one path component that stays in its folder (no `/`, no `..`, no
    leading dot, no trailing newline)."""
    return isinstance(value, str) and re.fullmatch(SAFE_NAME[1:-1], value) is not None


def confined(root: Path, candidate: str | Path, what: str) -> Path:
    """`candidate` (relative to `root`, or absolute) resolved, when it lies inside `root`; else an error that
    names `what` asked for it. Every path read from a record, task, card or option goes through here, so a
    hostile file cannot make the harness read or write outside the folder it belongs to."""
    from rsdg_bench.base.errors import RsdgError

    base = Path(root).resolve()
    resolved = (base / Path(candidate)).resolve()
    if not resolved.is_relative_to(base):
        raise RsdgError(f"{what} names {str(candidate)!r}, which lies outside {base}",
                        "paths in records, tasks and cards must stay inside their folder; this file was edited "
                        "or made by hand")
    return resolved
