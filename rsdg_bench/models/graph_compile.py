"""`--compile BACKEND`: the adapter's module through `torch.compile` before it is evaluated.

The module is compiled in place (`nn.Module.compile`: its state dict, its weights' identity and every
adapter method stay as they are), with static shapes, so each input size a task feeds it (a sliding window,
a batch) is traced once and then replayed; on CUDA the default backend, inductor, fuses the small kernels
whose launches keep the GPU waiting on the host. It changes how the arithmetic is scheduled, not what is
computed: float sums may be reordered, so a pixel at a class boundary can flip. The record says it
(`provenance.execution.compile`), and the row stays the same model: the resume key and the leaderboard row
do not change, as for batching. An adapter whose `predict` calls submodules rather than the module itself
runs them eagerly.
"""

from __future__ import annotations

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import Adapter


def compile_module(adapter: Adapter, backend: str) -> None:
    """Compile `adapter.module`'s forward in place with `backend` (e.g. inductor; aot_eager traces without
    generating code, and is what the CPU tests use)."""
    import torch._dynamo

    known = set(torch._dynamo.list_backends(exclude_tags=()))
    if backend not in known:
        raise AdapterError(f"torch.compile has no backend {backend!r}",
                           f"use one of {', '.join(sorted(known))} (inductor generates code; aot_eager only traces)")
    if adapter.module is None:
        raise AdapterError(f"adapter {adapter.name} has no module to compile", "run it without --compile")
    adapter.module.compile(backend=backend, dynamic=False)
