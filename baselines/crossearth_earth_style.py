"""CrossEarth's Earth-style injection and masked-image-modelling (MIM) constraint, as the paper describes them
(Gong et al., CrossEarth, §3.1-3.3, Algorithm 1, eqs. 2-9, §5.1, Tables 7 and 11), for `rsdg-bench train`.

The authors' code for both exists only as compiled bytecode, and the Earth-style statistics (the mean and
covariance of Million-AID style embeddings) were never released, so this is the paper's text made runnable, with
every value the paper does not state marked UNVERIFIED:

- Mask generator (eqs. 3-4, after MIC): uniform numbers on a ⌈H/B⌉ × ⌈W/B⌉ grid, 1 where a number exceeds the
  mask ratio m, 0 elsewhere, resized (nearest) to H × W.
- Earth-style injection (eqs. 1, 2, 5): a style drawn from N(mean, covariance) of Earth-style embeddings
  ("Diag(SVD(Covariance))": the covariance's singular values as the variances along its singular vectors,
  which is N(mean, covariance) itself), injected into the image by the style-transfer module, kept where the
  mask is 1 (X_s = p_t(·) ⊙ M + X ⊙ (1 − M)). UNVERIFIED substitute: the paper's style predictor and transfer
  networks (frozen, from its reference [82]) are not available, so a style here is the image's per-channel mean
  and standard deviation (2C numbers, in the data's 0-255 units) and the transfer moves each channel to the
  target mean and deviation (AdaIN on the pixels); the target is `alpha` of the drawn Earth style and
  1 − `alpha` of the image's own ("in-domain style embeddings ... as the style basis"; `alpha` 0.5 UNVERIFIED).
- Masked image (eq. 6): X_m = X ⊙ M + v ⊙ (1 − M), v a learnable H × W × 3 visual prompt initialised to 0
  (UNVERIFIED: how v enters; "integrated with M"). Images are in the adapter's normalized units throughout.
- MIM flow (eq. 8, Fig. 3): the four backbone stage maps of X_m (and of X_s when styled), each through a 3 × 3
  convolution of its own dilation (an ASPP over the stages; channels 256 and dilations 1, 6, 12, 18
  UNVERIFIED), concatenated and projected by a linear layer to the image (16 × 16 pixels per token, SimMIM's
  layout; UNVERIFIED). The backbone here is DINOv2 with its Reins (the paper's GSE and Injector, which it turns
  off in this flow, are not in the released model).
- Losses (Algorithm 1, eq. 9): L = L_seg + L_mim (+ L_metric when styled), weights 1. L_mim: the distance of the
  masked image's reconstruction to X, plus that of the styled image's to X_s when styled; ℓ1 on CASID, squared
  error elsewhere (§5.1), averaged over all pixels (UNVERIFIED: the paper's norm over the image). L_metric: ℓ1
  between the styled and the masked reconstructions. One sample gate u ~ Bernoulli(p) per iteration picks X or
  X_s for the segmentation flow; p 0.1 (Table 7's final design, an ablation on CASID; UNVERIFIED elsewhere).
- Mask ratio and block size per setting: Table 11 (`PAPER_MASKS`, keyed by the task's checkpoint key; a
  setting not in it takes Table 7's 0.1/64 for X_s and 0.7/64 for X_m, UNVERIFIED).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rsdg_bench.base.errors import AdapterError

MIM_CHANNELS = 256  # UNVERIFIED: the ASPP decoder's width is not stated
MIM_DILATIONS = (1, 6, 12, 18)  # UNVERIFIED: DeepLab's ASPP rates, one per backbone stage
STYLE_ALPHA = 0.5  # UNVERIFIED: the share of the Earth style in the injected style (the rest: the image's own)
STYLE_P = 0.1  # Table 7 (R8, CrossEarth): the sample gate's probability of the styled image
MIN_STD = 1e-6  # a drawn standard deviation is kept above this (a Gaussian draw can be negative; UNVERIFIED)


@dataclass(frozen=True)
class MaskSpec:
    """Mask generator settings: ratio m (a block is 0 where its uniform number is at most m) and block size B."""

    ratio: float
    block: int

    @classmethod
    def parse(cls, text: str) -> MaskSpec:
        """`ratio/block`, e.g. `0.7/64`."""
        match = re.fullmatch(r"(0?\.\d+|0|1(?:\.0*)?)/(\d+)", text.strip())
        if not match or int(match.group(2)) < 1:
            raise AdapterError(f"a mask setting is ratio/block with the ratio in [0, 1] and a block of 1 px or more, "
                               f"not {text!r}", "e.g. --model-arg mim_mask=0.7/64")
        return cls(float(match.group(1)), int(match.group(2)))


# Table 11 of the paper, by the task's checkpoint key (one trained model per source setting): (X_s mask, X_m mask).
PAPER_MASKS: dict[str, tuple[MaskSpec, MaskSpec]] = {
    "potsdam_irrg_source": (MaskSpec(0.7, 64), MaskSpec(0.7, 64)),
    "potsdam_rgb_source": (MaskSpec(0.3, 16), MaskSpec(0.7, 64)),
    "vaihingen_source": (MaskSpec(0.5, 32), MaskSpec(0.7, 64)),
    "loveda_urban_source": (MaskSpec(0.1, 64), MaskSpec(0.7, 64)),
    "loveda_rural_source": (MaskSpec(0.5, 16), MaskSpec(0.7, 64)),
    "deepglobe_road_source": (MaskSpec(0.3, 16), MaskSpec(0.5, 16)),
    "potsdam_irrg_res5_source": (MaskSpec(0.5, 32), MaskSpec(0.7, 64)),
    "potsdam_rgb_res5_source": (MaskSpec(0.3, 16), MaskSpec(0.7, 64)),
    "whu_aerial_source": (MaskSpec(0.5, 16), MaskSpec(0.7, 64)),
    "whu_satellite2_source": (MaskSpec(0.5, 16), MaskSpec(0.7, 16)),
    "casid_sub_source": (MaskSpec(0.1, 64), MaskSpec(0.7, 64)),
    "casid_tem_source": (MaskSpec(0.1, 64), MaskSpec(0.7, 128)),
    "casid_tms_source": (MaskSpec(0.1, 64), MaskSpec(0.7, 64)),
    "casid_trf_source": (MaskSpec(0.5, 64), MaskSpec(0.7, 64)),
}
DEFAULT_MASKS = (MaskSpec(0.1, 64), MaskSpec(0.7, 64))  # Table 7's caption (the CASID ablation)


def paper_masks(checkpoint_key: str) -> tuple[MaskSpec, MaskSpec]:
    """(X_s mask, X_m mask) of a setting: Table 11's, a label-efficiency variant taking its full setting's
    (UNVERIFIED), else Table 7's."""
    return PAPER_MASKS.get(re.sub(r"_\d+pct$", "", checkpoint_key), DEFAULT_MASKS)


def block_mask(batch: int, height: int, width: int, mask: MaskSpec, device: torch.device) -> torch.Tensor:
    """B × 1 × H × W mask of eqs. 3-4: 1 where a block's uniform number exceeds the ratio, 0 elsewhere, the
    ⌈H/B⌉ × ⌈W/B⌉ grid resized (nearest) to H × W, as MIC does. Drawn from torch's global generator, which the
    trainer seeds and restores on resume."""
    grid = torch.rand(batch, 1, math.ceil(height / mask.block), math.ceil(width / mask.block), device=device)
    return F.interpolate((grid > mask.ratio).float(), size=(height, width), mode="nearest")


def channel_style(x: torch.Tensor) -> torch.Tensor:
    """B × 2C style of each image: its channels' means, then their standard deviations (over H × W)."""
    flat = x.flatten(2)
    return torch.cat([flat.mean(dim=-1), flat.std(dim=-1, unbiased=False)], dim=1)


def inject_style(x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """`x` (B × C × H × W) with each channel moved to the mean and standard deviation in `style` (B × 2C)."""
    channels = x.shape[1]
    own = channel_style(x)
    mean, std = own[:, :channels, None, None], own[:, channels:, None, None].clamp_min(MIN_STD)
    target_mean = style[:, :channels, None, None]
    target_std = style[:, channels:, None, None].clamp_min(MIN_STD)
    return (x - mean) / std * target_std + target_mean


@dataclass(frozen=True)
class EarthStyle:
    """The Gaussian of Earth-style embeddings: `mean` (2C) and `covariance` (2C × 2C) of images' channel means
    and standard deviations (`channel_style`)."""

    mean: torch.Tensor
    covariance: torch.Tensor

    @classmethod
    def from_file(cls, path: Path) -> EarthStyle:
        """Statistics from a JSON file `{"mean": [2C numbers], "covariance": [[2C × 2C]]}` in the data's units
        (e.g. made by `earth_style_statistics` over Million-AID images)."""
        try:
            content = json.loads(path.read_text())
            mean = torch.tensor(content["mean"], dtype=torch.float64)
            covariance = torch.tensor(content["covariance"], dtype=torch.float64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AdapterError(f"cannot read Earth-style statistics from {path}: {exc}",
                               'give a JSON file {"mean": [...], "covariance": [[...]]} of per-image channel means '
                               "and standard deviations (baselines/crossearth_earth_style.py)") from exc
        if mean.ndim != 1 or mean.numel() % 2 or covariance.shape != (mean.numel(), mean.numel()):
            raise AdapterError(f"{path}: the mean must hold 2C numbers and the covariance be 2C × 2C, got "
                               f"{tuple(mean.shape)} and {tuple(covariance.shape)}", "see earth_style_statistics")
        return cls(mean, covariance)

    def normalized(self, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]) -> EarthStyle:
        """The same Gaussian after the per-channel normalization (v − mean) / std: a style's means shift and
        scale, its deviations scale."""
        shift = torch.tensor([*(-m / s for m, s in zip(pixel_mean, pixel_std, strict=True)), *([0.0] * len(pixel_std))],
                             dtype=torch.float64)
        scale = torch.tensor([1 / s for s in pixel_std] * 2, dtype=torch.float64)
        return EarthStyle(self.mean * scale + shift, self.covariance * scale[:, None] * scale[None, :])

    def sample(self, count: int, device: torch.device) -> torch.Tensor:
        """`count` styles from N(mean, covariance) (eq. 2): mean + U·√S·z, with U, S the covariance's singular
        vectors and values and z standard normal (torch's global generator)."""
        u, s, _ = torch.linalg.svd(self.covariance)
        root = (u * s.clamp_min(0).sqrt()).to(torch.float32)
        z = torch.randn(count, self.mean.numel(), device=device)
        return self.mean.to(device, torch.float32) + z @ root.to(device).T


def earth_style_statistics(styles: torch.Tensor) -> dict[str, list]:
    """The JSON content `EarthStyle.from_file` reads, from N × 2C styles (`channel_style` of N images)."""
    styles = styles.to(torch.float64)
    return {"mean": styles.mean(dim=0).tolist(), "covariance": torch.cov(styles.T, correction=1).tolist()}


class MimDecoder(nn.Module):
    """The MIM flow's decoder: each backbone stage map (B × D × H/p × W/p) through a 3 × 3 convolution of its
    own dilation and a ReLU, concatenated, a linear layer to p × p × 3 values per token, rearranged into the
    B × 3 × H × W image; and the visual prompt v that fills the masked image's masked pixels."""

    def __init__(self, embed_dim: int, stages: int, patch_size: int, image_size: int,
                 channels: int = MIM_CHANNELS, dilations: tuple[int, ...] = MIM_DILATIONS) -> None:
        super().__init__()
        if stages > len(dilations):
            raise AdapterError(f"the MIM decoder has {len(dilations)} dilations for {stages} backbone stages",
                               "give one dilation per stage")
        self.patch_size = patch_size
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(embed_dim, channels, 3, padding=d, dilation=d), nn.ReLU())
                                    for d in dilations[:stages])
        self.linear = nn.Conv2d(channels * stages, 3 * patch_size * patch_size, 1)
        self.prompt = nn.Parameter(torch.zeros(1, 3, image_size, image_size))

    def forward(self, stage_maps: list[torch.Tensor]) -> torch.Tensor:
        merged = torch.cat([stage(m) for stage, m in zip(self.stages, stage_maps, strict=True)], dim=1)
        return F.pixel_shuffle(self.linear(merged), self.patch_size)

    def masked(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Eq. 6: X ⊙ M + v ⊙ (1 − M); v resized (bilinear) when the input is not the prompt's size."""
        prompt: torch.Tensor = self.prompt
        if prompt.shape[-2:] != x.shape[-2:]:
            prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * keep + prompt * (1 - keep)


@dataclass(frozen=True)
class CrossEarthObjective:
    """Which of the paper's training terms run, and their settings (see the module's notes)."""

    mim_loss: Literal["l1", "mse"] | None = None  # None: no MIM flow
    style: EarthStyle | None = None  # in normalized units; None: no Earth-style injection
    style_p: float = STYLE_P
    style_alpha: float = STYLE_ALPHA
    style_mask: MaskSpec = DEFAULT_MASKS[0]
    mim_mask: MaskSpec = DEFAULT_MASKS[1]

    def styled(self, x: torch.Tensor) -> torch.Tensor:
        """X_s of eq. 5: the injected image where the X_s mask is 1, X elsewhere."""
        assert self.style is not None
        own = channel_style(x)
        target = self.style_alpha * self.style.sample(x.shape[0], x.device) + (1 - self.style_alpha) * own
        keep = block_mask(x.shape[0], x.shape[-2], x.shape[-1], self.style_mask, x.device)
        return inject_style(x, target) * keep + x * (1 - keep)

    def distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L_mim's distance: ℓ1 or squared error, averaged over every value."""
        if self.mim_loss == "l1":
            return F.l1_loss(prediction, target)
        return F.mse_loss(prediction, target)
