"""Where prepared data and results live by default.

Data root: `--data-root`, else `$RSDG_DATA`, else `$XDG_DATA_HOME/rsdg-bench/data`
(`~/.local/share/rsdg-bench/data`). Results: `--results`, else `$RSDG_RESULTS`, else `./rsdg-results`
(results belong to the user's project, so they sit where the command is run).
"""

from __future__ import annotations

import os
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
