"""Dataset preparers: one module per raw dataset, each registered by name (see prep/base.py)."""

from . import loveda, openearthmap, potsdam, rescuenet, toyearth, vaihingen  # noqa: F401  (registers them)
from .base import Preparer, available_preparers, get_preparer, register_preparer

__all__ = ["Preparer", "available_preparers", "get_preparer", "register_preparer"]
