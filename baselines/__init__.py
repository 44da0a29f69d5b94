"""Built-in model adapters. Importing this package registers them (see rsdg_bench.registry)."""

from . import cromss_adapter, crossearth_adapter, daformer_adapter, mtp_adapter, smp_adapter  # noqa: F401  (registers them)
