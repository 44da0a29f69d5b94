"""DAFormer (Hoyer et al., CVPR 2022): a MiT-B5 encoder with the DAFormer head, loading mmseg checkpoints.

The encoder is segmentation-models-pytorch's `mit_b5`, which has DAFormer's MiT-B5 keys and outputs;
the head is `baselines/daformer_head.py`. Checkpoints: an mmcv-1 `.pth` (`meta` + `state_dict`) of a plain
segmentor (`backbone.*`, `decode_head.*`) or of DAFormer's UDA wrapper, which holds the student
`model.*`, the teacher `ema_model.*` and the frozen `imnet_model.*`. DAFormer's own `tools/test.py`
evaluates the student, so `keep=model` is the default; `keep=ema_model` evaluates the teacher. The
other copies are set aside; any other key is an error.

Input: RGB 0-255 with ImageNet mean/std (as DAFormer's configs), three bands passed as stored, so the
spectral-gap protocols feed an IRRG composite to an RGB model as the papers do. The task decides the
inference (DAFormer's own test is whole-image after a keep-ratio resize, with the output resized back:
`inference: {mode: whole, resize_long_side: S}`).

Released DAFormer checkpoints are 19-class Cityscapes street-scene models, not remote sensing ones, and
MiT's code and weights carry NVIDIA's non-commercial source-code licence. This adapter mainly serves
checkpoints users train for these benchmarks (`rsdg-bench train --model daformer`).
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import IMAGENET_MEAN, IMAGENET_STD, Adapter, InputContract, Normalization
from rsdg_bench.models.checkpoints import load_checked, read_state_dict, remap
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

from .daformer_head import DAFormerHead

MIT_B5_CHANNELS = (64, 128, 320, 512)
UDA_PREFIXES = ("model", "ema_model", "imnet_model")


class DAFormerSegmentor(nn.Module):
    """`backbone` (MiT-B5) + `decode_head`; logits resized bilinearly to the input size."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = smp.encoders.get_encoder("mit_b5", in_channels=3, weights=None)
        self.decode_head = DAFormerHead(MIT_B5_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[2:]  # smp returns [input, (empty), stride 4, 8, 16, 32]
        logits = self.decode_head(list(features))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def daformer_state(state: dict[str, torch.Tensor], keep: str, source: str) -> dict[str, torch.Tensor]:
    """The segmentor's keys from a plain or UDA checkpoint; unknown top-level keys are an error."""
    if keep not in UDA_PREFIXES[:2]:
        raise AdapterError(f"daformer option keep={keep!r}", "use keep=model (the student, DAFormer's default) or "
                                                             "keep=ema_model (the teacher)")
    uda = any(k.startswith(f"{p}.") for k in state for p in UDA_PREFIXES)
    prefix = rf"^{keep}\." if uda else "^"
    kept, dropped = remap(state, [(prefix + r"(backbone|decode_head)\.", r"\1.")],
                          drop=[rf"^{p}\." for p in UDA_PREFIXES if p != keep] if uda else [])
    set_aside = [p for p in UDA_PREFIXES if p != keep] if uda else []
    unexplained = [k for k in dropped if not any(k.startswith(f"{p}.") for p in set_aside)]
    if unexplained or not kept:
        raise AdapterError(f"{source} is not a DAFormer segmentor checkpoint (keys such as "
                           f"{', '.join((unexplained or list(state))[:4])} are neither backbone.* nor decode_head.*)",
                           "pass an mmseg DAFormer checkpoint or one written by `rsdg-bench train --model daformer`")
    return kept


@register_adapter("daformer")
class DAFormerAdapter(Adapter):
    """MiT-B5 + DAFormer head; options: `keep` (model | ema_model, for UDA checkpoints)."""

    trainable = True
    known_options = frozenset({"keep"})
    options_help = "use: keep=model|ema_model"

    def __init__(self, **options: str) -> None:
        options.setdefault("keep", "model")
        super().__init__(**options)
        self._num_classes = 0

    def setup(self, task: Task, band_names: list[str]) -> None:
        if len(band_names) != 3 and not (task.inputs.replicate_single_band and len(band_names) == 1):
            raise AdapterError(f"DAFormer takes 3 bands; {task.source.slug} has {len(band_names)} ({band_names})",
                               "use a task with 3-band (RGB or IRRG) imagery")
        self._num_classes = task.class_schema.num_classes
        self.module = DAFormerSegmentor(self._num_classes)

    def input_contract(self) -> InputContract:
        return InputContract(num_bands=3, normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD), size_divisor=32)

    def load(self, checkpoint: Path) -> None:
        state, _ = read_state_dict(checkpoint)
        state = daformer_state(state, self.options["keep"], str(checkpoint))
        classes = state.get("decode_head.conv_seg.weight")
        if classes is not None and classes.shape[0] != self._num_classes:
            raise AdapterError(f"{checkpoint} predicts {classes.shape[0]} classes; the task has {self._num_classes}",
                               "DAFormer's released checkpoints are 19-class Cityscapes models; use one trained for "
                               "this task's classes")
        load_checked(self._require_module(), state, str(checkpoint), "DAFormer (MiT-B5 + DAFormer head)")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)
