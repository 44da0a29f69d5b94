"""Atomic file writes and content hashing.

Every file the harness produces is written to a temporary sibling and renamed into place, so a crash
never leaves a half-written record, manifest or checkpoint that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def current_umask() -> int:
    """The process's umask: from /proc on Linux (a pure read), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(folder: str | Path, what: str, flag: str) -> Path:
    """Prove a file can be written in `folder` (or, while it does not exist yet, in the nearest folder above
    it that does, where it would be created), before any work is spent on what will be written; creates
    nothing. An error names the folder, the cause and `flag`, the option that points elsewhere."""
    from rsdg_bench.base.errors import RsdgError

    folder = Path(folder).expanduser().absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise RsdgError(f"cannot write to the {what} {folder}: {exc.strerror or exc}",
                        f"point {flag} at a folder you can write to, or free space / make this one writable") from exc
    return folder


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename. The file gets
    the mode an ordinary `open()` would give it under the user's umask (mkstemp alone makes it 0600, which a
    site copied to a web server or a results folder shared on a cluster could not be read from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write to the open file names none: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_interrupted_writes(folder: Path) -> int:
    """Delete the temporary files `atomic_write_bytes` leaves when a process is killed between writing and
    renaming (`.<name>.<random>.tmp`) anywhere under `folder`; returns how many. A resumed job calls it, so a
    half-written file is never published with the rest."""
    stray = [path for path in Path(folder).rglob(".*.tmp") if path.is_file()]
    for path in stray:
        path.unlink(missing_ok=True)
    return len(stray)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON, atomically. NaN is written as JSON `NaN` (Python's json reads it back)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")
