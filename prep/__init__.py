"""Dataset preparers: one module per raw dataset, each registered by name (see prep/base.py)."""

from . import (  # noqa: F401  (importing a module registers its preparer)
    casid,
    deepglobe_road,
    dfc2020,
    dynamicearthnet,
    fmow,
    globalroadnet,
    loveda,
    massachusetts_roads,
    muds,
    noldo_s12,
    oscd,
    openearthmap,
    openearthmap_sar,
    potsdam,
    rescuenet,
    toyearth,
    vaihingen,
    whu_building,
)
from .base import Preparer, available_preparers, get_preparer, register_preparer

__all__ = ["Preparer", "available_preparers", "get_preparer", "register_preparer"]
