"""CoDEX's network: a MultiUTAE backbone with one expert head per training domain, and the head selector.

Our implementation of the architecture of Abhishek et al., CoDEX (CVPR-W 2025), with the parameter names of
the authors' state dicts (`pretrained.*` for the backbone and heads, `conv_block_*` and `linear2` for the
selector), so their checkpoint loads key for key:

- `MultiUTAE`: U-TAE's encoder (`in_conv`, three `down_blocks`), MultiLTAE on the deepest features
  (attention per date and pixel), a decoder (`up_blocks`) fed by attention-aggregated skips, and
  `out_convs`: one expert head per training domain (3×3 conv, ReLU, 3×3 conv, ReLU), each mapping the
  full-resolution features of every date to K non-negative scores. `all_coord_weights` (the learned D×D
  domain affinity, standard-normal at init as upstream) is trained with the experts by the consistency loss
  (`codex_losses.py`) and not used at inference; `coord_regress` is in no CoDEX loss: both are kept so a
  checkpoint loads strictly. A date whose input is all zeros counts as padded (masked in the
  attention, skipped by the encoder), as upstream.
- `HeadSelector`: conv blocks (BatchNorm, 3×3) over the input and seven backbone feature maps, each
  averaged over dates and space, concatenated, and a linear layer to one score per domain; the softmax
  of those scores mixes the experts: scores = Σ_d p_d · head_d(x).

Widths follow upstream (`in_features` 64: encoder 32, 32, 32, 64; decoder 16, 16, 32, 64). The selector's
width (`out_first`) and the number of domains are read from a checkpoint's shapes by the adapter, since
the released file (width 32, 55 domains) differs from the repository's config (16).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from .multi_ltae import MultiLTAE, aggregate_skip
from .utae_blocks import ConvBlock, DownConvBlock, PaddingMode, UpConvBlock

# The selector's feature maps in upstream's order of concatenation (encoder, then decoder), with their
# channel widths at in_features = 64 (upstream hard-codes both; the names give the sizes for 128² input).
ENCODER_FEATURES = {"input": 0, "e_32x64x64": 32, "e_32x32x32": 32, "e_64x16x16": 64, "e_32x128x128": 32}
DECODER_FEATURES = {"d_32x32x32": 32, "d_16x64x64": 16, "d_16x128x128": 16}
# The order upstream creates the selector's blocks in (its state dict's order).
_SELECTOR_BLOCK_ORDER = ("input", "e_64x16x16", "e_32x32x32", "e_32x64x64", "e_32x128x128", "d_32x32x32",
                         "d_16x64x64", "d_16x128x128")


class MultiUTAE(nn.Module):
    """B×T×C×H×W + B×T day offsets → (D×B×T×K×H×W expert scores, {name: B×T×C×h×w feature map})."""

    def __init__(self, input_dim: int, num_domains: int, num_classes: int, in_features: int = 64,
                 str_conv_k: int = 4, str_conv_s: int = 2, str_conv_p: int = 1, n_head: int = 16, d_k: int = 4,
                 pad_value: float = 0, padding_mode: PaddingMode = "reflect", T: float = 1000, offset: int = 10) -> None:
        super().__init__()
        encoder = [in_features // 2, in_features // 2, in_features // 2, in_features]
        decoder = [in_features // 4, in_features // 4, in_features // 2, in_features]
        self.pad_value = pad_value
        self.in_conv = ConvBlock([input_dim, encoder[0], encoder[0]], pad_value=pad_value, norm="group",
                                 padding_mode=padding_mode)
        self.down_blocks = nn.ModuleList(
            DownConvBlock(encoder[i], encoder[i + 1], str_conv_k, str_conv_s, str_conv_p, pad_value=pad_value,
                          norm="group", padding_mode=padding_mode)
            for i in range(len(encoder) - 1))
        self.up_blocks = nn.ModuleList(
            UpConvBlock(decoder[i], decoder[i - 1], encoder[i - 1], str_conv_k, str_conv_s, str_conv_p, norm="group",
                        padding_mode=padding_mode)
            for i in range(len(decoder) - 1, 0, -1))
        self.temporal_encoder = MultiLTAE(encoder[-1], n_head=n_head, d_k=d_k, T=T, offset=offset)
        self.all_coord_weights = nn.Parameter(torch.randn(num_domains, num_domains))  # upstream's init; training only
        self.coord_regress = nn.ModuleList([nn.Linear(in_features, 1)])  # training only
        self.out_convs = nn.ModuleList(
            ConvBlock([decoder[0], in_features // 4, num_classes], norm="None", padding_mode=padding_mode)
            for _ in range(num_domains))

    def forward(self, x: torch.Tensor, days: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, _, height, width = x.shape
        pad_mask = (x == self.pad_value).flatten(2).all(dim=2)  # B×T: dates with no data
        maps = [self.in_conv.over_dates(x)]
        for down in cast("list[DownConvBlock]", self.down_blocks):
            maps.append(down.over_dates(maps[-1]))
        features = {"e_32x128x128": maps[0], "e_32x64x64": maps[1], "e_32x32x32": maps[2], "e_64x16x16": maps[3]}
        out, attention = self.temporal_encoder(maps[-1], days, pad_mask)
        for index, block in enumerate(self.up_blocks):
            out = block(out, aggregate_skip(maps[-(index + 2)], attention, pad_mask))
            features[list(DECODER_FEATURES)[index]] = out
        flat = out.reshape(batch * frames, *out.shape[2:])
        heads = torch.stack([head(flat).reshape(batch, frames, -1, height, width) for head in self.out_convs])
        return heads, features


class HeadSelector(nn.Module):
    """The expert mixture: `pretrained` (MultiUTAE) and the selector that weighs its heads per sample."""

    def __init__(self, input_dim: int, num_domains: int, num_classes: int, out_first: int = 32, num_convs: int = 3,
                 pad_value: float = 0, padding_mode: PaddingMode = "reflect", **backbone: Any) -> None:
        super().__init__()
        self.pretrained = MultiUTAE(input_dim, num_domains, num_classes, 64, pad_value=pad_value,
                                    padding_mode=padding_mode, **backbone)
        widths = {**ENCODER_FEATURES, **DECODER_FEATURES, "input": input_dim}
        for name in _SELECTOR_BLOCK_ORDER:
            width = widths[name]
            blocks = [ConvBlock([width if i == 0 else out_first, out_first], pad_value=pad_value, norm="batch",
                                padding_mode=padding_mode) for i in range(num_convs)]
            setattr(self, f"conv_block_{name}", nn.ModuleList(blocks))
        self.linear2 = nn.Linear(8 * out_first, num_domains)

    def forward(self, x: torch.Tensor, days: torch.Tensor) -> dict[str, torch.Tensor]:
        """`logits` B×T×K×H×W (the mixture), `selector_logits` B×D, `heads` D×B×T×K×H×W."""
        heads, features = self.pretrained(x, days)
        features = {"input": x, **features}
        pooled = [self._pooled(name, features[name]) for name in (*ENCODER_FEATURES, *DECODER_FEATURES)]
        selector_logits = self.linear2(torch.cat(pooled, dim=-1))
        weights = selector_logits.softmax(dim=-1).transpose(0, 1)  # D×B (upstream reshapes: right for B = 1)
        mixture = (weights[:, :, None, None, None, None] * heads).sum(dim=0)
        return {"logits": mixture, "selector_logits": selector_logits, "heads": heads}

    def _pooled(self, name: str, feature: torch.Tensor) -> torch.Tensor:
        """Conv blocks date by date, then the mean over dates and space: B×T×C×H×W → B×out_first."""
        batch, frames = feature.shape[:2]
        out = feature.reshape(batch * frames, *feature.shape[2:])
        for block in getattr(self, f"conv_block_{name}"):
            out = block(out)
        return out.reshape(batch, frames, *out.shape[1:]).mean(dim=1).mean(dim=(-2, -1))
