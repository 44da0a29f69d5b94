"""CromSS (Liu et al., 2025): ResNet-50 encoders pretrained on SSL4EO-S12 with noisy land-cover labels.

Released weights are Lightning pretraining checkpoints `weights-cromss-{13B,9B}-{midFusion,lateFusion}-epoch=199.ckpt`
(`net.*` keys): mid fusion holds an S1 encoder `net.encoder1`, an S2 encoder `net.encoder`, one shared
`net.decoder` and `net.segmentation_head` (a 9-class Dynamic World U-Net); late fusion holds two U-Nets,
`net.model1` (S1) and `net.model2` (S2).

Options (`--model-arg key=value`):
- `arch`: `unet` | `pspnet` | `deeplabv3plus` | `fpn` (smp, ResNet-50 encoder; the paper uses PSPNet for
  DFC2020, DeepLabV3+ for SSL4EO-S12@DW, FPN for @OSM), default: the task's `training.architecture` when it
  is one of these, else `unet`;
- `modality`: `s2` or `s1`; `bands`: 13 or 9 (S2 only; 9 = B2-B8, B11, B12); default: what the task feeds
  (VV, VH → s1; CromSS's nine S2 bands → 9), else s2 with 13 bands;
- `fusion`: `mid` (default) or `late`: the layout of the pretraining checkpoint;
- `pretrained`: a CromSS `.ckpt` whose encoder initialises this model (the transfer setting: the decoder
  starts from scratch and is trained with `rsdg-bench train`);
- `freeze_encoder`: `true` to train only the decoder (the paper reports frozen and fine-tuned encoders);
- `mode`: `transfer` (default) or `zeroshot`: `--checkpoint` is then a pretraining `.ckpt`, loaded whole
  as the 9-class Dynamic World U-Net of the chosen modality.

Input: CromSS's rescaling of each band, clip to mean ± 2σ (its published SSL4EO-S12 statistics), stretch to
0..255, truncate to uint8, divide by 255 (`Normalization` with clip and 255 levels). Bands are picked by
name (`B1` … `B12` with `B8A`; `VV`, `VH`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import segmentation_models_pytorch as smp
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization
from rsdg_bench.models.checkpoints import load_checked, read_state_dict, remap
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
# CromSS's SSL4EO-S12 L1C band statistics (dataset/dw_osm_dataset: S2C_MEAN / S2C_STD, S1_MEAN / S1_STD).
S2_MEAN = (1605.57504906, 1390.78157673, 1314.8729939, 1363.52445545, 1549.44374991, 2091.74883118, 2371.7172463,
           2299.90463006, 2560.29504086, 830.06605044, 22.10351321, 2177.07172323, 1524.06546312)
S2_STD = (786.78685367, 850.34818441, 875.06484736, 1138.84957046, 1122.17775652, 1161.59187054, 1274.39184232,
          1248.42891965, 1345.52684884, 577.31607053, 51.15431158, 1336.09932639, 1136.53823676)
S1_BANDS = ("VV", "VH")
S1_MEAN = (-12.54847273, -20.19237134)
S1_STD = (5.25697717, 5.91150917)
NINE_BANDS = (1, 2, 3, 4, 5, 6, 7, 11, 12)  # CromSS's BANDS[9]: indices into the 13
ARCHS = {"unet": "Unet", "pspnet": "PSPNet", "deeplabv3plus": "DeepLabV3Plus", "fpn": "FPN"}
DW_CLASSES = 9
# Where each modality's network sits in a pretraining checkpoint: (encoder prefix, decoder/head prefix).
LAYOUT = {("mid", "s2"): ("net.encoder.", "net."), ("mid", "s1"): ("net.encoder1.", "net."),
          ("late", "s2"): ("net.model2.encoder.", "net.model2."), ("late", "s1"): ("net.model1.encoder.", "net.model1.")}


def band_statistics(modality: str, bands: int) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    if modality == "s1":
        return S1_BANDS, S1_MEAN, S1_STD
    picks = range(13) if bands == 13 else NINE_BANDS
    return tuple(S2_BANDS[i] for i in picks), tuple(S2_MEAN[i] for i in picks), tuple(S2_STD[i] for i in picks)


def cromss_normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> Normalization:
    """clip to μ ± 2σ → [0, 1] in 255 truncated steps, as CromSS's `img_clip` then `/255`."""
    return Normalization(mean=tuple(m - 2 * s for m, s in zip(mean, std, strict=True)),
                         std=tuple(4 * s for s in std), clip=(0.0, 1.0), levels=255)


def pretrained_state(state: dict[str, torch.Tensor], fusion: str, modality: str, whole: bool, source: str
                     ) -> dict[str, torch.Tensor]:
    """smp-named keys of one modality's network from a CromSS pretraining state dict: the encoder, or with
    `whole` the full U-Net. The other modality's weights are set aside; keys outside `net.` are an error."""
    foreign = [k for k in state if not k.startswith("net.")]
    if foreign:
        raise AdapterError(f"{source} is not a CromSS pretraining checkpoint (keys such as {', '.join(foreign[:3])} "
                           "are outside net.*)", "pass a weights-cromss-*.ckpt file, or a checkpoint from `rsdg-bench train`")
    encoder, rest = LAYOUT[(fusion, modality)]
    rules = [(f"^{re.escape(encoder)}", "encoder.")]
    if whole:
        rules.append((f"^{re.escape(rest)}(decoder|segmentation_head)\\.", r"\1."))
    kept, _ = remap(state, rules)
    if not any(k.startswith("encoder.") for k in kept):
        raise AdapterError(f"{source} has no {encoder}* keys: it is not a {fusion}-fusion checkpoint with a "
                           f"{modality.upper()} encoder", "set fusion=mid|late and modality=s2|s1 to match the file")
    return kept


@register_adapter("cromss")
class CromSSAdapter(Adapter):
    trainable = True
    known_options = frozenset({"arch", "modality", "bands", "fusion", "pretrained", "freeze_encoder", "mode"})

    def __init__(self, **options: str) -> None:
        self._task_decides = {"arch", "modality", "bands"} - set(options)
        for key, default in (("arch", "unet"), ("modality", "s2"), ("bands", "13"), ("fusion", "mid"),
                             ("freeze_encoder", "false"), ("mode", "transfer")):
            options.setdefault(key, default)
        choices = {"arch": set(ARCHS), "modality": {"s2", "s1"}, "bands": {"13", "9"}, "fusion": {"mid", "late"},
                   "freeze_encoder": {"true", "false"}, "mode": {"transfer", "zeroshot"}}
        for key, allowed in choices.items():
            if str(options[key]).lower() not in allowed:
                raise AdapterError(f"cromss option {key}={options[key]!r}", f"use one of: {', '.join(sorted(allowed))}")
        super().__init__(**{k: str(v).lower() if k != "pretrained" else str(v) for k, v in options.items()})
        self._contract: InputContract | None = None

    def _defaults_from_task(self, task: Task, band_names: list[str]) -> None:
        """Options not given take the task's: its framework (`training.architecture`) and, from the bands it
        feeds, the modality (VV/VH → s1) and the S2 band count (exactly CromSS's nine → 9)."""
        if "arch" in self._task_decides and task.training and task.training.architecture in ARCHS:
            self.options["arch"] = task.training.architecture
        if "modality" in self._task_decides and set(band_names) == set(S1_BANDS):
            self.options["modality"] = "s1"
        nine = [S2_BANDS[i] for i in NINE_BANDS]
        if "bands" in self._task_decides and sorted(band_names) == sorted(nine):
            self.options["bands"] = "9"

    def setup(self, task: Task, band_names: list[str]) -> None:
        self._defaults_from_task(task, band_names)
        names, mean, std = band_statistics(self.options["modality"], int(self.options["bands"]))
        num_classes = task.class_schema.num_classes
        if self.options["mode"] == "zeroshot" and (self.options["arch"] != "unet" or num_classes != DW_CLASSES):
            raise AdapterError(f"cromss mode=zeroshot is the pretraining U-Net with {DW_CLASSES} Dynamic World classes; "
                               f"this is arch={self.options['arch']} for {num_classes} classes",
                               "use arch=unet on a 9-class Dynamic World task, or mode=transfer")
        self.module = getattr(smp, ARCHS[self.options["arch"]])(
            encoder_name="resnet50", encoder_weights=None, in_channels=len(names), classes=num_classes)
        if self.options.get("pretrained"):
            self._load_pretrained(Path(self.options["pretrained"]), whole=False)
        if self.options["freeze_encoder"] == "true":
            for parameter in cast(torch.nn.Module, self.module.encoder).parameters():
                parameter.requires_grad_(False)
        self._contract = InputContract(num_bands=len(names), normalization=cromss_normalization(mean, std),
                                       band_names=names, size_divisor=32)

    def _load_pretrained(self, path: Path, whole: bool) -> None:
        state, _ = read_state_dict(path)
        state = pretrained_state(state, self.options["fusion"], self.options["modality"], whole, str(path))
        load_checked(self._require_module(), state, str(path), f"a ResNet-50 {self.options['arch']}",
                     may_be_missing=None if whole else r"^(decoder|segmentation_head)\.")

    def input_contract(self) -> InputContract:
        if self._contract is None:
            raise AdapterError("cromss adapter used before setup()")
        return self._contract

    def load(self, checkpoint: Path) -> None:
        """A checkpoint from `rsdg-bench train` (the whole model), or with mode=zeroshot a pretraining `.ckpt`."""
        if self.options["mode"] == "zeroshot":
            self._load_pretrained(Path(checkpoint), whole=True)
        else:
            super().load(checkpoint)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)
