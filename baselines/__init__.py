"""Built-in model adapters. Importing this package registers them (see rsdg_bench.registry)."""

from . import (  # noqa: F401  (importing registers them)
    classifier_adapter,
    codex_adapter,
    cromss_adapter,
    crossearth_adapter,
    daformer_adapter,
    mtp_adapter,
    smp_adapter,
    temporal_smp_adapter,
)
