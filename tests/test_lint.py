"""The code stays lint-clean: `ruff check` with the rules of pyproject.toml (`[tool.ruff]`: pyflakes and
pycodestyle, lines up to 130 characters) over every Python source of the repository. An unused import, an
undefined name or an overlong line fails here, in the README's test command (ruff is a test dependency)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("rsdg_bench", "prep", "baselines", "leaderboards", "tests", "bench")


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *SOURCES], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
