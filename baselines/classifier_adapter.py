"""A 2-D image classifier from timm, for `classification` tasks (FMoW).

Registered as `timm-classifier`. Options (`--model-arg key=value`): `model`, a timm model name (default
`resnet18`); `mean`, `std`, per-band normalization in the data's units (default ImageNet's statistics on
8-bit values for 3 bands, else 127.5 / 63.75). Built with random weights and the task's classes and
band count; trained by `rsdg-bench train` or loaded from a local state dict with `--checkpoint`. Nothing
is downloaded.
"""

from __future__ import annotations

import timm
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import IMAGENET_MEAN, IMAGENET_STD, Adapter, InputContract, Normalization
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

from .smp_adapter import _DEFAULT_MEAN, _DEFAULT_STD, _per_band


@register_adapter("timm-classifier")
class TimmClassifierAdapter(Adapter):
    """Any timm classification model; trainable by the harness."""

    trainable = True
    kinds = frozenset({"classification"})
    known_options = frozenset({"model", "mean", "std"})

    def __init__(self, **options: str) -> None:
        options.setdefault("model", "resnet18")
        super().__init__(**options)
        self._contract: InputContract | None = None

    def setup(self, task: Task, band_names: list[str]) -> None:
        num_bands = len(band_names)
        try:
            self.module = timm.create_model(self.options["model"], pretrained=False,
                                            num_classes=task.class_schema.num_classes, in_chans=num_bands)
        except RuntimeError as exc:
            raise AdapterError(f"timm cannot build {self.options['model']!r}: {exc}",
                               "see `timm.list_models()` for the names") from exc
        rgb = num_bands == 3
        mean = _per_band(self.options.get("mean"), _DEFAULT_MEAN, num_bands, "mean") if "mean" in self.options or not rgb \
            else IMAGENET_MEAN
        std = _per_band(self.options.get("std"), _DEFAULT_STD, num_bands, "std") if "std" in self.options or not rgb \
            else IMAGENET_STD
        self._contract = InputContract(num_bands=num_bands, normalization=Normalization(mean=mean, std=std))

    def input_contract(self) -> InputContract:
        if self._contract is None:
            raise AdapterError("timm-classifier used before setup()")
        return self._contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise AdapterError("timm-classifier gives one class per image, not a map", "use it on classification tasks")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)
