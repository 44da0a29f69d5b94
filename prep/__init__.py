"""Dataset preparers: one module per raw dataset, its class registered with `@register_preparer`.

Every module of this package is imported here, so a new dataset is one new file (docs/extending.md);
installed packages add theirs through the entry-point group `rsdg_bench.datasets` (see prep/base.py).
"""

import importlib
import pkgutil

from .base import Preparer, available_preparers, get_preparer, register_preparer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Preparer", "available_preparers", "get_preparer", "register_preparer"]
