"""What code an adapter is: so that changing it makes a new record instead of answering with an old one.

An adapter's identity (`Adapter.identity()`) is its name, its options and its **code identity**:

- `sha256` over the source of the adapter's module and of every module it imports (at module level) from
  its own package folder, transitively: for a built-in, the `baselines/` files it uses; for a
  `file.py:Class` adapter, that file and its sibling helpers; for a plug-in, its package's files (also when
  installed editable, where the distribution's file list does not hold the sources);
- `files`: those files' names, relative to the package folder (what the hash covers);
- for a plug-in installed as a distribution, its `distribution` name and `version` as well.

The identity enters the resume key and the record, so a rerun after an edit evaluates again. Modules
imported inside functions are not seen; harness code outside the adapter's package is identified by the
record's `harness_version` and `git_commit`.
"""

from __future__ import annotations

import hashlib
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

HARNESS_DISTRIBUTION = "rsdg-bench"


def code_identity(cls: type) -> dict[str, Any]:
    """The code identity of an adapter class (see the module docstring)."""
    module = sys.modules.get(cls.__module__)
    if module is None or getattr(module, "__file__", None) is None:
        return {"sha256": None, "files": []}
    return _identity_of(module)


def sources_sha256(files: list[tuple[str, bytes]]) -> str:
    """The code sha256 over (relative path, content) pairs, in path order: what a record's `model.code.sha256`
    is, and what a submission's bundled adapter source must hash to."""
    digest = hashlib.sha256()
    for name, content in sorted(files, key=lambda item: PurePosixPath(item[0])):
        digest.update(name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


@cache
def _identity_of(module: ModuleType) -> dict[str, Any]:
    root = _package_root(module)
    files = sorted(_source_files(module, root))
    identity: dict[str, Any] = {"sha256": sources_sha256([(p.relative_to(root).as_posix(), p.read_bytes()) for p in files]),
                                "files": [p.relative_to(root).as_posix() for p in files]}
    distribution = _distribution(module)
    if distribution is not None:
        identity.update(distribution=distribution, version=_version(distribution))
    return identity


def _package_root(module: ModuleType) -> Path:
    """The folder whose modules count as the adapter's own: its package's folder (the sub-package for the
    harness's built-ins), or the file's folder for a module loaded from a path."""
    assert module.__file__ is not None  # an adapter's class comes from a module file
    path = Path(module.__file__).resolve()
    package = module.__name__.split(".")[0]
    if package == "rsdg_bench" or "." not in module.__name__:
        return path.parent
    top = sys.modules.get(package)
    top_file = getattr(top, "__file__", None)
    return Path(top_file).resolve().parent if top_file else path.parent


def _source_files(module: ModuleType, root: Path) -> set[Path]:
    """The module's file and those of the modules it uses at module level from inside `root`, transitively."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        file = getattr(current, "__file__", None)
        if not file or not file.endswith(".py"):
            continue
        path = Path(file).resolve()
        if path in seen or not path.is_relative_to(root):
            continue
        seen.add(path)
        for value in vars(current).values():
            used = value if isinstance(value, ModuleType) else sys.modules.get(getattr(value, "__module__", "") or "")
            if isinstance(used, ModuleType) and used is not current:
                pending.append(used)
    return seen


def _distribution(module: ModuleType) -> str | None:
    """The installed distribution that provides the module's top-level package (None for the harness's own
    built-ins and for modules loaded from a file)."""
    names = packages_distributions().get(module.__name__.split(".")[0], [])
    names = [n for n in names if n != HARNESS_DISTRIBUTION]
    return names[0] if names else None


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def builtin_code_identity(module_name: str) -> dict[str, Any]:
    """The code identity of the built-in adapter module `module_name` (`rsdg_bench.baselines.<stem>`), read from
    the sources without importing them: the module's file and those it imports at module level from the
    baselines folder, transitively, by relative or absolute name. A static `submission verify` compares a
    bundle's built-in with the harness's own code this way, so it loads no model library; a test checks that it
    equals `code_identity` of the imported class for every built-in."""
    import importlib.util

    package, _, stem = module_name.rpartition(".")
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None  # the built-ins' package, installed
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    files: set[Path] = set()
    pending = [root / f"{stem}.py"]
    while pending:
        path = pending.pop()
        if path in files or not path.is_file():
            continue
        files.add(path)
        pending.extend(root / f"{name}.py" for name in _sibling_imports(path, package))
    ordered = sorted(files)
    return {"sha256": sources_sha256([(p.relative_to(root).as_posix(), p.read_bytes()) for p in ordered]),
            "files": [p.relative_to(root).as_posix() for p in ordered]}


def _sibling_imports(path: Path, package: str) -> set[str]:
    """Stems of the modules of `package` that the file imports in its module-level statements (including those
    under a module-level `if` or `try`, which run at import; not those inside functions or classes)."""
    import ast

    found: set[str] = set()
    statements: list[ast.AST] = list(ast.parse(path.read_bytes(), filename=str(path)).body)
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.If, ast.Try)):
            statements.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and module:  # `from .a import x`
                found.add(module.split(".")[0])
            elif (node.level, module) in ((1, ""), (0, package)):  # `from . import a`, `from <package> import a`
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and module.startswith(f"{package}."):  # `from <package>.a import x`
                found.add(module[len(package) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name[len(package) + 1:].split(".")[0] for alias in node.names
                         if alias.name.startswith(f"{package}."))
    return found
