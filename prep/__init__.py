"""Dataset preparers: one module per raw dataset, each registered by name (see prep/base.py)."""

from .base import Preparer, available_preparers, get_preparer, register_preparer
from . import toyearth  # noqa: F401  (registers "toyearth")

__all__ = ["Preparer", "available_preparers", "get_preparer", "register_preparer"]
