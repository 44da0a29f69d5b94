"""Keep freed large buffers in the process heap while evaluating, so each image's tensors reuse warm pages.

glibc serves an allocation above its mmap threshold (a 1024² float map is 4 MiB; K maps of logits 28 MiB)
with a fresh `mmap` and returns it to the kernel on free, so every image pays page faults that zero its
buffers again: measured on a 1024² LoveDA image, normalizing took 5.8 ms and a 7-class logits map 10.5 ms,
against 1.5 and 1.8 ms once freed blocks stay in the heap (`bench/run_vs_decode.py`). Raising the mmap
and trim thresholds keeps them. This changes where memory comes from, never a value; on other C libraries
(musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap; up to 1 GiB of free heap is kept


@cache
def keep_freed_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when it took effect."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.debug("no glibc mallopt here: large buffers are allocated as the C library does by default")
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
