"""A plain `torch.nn.Module` as an adapter, for evaluating the model object a researcher holds (the Python
API's `evaluate`): its declared input contract says how the harness normalizes the data for it, and the
module is called with the normalized batch through the task kind's entry point.

Its identity in records is the module's class and that class's code (`code_identity`), and its weights are
identified by the sha256 of its state dict (`state_sha256`), so a record says which code and which weights
made it, as a checkpoint file's sha256 does for `rsdg-bench run`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import Adapter, InputContract
from rsdg_bench.models.code_identity import code_identity
from rsdg_bench.protocol.task_schema import Task


class ModuleAdapter(Adapter):
    """`module(x)` for `predict` and `classify`, `module(x, days)` for `predict_series`."""

    name = "module"
    module: nn.Module  # given, never None

    def __init__(self, module: nn.Module, contract: InputContract | None, kinds: frozenset[str]) -> None:
        if not isinstance(module, nn.Module):
            raise AdapterError(f"evaluate() takes an Adapter or a torch.nn.Module, not {type(module).__name__}")
        if not isinstance(contract, InputContract):
            raise AdapterError("a plain torch.nn.Module needs its input contract",
                               "pass input_contract=InputContract(num_bands=..., normalization=Normalization(...))")
        super().__init__()
        self.module = module
        self.kinds = kinds
        self._contract = contract
        self.options = {"class": f"{type(module).__module__}.{type(module).__qualname__}"}

    def setup(self, task: Task, band_names: list[str]) -> None:
        """Nothing to build: the module exists already."""

    def input_contract(self) -> InputContract:
        return self._contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def predict_series(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        return self.module(x, days)

    def identity(self) -> dict[str, Any]:
        return {"adapter": self.name, "options": dict(self.options), "code": code_identity(type(self.module))}


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order): the identity of
    in-memory weights, equal for equal weights whatever device they are on."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
