"""How the scoring loops are compiled: numba, nogil (the reading threads run beside them), cached on disk.

numba keeps the compiled machine code beside the source (`__pycache__`) or, where that folder is read-only,
in the user's cache folder (`NUMBA_CACHE_DIR` chooses another), so only the first process to score pays the
compilation (a few seconds); later ones load it in a fraction of a second. Where no folder at all can be
written, numba refuses to cache; the loop is then compiled in each process instead of failing the run.
Never `fastmath`: it would assume no NaN and no Inf, and the class map's finiteness check relies on both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba

log = logging.getLogger(__name__)


def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` compiled by numba in nopython mode, releasing the GIL, cached on disk where it can be."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        log.info("compiling %s in this process only (%s)", function.__qualname__, exc)
        return numba.njit(nogil=True)(function)
