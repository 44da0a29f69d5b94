"""Backbone presets: pretrained encoders by name, with what their weights expect.

A preset names a timm architecture and where its released weights come from: a timm pretrained tag (general
vision encoders: DINOv2, DINOv3 including its satellite ViT-L, ConvNeXt, Swin, ResNet) or a torchgeo weights
enum (remote-sensing encoders: SSL4EO-S12, Satlas). The facts a run depends on are read from the library that
publishes the weights, not copied here: the input bands and the normalization from torchgeo's weights metadata
and transforms, or timm's pretrained config (whose mean and std, on 0..1 values, are scaled to 8-bit DN); the
weights file's name and its sha256 prefix from the download URL (torch.hub's `name-<sha256 prefix>.pth`
convention). What no library states is written here with its source: native ground sampling distance,
published parameter counts, LoRA target layers.

Adding a preset is one entry in `PRESETS`; the tests are parametrised over all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from rsdg_bench.base.errors import AdapterError

# 8-bit images: timm's pretrained configs give mean and std for values in 0..1
_DN_SCALE = 255.0


@dataclass(frozen=True)
class WeightsSource:
    """Where a preset's released weights are published, and what is known of the file before reading it."""

    file_name: str
    sha256_prefix: str | None  # torch.hub's convention: the first hex digits of the file's sha256, in its name
    url: str | None
    hf_hub_id: str | None


@dataclass(frozen=True)
class EncoderPreset:
    """One pretrained encoder. `library` says who publishes the weights (`timm`: `weights` is a pretrained tag;
    `torchgeo`: `weights` is a weights enum member such as `ResNet50_Weights.SENTINEL2_ALL_MOCO`)."""

    name: str
    architecture: str  # the timm model the weights fit
    library: Literal["timm", "torchgeo"]
    weights: str
    description: str
    gsd_m: float | None  # the native ground sampling distance of the pretraining imagery (None: photos)
    published_params_m: float | None  # the encoder's parameter count as its paper states it, in millions
    lora_targets: str  # a regular expression over module names: the layers LoRA adapts (peft's target_modules)
    units: str = "8-bit DN"  # what the normalization's numbers are in: the pretraining data's units
    rgb_bands: tuple[str, ...] = ("red", "green", "blue")  # a timm preset's bands (timm states none)

    @cached_property
    def _torchgeo_weights(self) -> Any:
        try:
            import torchgeo.models as torchgeo_models
        except ImportError as exc:
            raise AdapterError(f"preset {self.name} takes its weights' facts from torchgeo, which is not installed",
                               "pip install 'rsdg-bench[torchgeo]'") from exc
        enum_name, member = self.weights.split(".")
        return getattr(getattr(torchgeo_models, enum_name), member)

    @property
    def bands(self) -> tuple[str, ...]:
        """The encoder's input bands by name, in its order."""
        if self.library == "torchgeo":
            return tuple(self._torchgeo_weights.meta["bands"])
        return self.rgb_bands

    @property
    def in_chans(self) -> int:
        return len(self.bands)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per band in `units`: x ↦ (x − mean) / std is what the weights were trained on."""
        if self.library == "timm":
            import timm.models

            config = timm.models.get_pretrained_cfg(f"{self.architecture}.{self.weights}")
            if config is None:
                raise AdapterError(f"timm {timm.__version__} has no pretrained config {self.architecture}.{self.weights}",
                                   "install a timm version that lists it (`timm.list_pretrained()`)")
            return (tuple(m * _DN_SCALE for m in config.mean), tuple(s * _DN_SCALE for s in config.std))
        return _composed_normalization(self._torchgeo_weights.transforms, self.in_chans)

    @property
    def source(self) -> WeightsSource:
        if self.library == "timm":
            hub_id = f"timm/{self.architecture}.{self.weights}"
            return WeightsSource("model.safetensors", None, f"https://huggingface.co/{hub_id}", hub_id)
        url = str(self._torchgeo_weights.url)
        file_name = url.rsplit("/", 1)[-1]
        prefix = re.search(r"-([0-9a-f]{8,})\.\w+$", file_name)
        return WeightsSource(file_name, prefix.group(1) if prefix else None, url, None)

    def timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `timm.create_model` for the encoder alone (no classifier), at any input size."""
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "in_chans": self.in_chans}
        if self.architecture.startswith("vit_"):
            kwargs.update(dynamic_img_size=True, dynamic_img_pad=True)  # any crop: the last patch row padded
        if self.architecture.startswith("swin_"):
            kwargs["strict_img_size"] = False
        return kwargs

    def card(self) -> dict[str, Any]:
        """What `rsdg-bench adapter presets` shows and a record keeps of the preset."""
        mean, std = self.normalization
        source = self.source
        return {"preset": self.name, "architecture": self.architecture, "library": self.library,
                "weights": self.weights, "bands": list(self.bands), "units": self.units, "mean": list(mean),
                "std": list(std), "gsd_m": self.gsd_m, "weights_file": source.file_name,
                "weights_sha256_prefix": source.sha256_prefix, "url": source.url}


def _composed_normalization(transforms: Any, bands: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The one (mean, std) equal to torchgeo's chain of Normalize layers: ((x − m1)/s1 − m2)/s2 = (x − (m1 +
    m2·s1)) / (s1·s2). Resizes and crops in the chain are the caller's (the harness tiles instead)."""
    mean, std = [0.0] * bands, [1.0] * bands
    steps = [m for m in getattr(transforms, "children", lambda: [])() if type(m).__name__ == "Normalize"]
    if not steps:
        raise AdapterError("torchgeo's transforms for these weights carry no Normalize step",
                           "give the normalization with --model-arg mean=...,std=...")
    for step in steps:
        m = [float(v) for v in _as_list(step.mean, bands)]
        s = [float(v) for v in _as_list(step.std, bands)]
        mean = [mean[i] + m[i] * std[i] for i in range(bands)]
        std = [std[i] * s[i] for i in range(bands)]
    return tuple(mean), tuple(std)


def _as_list(value: Any, bands: int) -> list[float]:
    values = [float(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    if len(values) == 1:
        return values * bands
    if len(values) != bands:
        raise AdapterError(f"torchgeo's Normalize has {len(values)} values for {bands} bands")
    return values


S2_TOA = "TOA reflectance x 10000"  # Sentinel-2 L1C as SSL4EO-S12 and the prepared Sentinel-2 datasets store it
_VIT_LORA = r".*\.attn\.qkv"  # LoRA's usual place in a ViT: the attention's query-key-value projection
_RESNET_LORA = r"layer\d\.\d+\.conv2"  # the 3×3 convolutions of each bottleneck
_CONVNEXT_LORA = r"stages\.\d\.blocks\.\d+\.mlp\.fc[12]"
_SWIN_LORA = r".*\.attn\.qkv"

PRESETS: dict[str, EncoderPreset] = {preset.name: preset for preset in (
    # General vision encoders (timm tags). Parameter counts: DINOv2 (Oquab et al. 2023, Table 15), DINOv3 (Siméoni
    # et al. 2025, Table 14: ViT-S 21M, ViT-B 86M, ViT-L 300M), ConvNeXt-T 28M, Swin-T 28M, ResNet-50 25.6M with
    # its 2.0M classifier (the encoder here has none).
    EncoderPreset("dinov2-vits14", "vit_small_patch14_dinov2", "timm", "lvd142m", "DINOv2 ViT-S/14 (LVD-142M photos)",
                  None, 21.0, _VIT_LORA),
    EncoderPreset("dinov2-vitb14", "vit_base_patch14_dinov2", "timm", "lvd142m", "DINOv2 ViT-B/14 (LVD-142M photos)",
                  None, 86.0, _VIT_LORA),
    EncoderPreset("dinov3-vits16", "vit_small_patch16_dinov3", "timm", "lvd1689m", "DINOv3 ViT-S/16 (LVD-1689M photos)",
                  None, 21.0, _VIT_LORA),
    EncoderPreset("dinov3-vitb16", "vit_base_patch16_dinov3", "timm", "lvd1689m", "DINOv3 ViT-B/16 (LVD-1689M photos)",
                  None, 86.0, _VIT_LORA),
    EncoderPreset("dinov3-vitl16-sat", "vit_large_patch16_dinov3", "timm", "sat493m",
                  "DINOv3 ViT-L/16 distilled on SAT-493M (Maxar RGB at 0.6 m)", 0.6, 300.0, _VIT_LORA),
    EncoderPreset("convnext-tiny", "convnext_tiny", "timm", "fb_in1k", "ConvNeXt-T (ImageNet-1k)", None, 28.0,
                  _CONVNEXT_LORA),
    EncoderPreset("swin-tiny", "swin_tiny_patch4_window7_224", "timm", "ms_in1k", "Swin-T (ImageNet-1k)", None, 28.0,
                  _SWIN_LORA),
    EncoderPreset("resnet50-imagenet", "resnet50", "timm", "a1_in1k", "ResNet-50 (ImageNet-1k, timm A1 recipe)",
                  None, 23.5, _RESNET_LORA),
    # Remote-sensing encoders (torchgeo weights). SSL4EO-S12 (Wang et al. 2023): Sentinel-2 L1C, 13 bands, 10 m;
    # Sentinel-1 GRD VV/VH. Satlas (Bastani et al. 2023): Sentinel-2 RGB. ViT-S/16 22M, ResNet-50 23.5M.
    EncoderPreset("ssl4eo-s2-resnet50-moco", "resnet50", "torchgeo", "ResNet50_Weights.SENTINEL2_ALL_MOCO",
                  "SSL4EO-S12 ResNet-50, MoCo-v3, Sentinel-2 all 13 bands", 10.0, 23.5, _RESNET_LORA, units=S2_TOA),
    EncoderPreset("ssl4eo-s2-resnet50-dino", "resnet50", "torchgeo", "ResNet50_Weights.SENTINEL2_ALL_DINO",
                  "SSL4EO-S12 ResNet-50, DINO, Sentinel-2 all 13 bands", 10.0, 23.5, _RESNET_LORA, units=S2_TOA),
    EncoderPreset("ssl4eo-s2rgb-resnet50-moco", "resnet50", "torchgeo", "ResNet50_Weights.SENTINEL2_RGB_MOCO",
                  "SSL4EO-S12 ResNet-50, MoCo-v3, Sentinel-2 RGB", 10.0, 23.5, _RESNET_LORA, units=S2_TOA),
    EncoderPreset("ssl4eo-s2-vits16-dino", "vit_small_patch16_224", "torchgeo", "ViTSmall16_Weights.SENTINEL2_ALL_DINO",
                  "SSL4EO-S12 ViT-S/16, DINO, Sentinel-2 all 13 bands", 10.0, 22.0, _VIT_LORA, units=S2_TOA),
    EncoderPreset("ssl4eo-s2-vits16-mae", "vit_small_patch16_224", "torchgeo", "ViTSmall16_Weights.SENTINEL2_ALL_MAE",
                  "SSL4EO-S12 ViT-S/16, MAE, Sentinel-2 all 13 bands", 10.0, 22.0, _VIT_LORA, units=S2_TOA),
    EncoderPreset("ssl4eo-s1-vits16-mae", "vit_small_patch16_224", "torchgeo", "ViTSmall16_Weights.SENTINEL1_GRD_MAE",
                  "SSL4EO-S12 ViT-S/16, MAE, Sentinel-1 GRD VV and VH", 10.0, 22.0, _VIT_LORA, units="dB"),
    EncoderPreset("satlas-s2rgb-resnet50", "resnet50", "torchgeo", "ResNet50_Weights.SENTINEL2_SI_RGB_SATLAS",
                  "Satlas ResNet-50, single-image Sentinel-2 RGB", 10.0, 23.5, _RESNET_LORA),
)}


def get_preset(name: str) -> EncoderPreset:
    """The preset of that name; an unknown name is an error listing them."""
    try:
        return PRESETS[name]
    except KeyError:
        raise AdapterError(f"no encoder preset {name!r}", f"use one of: {', '.join(sorted(PRESETS))} "
                                                          "(`rsdg-bench adapter presets` lists them)") from None
