"""MTP (Wang et al., "MTP: Advancing Remote Sensing Foundation Model via Multi-Task Pretraining", 2024):
RVSA ViT + UPerHead, loading the authors' fine-tuned mmseg segmentation checkpoints.

The authors release UPerNet models fine-tuned on LoveDA (7 classes, 512 px) and SpaceNet v1 (2 classes,
384 px) for ViT-B and ViT-L with RVSA (Baidu / OneDrive links in ViTAE-Transformer/MTP's README; no fixed
file names). The network is `baselines/rvsa_vit.py` + `baselines/uper_head.py` with the keys of MTP's
mmseg `EncoderDecoder` (`backbone.*`, `decode_head.*`); the class count must equal the checkpoint's
(`decode_head.conv_seg`).

Options (`--model-arg key=value`): `variant` = `large` (default) | `base`; `img_size` = 512 (default,
LoveDA) | 384 (SpaceNet v1); `stride` of the model's own sliding window (default 384 for 512, 256 for
384, as MTP's configs).

The ViT takes exactly `img_size`² inputs (its position embedding and global attention are not resizable),
so `predict` slides `img_size` windows with MTP's stride over whatever the task's inference hands it,
averaging overlaps, and zero-pads (in normalized units, i.e. the mean colour) sides shorter than a window
and crops back; MTP's own code would stop on such an image. When the task slides windows of the
model's size, each one is a single forward pass. Input: RGB as stored, 0-255, ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.evaluator.inference import predict_logits
from rsdg_bench.models.adapters import IMAGENET_MEAN, IMAGENET_STD, Adapter, InputContract, Normalization
from rsdg_bench.models.checkpoints import load_checked, read_state_dict
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import InferenceSpec, Task

from .rvsa_vit import RVSAConfig, RVSAViT
from .uper_head import UPerHead

DEFAULT_STRIDES = {512: 384, 384: 256}  # MTP's LoveDA and SpaceNet v1 test configs


def rvsa_config(variant: str, img_size: int) -> RVSAConfig:
    if variant == "large":
        return RVSAConfig(img_size=img_size)
    if variant == "base":
        return RVSAConfig.base(img_size)
    raise AdapterError(f"mtp option variant={variant!r}", "use variant=large (ViT-L + RVSA) or variant=base (ViT-B)")


class MTPSegmentor(nn.Module):
    """`backbone` (RVSA ViT) + `decode_head` (UPerHead, 512 channels); logits at the input size."""

    def __init__(self, backbone: RVSAConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = RVSAViT(backbone)
        self.decode_head = UPerHead((backbone.embed_dim,) * 4, num_classes, channels=512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


@register_adapter("mtp")
class MTPAdapter(Adapter):
    """MTP's RVSA ViT + UPerHead. Options: `variant` (large | base), `img_size` (512 | 384), `stride`."""

    known_options = frozenset({"variant", "img_size", "stride"})
    options_help = "use: variant=large|base img_size=512|384 stride=N"
    check_options = {"variant": "base", "img_size": "128"}  # ViT-L at 512 px takes minutes per check on a CPU

    def __init__(self, **options: str) -> None:
        options.setdefault("variant", "large")
        options.setdefault("img_size", "512")
        super().__init__(**options)
        self.img_size = self._positive("img_size")
        if self.img_size % 16:
            raise AdapterError(f"mtp img_size={self.img_size} is not a multiple of the patch size 16",
                               "use the size the checkpoint was fine-tuned at: 512 (LoveDA) or 384 (SpaceNet v1)")
        self.stride = self._positive("stride") if "stride" in options else DEFAULT_STRIDES.get(self.img_size,
                                                                                                self.img_size)
        if self.stride > self.img_size:
            raise AdapterError(f"mtp stride {self.stride} is larger than its window {self.img_size}")
        self.config = rvsa_config(self.options["variant"], self.img_size)
        self.num_classes = 0

    def _positive(self, option: str) -> int:
        value = self.options[option]
        if not value.isdigit() or int(value) == 0:
            raise AdapterError(f"mtp option {option}={value!r} is not a positive integer")
        return int(value)

    def setup(self, task: Task, band_names: list[str]) -> None:
        if len(band_names) != 3 and not (task.inputs.replicate_single_band and len(band_names) == 1):
            raise AdapterError(f"MTP takes 3 bands (RGB); {task.source.slug} has {len(band_names)} ({band_names})",
                               "use a task with 3-band imagery")
        self.num_classes = task.class_schema.num_classes
        self.module = MTPSegmentor(self.config, self.num_classes)

    def input_contract(self) -> InputContract:
        return InputContract(num_bands=3, normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD))

    def load(self, checkpoint: Path) -> None:
        state, _ = read_state_dict(checkpoint)
        foreign = [k for k in state if not k.startswith(("backbone.", "decode_head."))]
        if foreign:
            raise AdapterError(f"{checkpoint} is not an MTP segmentation checkpoint (keys such as "
                               f"{', '.join(foreign[:4])} are neither backbone.* nor decode_head.*)",
                               "pass one of MTP's fine-tuned UPerNet .pth files (LoveDA or SpaceNet v1)")
        classes = state.get("decode_head.conv_seg.weight")
        if classes is not None and classes.shape[0] != self.num_classes:
            raise AdapterError(f"{checkpoint} predicts {classes.shape[0]} classes; the task has {self.num_classes}",
                               "MTP's releases are LoveDA (7 classes) and SpaceNet v1 (2 classes) models")
        pos = state.get("backbone.pos_embed")
        if pos is not None and pos.shape[1] != (self.img_size // 16) ** 2:
            side = round(pos.shape[1] ** 0.5) * 16
            raise AdapterError(f"{checkpoint} is a {side}-px MTP model; the adapter is set to {self.img_size} px",
                               f"pass --model-arg img_size={side}")
        load_checked(self._require_module(), state, str(checkpoint), f"MTP (ViT-{self.options['variant']} + RVSA, UPerHead)")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        module = self._require_module()
        size = self.img_size
        height, width = x.shape[-2:]
        if (height, width) == (size, size):
            return module(x)
        padded = F.pad(x, (0, max(size - width, 0), 0, max(size - height, 0)))
        spec = InferenceSpec(mode="slide", crop=size, stride=self.stride)
        return predict_logits(module, padded, spec, self.num_classes)[:, :, :height, :width]
