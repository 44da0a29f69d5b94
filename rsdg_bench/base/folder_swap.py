"""Publishing a whole folder (a prepared dataset, a leaderboard site) so readers see the old one or the new
one, never a mix and never neither.

A folder is built complete beside its destination and swapped in. On Linux the swap is one system call
(`renameat2` with `RENAME_EXCHANGE`: both names change at once); elsewhere, or on a file system without it,
the old folder is renamed to `.<name>.old` and the new one into place, and `recover_swap` (run before each
publish and by readers) renames `.old` back if a crash fell between the two renames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False where the system cannot (then nothing happened)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return int(renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)) == 0


def aside(target: Path) -> Path:
    """Where the previous version of `target` waits while a swap is under way."""
    return target.with_name(f".{target.name}.old")


def recover_swap(target: Path) -> None:
    """Finish what a crash interrupted: put the previous version back if `target` is missing, and remove a
    leftover previous version otherwise."""
    old = aside(target)
    if old.exists() and not target.exists():
        os.replace(old, target)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)


def swap_in(new: Path, target: Path) -> None:
    """Make the complete folder `new` the folder at `target` (see the module docstring); `new` is consumed and
    the previous version removed."""
    recover_swap(target)
    old = aside(target)
    if target.exists() and _exchange(new, target):
        os.replace(new, old)  # `new` now holds the previous version
    else:
        if target.exists():
            os.replace(target, old)
        os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
