"""Built-in model adapters. Importing this package registers them (see rsdg_bench.registry)."""

from . import smp_adapter  # noqa: F401  (registers "smp")
