"""Counting the calls that make the host wait for an accelerator, to keep the evaluator from idling the GPU.

On a GPU, kernels are queued and the host runs ahead until it needs a value: `.item()`, `.tolist()`, `.cpu()`
(or `.to("cpu")`) of a device tensor, `bool()` / `int()` / `float()` of one, `nonzero` (whose output size is
data-dependent). Each waits for everything queued, so the GPU idles while the host catches up. `HostSyncCounter`
is a `TorchFunctionMode` that counts those calls made on the thread that enters it, by name. It counts them on
CPU tensors as well (there they wait for nothing): the test and `bench/host_overhead.py` run the evaluator's
accelerator path on the CPU and count what it would wait for on a GPU. Only `.to()` is counted just when it
moves a device tensor to the host (on the CPU it is a no-op).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_WAITS = {torch.Tensor.item: "item", torch.Tensor.tolist: "tolist", torch.Tensor.cpu: "cpu",
          torch.Tensor.__bool__: "bool", torch.Tensor.__int__: "int", torch.Tensor.__float__: "float",
          torch.Tensor.nonzero: "nonzero", torch.nonzero: "nonzero"}


def _to_host(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a `Tensor.to` call copies a tensor from an accelerator to the host."""
    tensor = args[0]
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if isinstance(target, str | torch.device):
        return tensor.device.type != "cpu" and torch.device(target).type == "cpu"
    return False


class HostSyncCounter(TorchFunctionMode):
    """`with HostSyncCounter() as syncs: ...`; then `syncs.calls` (name → count) and `syncs.total`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = _WAITS.get(func)
        if name is not None:
            self.calls[name] += 1
        elif func is torch.Tensor.to and _to_host(args, kwargs):
            self.calls["to(cpu)"] += 1
        return func(*args, **kwargs)
