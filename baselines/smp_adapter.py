"""Generic segmentation-models-pytorch adapter: any smp architecture and encoder, any band count.

Options (`--model-arg key=value`):
- `arch`: an smp architecture name (`unet`, `fpn`, `deeplabv3plus`, `segformer`, …), default `unet`;
- `encoder`: an smp encoder name (`resnet18`, `mobilenet_v2`, `tu-<timm model>`, …), default `resnet18`;
- `mean`, `std`: per-band normalization in the data's units, comma-separated, or one value for every
  band; default 127.5 / 63.75 (8-bit data to roughly [-2, 2]);
- `encoder_weights`: a local state-dict file for the encoder (e.g. pretrained weights to train from),
  loaded strictly; keys may carry an `encoder.` prefix, and a classifier (`fc.*`) is dropped, as smp's
  encoders have none.

Weights are never downloaded: the network starts from random init and is trained by `rsdg-bench train`,
or loaded from a local state dict with `--checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import segmentation_models_pytorch as smp
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization, load_state_strict
from rsdg_bench.models.checkpoints import read_state_dict
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

_DEFAULT_MEAN = 127.5
_DEFAULT_STD = 63.75


def _per_band(text: str | None, default: float, num_bands: int, option: str) -> tuple[float, ...]:
    if text is None:
        return (default,) * num_bands
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise AdapterError(f"smp option {option}={text!r} is not a comma-separated list of numbers") from None
    if len(values) == 1:
        return values * num_bands
    if len(values) != num_bands:
        raise AdapterError(f"smp option {option} has {len(values)} values for {num_bands} bands",
                           f"give one value, or exactly {num_bands}")
    return values


@register_adapter("smp")
class SmpAdapter(Adapter):
    """Any smp model; trainable by the harness."""

    trainable = True
    kinds = frozenset({"segmentation", "change_detection"})  # change: early fusion of the stacked dates
    precisions = frozenset({"fp32", "tf32", "bf16", "fp16"})  # plain conv nets: autocast is what smp users run
    known_options = frozenset({"arch", "encoder", "mean", "std", "encoder_weights"})

    def __init__(self, **options: str) -> None:
        options.setdefault("arch", "unet")
        options.setdefault("encoder", "resnet18")
        super().__init__(**options)
        self._contract: InputContract | None = None

    def setup(self, task: Task, band_names: list[str]) -> None:
        num_bands = len(band_names)
        try:
            self.module = smp.create_model(
                self.options["arch"], encoder_name=self.options["encoder"], encoder_weights=None,
                in_channels=num_bands, classes=task.class_schema.num_classes,
            )
        except (KeyError, ValueError) as exc:
            raise AdapterError(f"smp cannot build arch={self.options['arch']!r} encoder={self.options['encoder']!r}: {exc}",
                               "see segmentation_models_pytorch's lists of architectures and encoders") from exc
        if self.options.get("encoder_weights"):
            self._load_encoder(Path(self.options["encoder_weights"]))
        divisor = getattr(getattr(self.module, "encoder", None), "output_stride", 32)
        self._contract = InputContract(
            num_bands=num_bands,
            normalization=Normalization(
                mean=_per_band(self.options.get("mean"), _DEFAULT_MEAN, num_bands, "mean"),
                std=_per_band(self.options.get("std"), _DEFAULT_STD, num_bands, "std"),
            ),
            size_divisor=int(divisor),
        )

    def _load_encoder(self, path: Path) -> None:
        state, _ = read_state_dict(path)  # PyTorch or safetensors; containers unwrapped
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "encoder.fc."))}
        if state and all(k.startswith("encoder.") for k in state):
            state = {k.removeprefix("encoder."): v for k, v in state.items()}
        encoder = cast(torch.nn.Module, self._require_module().encoder)
        load_state_strict(encoder, state, str(path), what=f"the {self.options['encoder']} encoder")

    def input_contract(self) -> InputContract:
        if self._contract is None:
            raise AdapterError("smp adapter used before setup()")
        return self._contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)
