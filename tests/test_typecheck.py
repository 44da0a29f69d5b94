"""The code type-checks: mypy with the settings of pyproject.toml ([tool.mypy]) over rsdg_bench/, prep/, baselines/
and leaderboards/, strict on the torch-free core stages (base, datasets, protocol, scoring, records). A wrong
argument type, a possibly-None value used as a str, or an unannotated function in the core fails here, in the
README's test command (mypy is a test dependency, pinned in constraints.txt). A cold check takes about 22 s on
the 2-core box (peft and torchgeo are not followed into: pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mypy_finds_nothing():
    done = _mypy()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_the_strict_core_refuses_an_unannotated_function(tmp_path: Path):
    """The check can fail: the core's strict settings reject what default mypy lets through."""
    package = tmp_path / "rsdg_bench" / "scoring"
    package.mkdir(parents=True)
    (tmp_path / "rsdg_bench" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "loose.py").write_text("def half(x):\n    return x / 2\n")
    config = ROOT / "pyproject.toml"
    done = _mypy("--config-file", str(config), "--no-incremental", "rsdg_bench", cwd=tmp_path)
    assert done.returncode == 1 and "Function is missing a type annotation" in done.stdout, done.stdout
