"""Locks on prepared datasets, so a prepare never swaps data under a reader and two prepares take turns.

Two advisory file locks per dataset live beside it in the data root (`flock`, released by the kernel when
a process dies, so a crash or kill -9 never leaves one behind):

- `.<name>.lock`: readers (`run`, `train`, opening a dataset) hold it shared while they read; a prepare
  holds it exclusively only for its publish (the folder swap), which therefore waits for the readers to
  finish and is never seen half-done;
- `.<name>.prepare.lock`: held exclusively for a whole prepare, so a second prepare of the same dataset
  waits for the first (saying so) instead of racing it over the same partial folder.

A data root the user cannot write to holds no lock file and cannot be prepared into either, so reading it
without a lock is safe. Where `fcntl` does not exist (Windows) the locks are no-ops; docs/reliability.md
says so.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rsdg_bench.base.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]


def unwritable_root(root: Path, exc: OSError) -> DataError:
    """The error for a data root that cannot be written (read-only, not ours, full)."""
    return DataError(f"cannot write to the data root {root}: {exc.strerror or exc}",
                     "point --data-root (or RSDG_DATA) at a folder you can write to, or make this one writable")


def lock_path(data_root: Path, name: str) -> Path:
    return Path(data_root) / f".{name}.lock"


def prepare_lock_path(data_root: Path, name: str) -> Path:
    return Path(data_root) / f".{name}.prepare.lock"


def _open_lock_file(path: Path, writable_root: bool) -> int | None:
    """A descriptor on the lock file (created when the root is writable), or None when a reader finds the
    root read-only; a writer that cannot create it gets an error naming the root."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        readonly = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        if writable_root or not readonly:
            raise unwritable_root(path.parent, exc) from exc
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


@contextmanager
def _flock(path: Path, exclusive: bool, waiting: str, writable_root: bool) -> Iterator[None]:
    if fcntl is None or not path.parent.is_dir():
        yield
        return
    fd = _open_lock_file(path, writable_root)
    if fd is None:
        yield
        return
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"rsdg-bench: {waiting} …", file=sys.stderr, flush=True)
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def held_exclusively(folder: Path, waiting: str) -> Iterator[None]:
    """An exclusive lock on the existing directory `folder` itself (flock on its descriptor: no lock file is
    left behind), for writers that must take turns publishing into it (two leaderboard builds of one site);
    `waiting` is printed while another holds it."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"rsdg-bench: {waiting} …", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def reading(data_root: Path, name: str) -> Iterator[None]:
    """Hold `name` shared while reading it: no prepare publishes a new version of it meanwhile."""
    with _flock(lock_path(data_root, name), False, f"waiting for a prepare to finish publishing {name}",
                writable_root=False):
        yield


@contextmanager
def reading_all(data_root: Path, names: set[str]) -> Iterator[None]:
    """`reading` for several datasets at once (in a fixed order, so two readers never wait on each other)."""
    with ExitStack() as held:
        for name in sorted(names):
            held.enter_context(reading(data_root, name))
        yield


@contextmanager
def publishing(data_root: Path, name: str) -> Iterator[None]:
    """Hold `name` exclusively for the folder swap that publishes a new version (waits for its readers)."""
    with _flock(lock_path(data_root, name), True, f"waiting for the runs reading {name} to finish before "
                f"publishing the new version", writable_root=True):
        yield


@contextmanager
def preparing(data_root: Path, name: str) -> Iterator[None]:
    """Hold the prepare of `name` for its whole length: a second prepare of it waits for this one."""
    path = prepare_lock_path(data_root, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable_root(path.parent, exc) from exc
    with _flock(path, True, f"another prepare of {name} is running in {data_root}; waiting for it to finish "
                "(this one then prepares again, resuming what it can)", writable_root=True):
        yield
