"""A per-date 2-D baseline for image time series: an smp network on every date, with temporal pooling.

Each date of a B×T×C×H×W series goes through the same smp model, which outputs `features` channels per
pixel; the mean of those features over the dates is appended to each date's own, and a 1×1 convolution
maps the pair to the class logits of that date. The pooled half carries what the whole series says about
a pixel (a seasonal crop, a persistent building) to every date, which a purely per-date model cannot see.

Registered as `smp-temporal`, kind `temporal_segmentation` only. Options (`--model-arg key=value`): `arch`,
`encoder`, `mean`, `std` as the `smp` adapter; `features` (default 16), the per-date feature width. The
dates' day offsets are not used: the pooling is order-free (a temporal-attention model such as CoDEX's
U-TAE uses them). Missing months, stored as zeros, are pooled like any date.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

from .smp_adapter import _DEFAULT_MEAN, _DEFAULT_STD, _per_band


class TemporalPoolingSegmenter(nn.Module):
    """`per_date` (any 2-D network C → F channels) on each date; [own F, mean-over-dates F] → K by a 1×1 conv."""

    def __init__(self, per_date: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.per_date = per_date
        self.head = nn.Conv2d(2 * features, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        features = self.per_date(x.flatten(0, 1))
        features = features.reshape(batch, frames, *features.shape[1:])
        pooled = features.mean(dim=1, keepdim=True).expand_as(features)
        logits = self.head(torch.cat([features, pooled], dim=2).flatten(0, 1))
        return logits.reshape(batch, frames, *logits.shape[1:])


@register_adapter("smp-temporal")
class TemporalSmpAdapter(Adapter):
    """smp per date + temporal mean pooling; trainable by the harness."""

    trainable = True
    kinds = frozenset({"temporal_segmentation"})
    known_options = frozenset({"arch", "encoder", "mean", "std", "features"})

    def __init__(self, **options: str) -> None:
        options.setdefault("arch", "unet")
        options.setdefault("encoder", "resnet18")
        options.setdefault("features", "16")
        super().__init__(**options)
        self._contract: InputContract | None = None

    def setup(self, task: Task, band_names: list[str]) -> None:
        num_bands = len(band_names)
        try:
            features = int(self.options["features"])
            per_date = smp.create_model(self.options["arch"], encoder_name=self.options["encoder"], encoder_weights=None,
                                        in_channels=num_bands, classes=features)
        except (KeyError, ValueError) as exc:
            raise AdapterError(f"smp-temporal cannot build arch={self.options['arch']!r} encoder="
                               f"{self.options['encoder']!r} features={self.options['features']!r}: {exc}",
                               "see segmentation_models_pytorch's lists; features is an integer") from exc
        self.module = TemporalPoolingSegmenter(per_date, features, task.class_schema.num_classes)
        self._contract = InputContract(
            num_bands=num_bands,
            normalization=Normalization(mean=_per_band(self.options.get("mean"), _DEFAULT_MEAN, num_bands, "mean"),
                                        std=_per_band(self.options.get("std"), _DEFAULT_STD, num_bands, "std")),
            size_divisor=int(getattr(per_date.encoder, "output_stride", 32)),
        )

    def input_contract(self) -> InputContract:
        if self._contract is None:
            raise AdapterError("smp-temporal adapter used before setup()")
        return self._contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise AdapterError("smp-temporal predicts time series only", "use it on temporal_segmentation tasks")

    def predict_series(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)
