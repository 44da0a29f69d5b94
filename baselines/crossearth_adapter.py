"""CrossEarth (Gong et al., 2025): DINOv2-L (patch 16) with LoRA Reins and a Mask2Former head, loading the
authors' released per-setting checkpoints without mmseg, mmdet or mmcv.

The network is `baselines/reins_vit.py` (backbone) + `baselines/mask2former_head.py` (head), with the keys
of CrossEarth's mmseg `EncoderDecoder` (`backbone.*`, `decode_head.*`). The image size (512 or 1024) is the
task's sliding-window crop, as in CrossEarth's two configs; the class count is the task's and must equal
the checkpoint's (`decode_head.cls_embed` has K + 1 rows).

Checkpoints come in two forms, both accepted:
- full: every key (646), e.g. after the authors' `tools/generate_full_weights.py`, or saved by an mmengine
  that bypasses the backbone's `state_dict` override;
- partial: only `backbone.reins.*` and `decode_head.*` (303 keys). CrossEarth's backbone drops its frozen
  DINOv2 weights when saved, so they come from a second file, the converted DINOv2-L the authors
  distribute: `dinov2_converted.pth` for the 512 models, `dinov2_converted_1024x1024.pth` for the 1024
  ones (no key prefix, patch embedding already resized to 16 and position embedding to 32² or 64²).
  Give it with `--backbone-checkpoint FILE` (or a folder holding those names); without, it is looked up
  next to the checkpoint.

Released files (Hugging Face `Cusyoung/CrossEarth`) are found in `--checkpoints DIR` under their own names:
see `RELEASED_FILES`. Input: three bands as stored (an IRRG file goes in as IR-R-G), 0-255 values with
ImageNet mean/std. Output: Mask2Former's scores, Σ_q softmax(class)[:K] · sigmoid(mask), which the harness
averages over overlapping windows and resizes back like mmseg does with these scores.

Training (`rsdg-bench train`): CrossEarth's released code trains as its baseline Rein does: DINOv2 frozen
(`requires_grad` off, as Rein's backbone `train()` sets it), the Reins and the Mask2Former head trained with
Mask2Former's set criterion (`mask2former_loss.py`, with the weights of Rein's config) on every prediction
layer. That is the default. The paper's Earth-style injection and masked-image-modelling constraint, which the
released code holds only as compiled bytecode (Cuzyoung/CrossEarth@6e7de3b) and whose Earth-style statistics
were never released, are optional terms built from the paper's description (`crossearth_earth_style.py`, with
its UNVERIFIED values): `--model-arg mim=paper` (or l1 / mse) adds the MIM flow (an ASPP decoder and a visual
prompt, `mim.*`, trained alongside and left out when the checkpoint is evaluated), `earth_style=FILE` the style
injection with the sample gate (`style_p`, default 0.1), `style_mask` / `mim_mask` (ratio/block) override Table
11's masks. They stay off by default: the board's CrossEarth rows are the released checkpoints, whose code and
style statistics cannot be checked, and the paper's own model adds parts (GSE, Injector) the released one lacks,
so turning them on gives neither the released model's training nor the paper's.
`parameter_groups` gives the released optimizer's per-parameter weight decay.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.models.adapters import IMAGENET_MEAN, IMAGENET_STD, Adapter, InputContract, Normalization
from rsdg_bench.models.checkpoints import load_checked, read_state_dict
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

from .crossearth_earth_style import CrossEarthObjective, EarthStyle, MaskSpec, MimDecoder, block_mask, paper_masks
from .mask2former_head import Mask2FormerConfig, ReinMask2FormerHead
from .mask2former_loss import Mask2FormerLossConfig, mask2former_loss
from .reins_vit import ReinsDinoBackbone, ReinsViTConfig

IMAGE_SIZES = (512, 1024)
# task checkpoint_key → the authors' released file (README of Cuzyoung/CrossEarth); LoveDA is "coming soon".
RELEASED_FILES = {
    "potsdam_irrg_source": "Potsdam(i)-source.pth",
    "potsdam_rgb_source": "Potsdam(r)-source.pth",
    "vaihingen_source": "Vaihingen-source.pth",
    "whu_aerial_source": "WHU-Building-A2S.pth",
    "whu_satellite2_source": "WHU-Building-S2A.pth",
    "deepglobe_road_source": "D2M-Rein.pth",
    "potsdam_rgb_res5_source": "Potsdam(r)2RescueNet.pth",
    "potsdam_irrg_res5_source": "Potsdam(i)2RescueNet.pth",
    "casid_sub_source": "casid-sub-source.pth",
    "casid_tem_source": "casid-tem-source.pth",
    "casid_tms_source": "casid-tms-source.pth",
    "casid_trf_source": "casid-trf-source.pth",
}
BACKBONE_FILES = {512: "dinov2_converted.pth", 1024: "dinov2_converted_1024x1024.pth"}
# The released optimizer (configs/CrossEarth_dinov2/CrossEarth_dinov2_mask2former_{512x512_bs1x4,1024x1024_bs4x2}.py,
# `paramwise_cfg`, applied by Rein's PEFTOptimWrapperConstructor): no weight decay for a parameter whose name
# holds one of these (decay_mult 0.0; lr_mult 1.0 throughout), nor for a norm layer's (norm_decay_mult 0.0).
NO_DECAY_KEYS = ("norm", "query_embed", "level_embed", "learnable_tokens", "reins.scale")
NORM_LAYERS = (nn.GroupNorm, nn.LayerNorm)  # the norm layers the model has


def crossearth_configs(num_classes: int, img_size: int) -> tuple[ReinsViTConfig, Mask2FormerConfig]:
    """The released model's sizes: DINOv2-L/16 with LoRA Reins (100 tokens, rank 16), 256-channel head."""
    return ReinsViTConfig(img_size=img_size), Mask2FormerConfig(num_classes=num_classes)


class CrossEarthSegmentor(nn.Module):
    """`backbone` + `decode_head`; returns B × K × H × W scores at the input size. With `mim`, also the MIM flow's
    decoder and visual prompt (`mim.*`), used in training only."""

    def __init__(self, backbone: ReinsViTConfig, head: Mask2FormerConfig, mim: bool = False) -> None:
        super().__init__()
        self.backbone = ReinsDinoBackbone(backbone)
        self.decode_head = ReinMask2FormerHead(head)
        self.mim = MimDecoder(backbone.embed_dim, len(backbone.out_indices), backbone.patch_size,
                              backbone.img_size) if mim else None
        for name, parameter in self.named_parameters():  # DINOv2 stays as pretrained (Rein's backbone train())
            parameter.requires_grad_(not is_backbone_key(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, queries = self.backbone(x)
        return self.decode_head.predict(features, queries, (x.shape[-2], x.shape[-1]))

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor,
                      config: Mask2FormerLossConfig = Mask2FormerLossConfig(),
                      objective: CrossEarthObjective = CrossEarthObjective()) -> torch.Tensor:
        """Mask2Former's set loss, summed over every prediction layer, of a B × 3 × H × W batch and its
        B × H × W labels (ignore 255); with the paper's terms that `objective` turns on, Algorithm 1's total:
        the segmentation loss of X or (gate u = 1) X_s, plus L_mim of the masked image (and of X_s), plus
        L_metric (u = 1). The gate is drawn on the CPU (no device sync), the masks and styles on x's device."""
        styled = None
        if objective.style is not None and torch.rand(()).item() < objective.style_p:
            with torch.no_grad():
                styled = objective.styled(x)
        features, queries = self.backbone(x if styled is None else styled)
        all_cls, all_masks = self.decode_head(features, queries)
        loss = mask2former_loss(all_cls, all_masks, labels, config)
        if objective.mim_loss is None:
            return loss
        if self.mim is None:
            raise AdapterError("the MIM objective needs the segmentor built with its MIM decoder",
                               "build CrossEarthSegmentor(..., mim=True)")
        keep = block_mask(x.shape[0], x.shape[-2], x.shape[-1], objective.mim_mask, x.device)
        masked_reconstruction = self.mim(self.backbone.stage_maps(self.mim.masked(x, keep)))
        loss = loss + objective.distance(masked_reconstruction, x)
        if styled is not None:
            styled_reconstruction = self.mim(self.backbone.stage_maps(styled))
            loss = loss + objective.distance(styled_reconstruction, styled)
            loss = loss + torch.nn.functional.l1_loss(styled_reconstruction, masked_reconstruction)
        return loss


def is_backbone_key(key: str) -> bool:
    """A frozen DINOv2 key of the segmentor (the Reins are trained and travel with the head)."""
    return key.startswith("backbone.") and not key.startswith("backbone.reins.")


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of the trained parameters as CrossEarth's released optimizer makes them: weight
    decay `weight_decay`, except 0 for the names holding a `NO_DECAY_KEYS` entry and for norm layers."""
    groups: dict[bool, list[nn.Parameter]] = {True: [], False: []}
    for module_name, child in module.named_modules():
        for name, parameter in child.named_parameters(prefix=module_name, recurse=False):
            if parameter.requires_grad:
                exempt = isinstance(child, NORM_LAYERS) or any(key in name for key in NO_DECAY_KEYS)
                groups[not exempt].append(parameter)
    return [{"params": groups[True], "weight_decay": weight_decay}, {"params": groups[False], "weight_decay": 0.0}]


def segmentor_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The checkpoint's `backbone.*` / `decode_head.*` tensors (and `mim.*`, the training-only MIM flow of a
    model trained with it); any other key means a foreign file."""
    foreign = [k for k in state if not k.startswith(("backbone.", "decode_head.", "mim."))]
    if foreign:
        raise AdapterError(f"{source} is not a CrossEarth segmentor checkpoint (keys such as "
                           f"{', '.join(foreign[:4])} are none of backbone.*, decode_head.* and mim.*)",
                           "pass a released CrossEarth .pth (e.g. Potsdam(i)-source.pth)")
    return state


def backbone_state(path: Path, img_size: int) -> dict[str, torch.Tensor]:
    """The converted DINOv2 weights as `backbone.*` keys, checked for patch size and position grid."""
    state, _ = read_state_dict(path)
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    patch = state.get("patch_embed.proj.weight")
    if patch is not None and tuple(patch.shape[-2:]) != (16, 16):
        raise AdapterError(f"{path} has a {patch.shape[-1]}×{patch.shape[-1]} patch embedding; CrossEarth uses "
                           "DINOv2 converted to patch 16",
                           f"use the authors' converted file ({BACKBONE_FILES[img_size]}), made by their "
                           "convert_models/convert_dinov2.py")
    pos = state.get("pos_embed")
    expected = 1 + (img_size // 16) ** 2
    if pos is not None and pos.shape[1] != expected:
        raise AdapterError(f"{path} has a position embedding for {pos.shape[1] - 1} patches; the {img_size}-px model "
                           f"needs {expected - 1}", f"use {BACKBONE_FILES[img_size]} for {img_size}-px models")
    return {f"backbone.{k}": v for k, v in state.items()}


@register_adapter("crossearth")
class CrossEarthAdapter(Adapter):
    """CrossEarth DINOv2-L + Reins + Mask2Former. Option: `img_size` (512 | 1024; default: the task's crop
    when it is one of these, else 512)."""

    trainable = True
    known_options = frozenset({"img_size", "mim", "earth_style", "style_p", "style_mask", "mim_mask"})
    options_help = ("use: img_size=512|1024; training only: mim=off|paper|l1|mse, earth_style=FILE.json, "
                    "style_p=0.1, style_mask=RATIO/BLOCK, mim_mask=RATIO/BLOCK")

    def __init__(self, **options: str) -> None:
        super().__init__(**options)
        self.img_size = 0
        self.num_classes = 0
        self.backbone_checkpoint: Path | None = None
        self.backbone_sha256: str | None = None  # of the separate backbone file, when one was loaded
        self.objective = CrossEarthObjective()
        self.earth_style_sha256: str | None = None

    def setup(self, task: Task, band_names: list[str]) -> None:
        if len(band_names) != 3 and not (task.inputs.replicate_single_band and len(band_names) == 1):
            raise AdapterError(f"CrossEarth takes 3 bands; {task.source.slug} has {len(band_names)} ({band_names})",
                               "use a task with 3-band (RGB or IRRG) imagery")
        self.img_size = self._image_size(task)
        self.num_classes = task.class_schema.num_classes
        self.objective = self._objective(task)
        self.module = CrossEarthSegmentor(*crossearth_configs(self.num_classes, self.img_size),
                                          mim=self.objective.mim_loss is not None)

    def _objective(self, task: Task) -> CrossEarthObjective:
        """The paper's training terms the options turn on (`crossearth_earth_style.py`): `mim=paper` takes ℓ1 on
        CASID and squared error elsewhere (§5.1); the masks are Table 11's for the task's setting unless given."""
        mim = self.options.get("mim", "off")
        losses: dict[str, Literal["l1", "mse"] | None] = {
            "off": None, "l1": "l1", "mse": "mse", "paper": "l1" if task.classes == "casid5" else "mse"}
        if mim not in losses:
            raise AdapterError(f"mim={mim!r} is not a MIM loss", "use mim=off, paper, l1 or mse")
        mim_loss = losses[mim]
        style = None
        self.earth_style_sha256 = None
        if "earth_style" in self.options:
            path = Path(self.options["earth_style"])
            style = EarthStyle.from_file(path).normalized(IMAGENET_MEAN, IMAGENET_STD)
            if style.mean.numel() != 6:
                raise AdapterError(f"{path} holds styles of {style.mean.numel() // 2} bands; CrossEarth takes 3",
                                   "give the means and deviations of 3 bands")
            self.earth_style_sha256 = sha256_file(path)
        try:
            style_p = float(self.options.get("style_p", "0.1"))
        except ValueError:
            style_p = -1.0
        if not 0 <= style_p <= 1:
            raise AdapterError(f"style_p={self.options['style_p']!r} is not a probability", "e.g. style_p=0.1")
        style_mask, mim_mask = paper_masks(task.checkpoint_key)
        return CrossEarthObjective(
            mim_loss=mim_loss, style=style, style_p=style_p,
            style_mask=MaskSpec.parse(self.options["style_mask"]) if "style_mask" in self.options else style_mask,
            mim_mask=MaskSpec.parse(self.options["mim_mask"]) if "mim_mask" in self.options else mim_mask)

    def _image_size(self, task: Task) -> int:
        """The option, else the task's crop when it is one of the released sizes, else 512 (other input
        sizes then run with the position embedding resized, as DINOv2 does)."""
        if "img_size" not in self.options:
            return task.inference.crop if task.inference.crop in IMAGE_SIZES else IMAGE_SIZES[0]
        size = int(self.options["img_size"]) if self.options["img_size"].isdigit() else 0
        if size not in IMAGE_SIZES:
            raise AdapterError(f"CrossEarth models are trained at {IMAGE_SIZES} px, not {self.options['img_size']}",
                               "pass --model-arg img_size=512 or 1024 (default: the task's crop)")
        return size

    def input_contract(self) -> InputContract:
        return InputContract(num_bands=3, normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD), size_divisor=16)

    def checkpoint_names(self, task: Task) -> list[str]:
        released = RELEASED_FILES.get(task.checkpoint_key)
        return ([released] if released else []) + super().checkpoint_names(task)

    def use_backbone_checkpoint(self, path: Path) -> None:
        self.backbone_checkpoint = path

    def _backbone_file(self, checkpoint: Path) -> Path:
        name = BACKBONE_FILES[self.img_size]
        given = self.backbone_checkpoint
        candidates = [given / name] if given is not None and given.is_dir() else [given] if given else \
            [checkpoint.parent / name]
        for path in candidates:
            if path.is_file():
                return path
        raise AdapterError(
            f"{checkpoint} holds only the Rein and head weights; the frozen DINOv2-L backbone of a {self.img_size}-px "
            f"CrossEarth model comes from a separate file, {name}, which was not found at {candidates[0]}",
            f"download {name} from the authors' release and pass --backbone-checkpoint FILE (or put it next to "
            "the checkpoint)")

    def load(self, checkpoint: Path) -> None:
        module = self._require_module()
        state = segmentor_state(read_state_dict(checkpoint)[0], str(checkpoint))
        classes = state.get("decode_head.cls_embed.weight")
        if classes is not None and classes.shape[0] - 1 != self.num_classes:
            raise AdapterError(f"{checkpoint} predicts {classes.shape[0] - 1} classes; the task has {self.num_classes}",
                               "use the released file for this task (see docs/models.md)")
        self.backbone_sha256 = None
        if not any(is_backbone_key(k) for k in state):
            backbone_file = self._backbone_file(checkpoint)
            state = {**backbone_state(backbone_file, self.img_size), **state}
            self.backbone_sha256 = sha256_file(backbone_file)
        pos = state.get("backbone.pos_embed")
        if pos is not None and pos.shape[1] != 1 + (self.img_size // 16) ** 2:
            grid = round((pos.shape[1] - 1) ** 0.5) * 16
            raise AdapterError(f"{checkpoint} is a {grid}-px CrossEarth model; this task runs it at {self.img_size} px",
                               f"pass --model-arg img_size={grid} if you mean to run it on this task anyway")
        if self.objective.mim_loss is None:  # the MIM flow's parts serve training only
            state = {k: v for k, v in state.items() if not k.startswith("mim.")}
        load_checked(module, state, str(checkpoint), "CrossEarth (DINOv2-L + Reins + Mask2Former)",
                     may_be_missing=f"{re.escape('backbone.mask_token')}$|mim\\.")

    def identity(self) -> dict:
        identity = super().identity()
        if self.backbone_sha256:
            identity["backbone_sha256"] = self.backbone_sha256
        if self.earth_style_sha256:
            identity["earth_style_sha256"] = self.earth_style_sha256
        return identity

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)

    def training_loss(self, inputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mask2Former's set loss with CrossEarth's weights (not the protocol's per-pixel loss), plus the paper's
        terms the options turn on."""
        module = self._require_module()
        assert isinstance(module, CrossEarthSegmentor)
        return module.training_loss(inputs[0], batch["label"], objective=self.objective)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups under CrossEarth's per-parameter weight decay (`decay_groups`)."""
        return decay_groups(self._require_module(), weight_decay)
