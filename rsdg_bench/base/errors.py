"""Errors a user can act on.

Every error the harness raises for bad input says two things: what is wrong (naming the file, key or
value) and how to fix it. The CLI prints both and exits non-zero without a traceback.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import TypeGuard

# A disk that filled (or a quota reached), or a file system that is (or turned) read-only: every later write
# fails the same way, so a command stops at the first rather than failing each task in turn
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# ... and, for the CLI's last word, a folder that is not the user's
DISK_ERRNOS = (*STORAGE_ERRNOS, errno.EACCES, errno.EPERM)


class RsdgError(Exception):
    """Base class: a problem the user can fix, with the fix spelled out."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem}\n  fix: {self.fix}"


class DataError(RsdgError):
    """Raw or prepared data is missing, incomplete or not what it claims to be."""


class TaskError(RsdgError):
    """A task or suite YAML is malformed, unknown or inconsistent."""


class AdapterError(RsdgError):
    """A model adapter cannot be found, loaded, or broke its contract."""


class SplitAccessError(RsdgError):
    """Code asked for a split it must not see (a target split during training)."""


class ResultsError(RsdgError):
    """A result record is malformed or does not agree with its own confusion matrices."""


class SubmissionError(RsdgError):
    """Prediction maps or a submission bundle are malformed, incomplete or do not match the tasks and data."""


def is_disk_error(exc: BaseException) -> bool:
    """Whether `exc` is a write refused by the disk or the folder (`DISK_ERRNOS`), not by the data."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def is_storage_error(exc: BaseException) -> TypeGuard[OSError]:
    """Whether `exc` is a write the storage refused (`STORAGE_ERRNOS`): no later write can succeed either."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def disk_error(exc: OSError, where: str, near: Path | None = None) -> RsdgError:
    """A disk error as what a user can act on: the file, the reason, the space left on its disk, the fix. A write
    to an open file fails without a file name: then `near` (the command's output folder) is named instead."""
    name = exc.filename or (f"a file under {near}" if near is not None else "a file")
    try:
        folder = Path(str(exc.filename)).parent if exc.filename else near
        while folder is not None and not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = f" ({shutil.disk_usage(folder).free / 2 ** 20:.0f} MiB free there)" if folder is not None else ""
    except OSError:
        free = ""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    verb = "write" if exc.errno in STORAGE_ERRNOS else "use"
    fix = ("free space there" if full else "make it writable, or yours,") + f" (or point {where} elsewhere) and " \
          "re-run: finished records and prepared samples are kept"
    return RsdgError(f"cannot {verb} {name}: {exc.strerror}{free}", fix)
