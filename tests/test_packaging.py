"""Packaging: every data folder ships, dependencies are ranges (exact pins live in constraints.txt only)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_folder_of_package_files_is_a_listed_package():
    """A data folder left out of `packages` makes setuptools warn and, later, drop its files."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for package, folder in setuptools["package-dir"].items():
        for sub in sorted((ROOT / folder).rglob("*")):
            if sub.is_dir() and any(f.suffix in (".py", ".yaml", ".j2") for f in sub.iterdir() if f.is_file()) \
                    and "__pycache__" not in sub.parts:
                name = ".".join([package, *sub.relative_to(ROOT / folder).parts])
                assert name in listed, f"{sub} holds package files but {name} is not in [tool.setuptools] packages"


def test_dependencies_are_ranges_and_the_pins_live_in_the_constraints_file():
    for requirement in PYPROJECT["project"]["dependencies"]:
        assert "==" not in requirement, f"{requirement}: declare a range; exact pins go in constraints.txt"
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert "torch==2.14.1" in pins
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "-c constraints.txt" in ci and readme.count("-c constraints.txt") >= 2  # both set-up commands use it
    assert (ROOT / "LICENSE").read_text().startswith("MIT License") and PYPROJECT["project"]["license"] == "MIT"
