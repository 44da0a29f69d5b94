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


def test_a_non_editable_install_records_the_commit_it_was_built_from(tmp_path: Path):
    """An install built from a checkout (no git beside the installed files) still says which code made its
    records: setuptools-scm writes the version and commit into `rsdg_bench/_version.py` at build time. The
    install lies inside another git repository, whose HEAD must not be taken for the harness's."""
    import os
    import shutil
    import subprocess
    import sys

    def git(*args: str, cwd: Path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    clone = tmp_path / "clone"  # the working tree's files (committed or not), as a fresh one-commit repository
    for name in git("ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).splitlines():
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    git("init", "-q", cwd=clone)
    git("add", "-A", cwd=clone)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "snapshot", cwd=clone)
    head = git("rev-parse", "HEAD", cwd=clone)
    other = tmp_path / "other-repo"  # e.g. a project that keeps its virtual environment inside its checkout
    other.mkdir()
    git("init", "-q", cwd=other)
    (other / "notes.txt").write_text("not the harness\n")
    git("add", "notes.txt", cwd=other)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "other", cwd=other)
    site = other / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(clone)], check=True, capture_output=True, text=True)
    probe = ("import rsdg_bench, rsdg_bench.records.results as r; print(rsdg_bench.__file__); print(rsdg_bench.__version__); "
             "print(r.git_commit())")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)}).stdout.split()
    assert Path(out[0]).is_relative_to(site)  # the non-editable copy, not this checkout
    commit = out[2]
    assert commit.startswith("g") and head.startswith(commit[1:]) and len(commit) >= 8
    assert f"+g{commit[1:]}" in out[1] or out[1].count(".") >= 2  # a version from git, not the fallback


def test_a_checkout_whose_git_cannot_answer_says_unknown_not_the_install_commit(monkeypatch):
    """No git (a container) or a git that refuses the checkout: its files may have moved past the commit the
    install was built from, so the record must not name that commit (verify refuses 'unknown')."""
    from rsdg_bench.records import results

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(results.subprocess, "run", no_git)
    assert (ROOT / ".git").exists() and results.git_commit.__wrapped__() == "unknown"
