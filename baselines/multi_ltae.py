"""Multi-date lightweight temporal attention (CoDEX's MultiLTAE) and the attention-guided skip aggregation.

Our implementation of the published design (Garnot & Landrieu's L-TAE / U-TAE as CoDEX varies it), with
the upstream parameter names (`attention_heads.fc1_q`, `fc1_k`, `in_norm`, `out_norm`, `mlp.0`):

- every pixel's sequence of C-channel features is group-normed, given a sinusoidal encoding of its dates
  (day offsets; period `T`, exponent `offset`, one C/heads-wide table repeated for every head), and passed
  through multi-head self-attention in which each head attends with its own query and key projections
  (width `d_k`) over its own C/heads channels of the values; masked (padded) dates get a score of −1000;
- the heads' outputs are concatenated, go through Linear + ReLU and a group norm, and stay one per date
  (unlike L-TAE, which pools the dates into one map);
- `aggregate_skip` applies the same per-head, per-date attention (resized to the skip's resolution:
  bilinear up, average-pooled down) to the encoder features of a skip connection, channel group by group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PositionalEncoder(nn.Module):
    """Sinusoids of day offsets: table[..., j] = sin / cos(day / T^(2·⌊(offset + j)/2⌋ / (d + offset)))."""

    denominator: torch.Tensor  # a buffer

    def __init__(self, d: int, T: float, repeat: int, offset: int = 0) -> None:
        super().__init__()
        self.repeat = repeat
        exponents = 2 * torch.div(torch.arange(offset, offset + d).float(), 2, rounding_mode="floor") / (d + offset)
        self.register_buffer("denominator", torch.pow(T, exponents), persistent=False)

    def forward(self, days: torch.Tensor) -> torch.Tensor:
        table = days[..., None] / self.denominator
        table[..., 0::2] = torch.sin(table[..., 0::2])
        table[..., 1::2] = torch.cos(table[..., 1::2])
        return table.repeat(*([1] * (table.ndim - 1)), self.repeat)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_head: int, d_k: int, d_in: int) -> None:
        super().__init__()
        self.n_head, self.d_k = n_head, d_k
        self.fc1_q = nn.Linear(d_in, n_head * d_k)
        self.fc1_k = nn.Linear(d_in, n_head * d_k)

    def forward(self, v: torch.Tensor, pad_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """v N×T×C → (heads×N×T×C/heads outputs, heads×N×T×T attention over dates)."""
        n, frames, channels = v.shape
        q = self.fc1_q(v).reshape(n, frames, self.n_head, self.d_k).permute(2, 0, 1, 3)  # heads×N×T×d_k
        k = self.fc1_k(v).reshape(n, frames, self.n_head, self.d_k).permute(2, 0, 1, 3)
        scores = k @ q.transpose(-1, -2) / math.sqrt(self.d_k)  # [t, u] = k_t · q_u
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[None, :, None, :], -1e3)
        attention = scores.softmax(dim=-1)
        values = v.reshape(n, frames, self.n_head, channels // self.n_head).permute(2, 0, 1, 3)
        return attention @ values, attention


class MultiLTAE(nn.Module):
    """B×T×C×h×w features and B×T day offsets → (B×T×C×h×w, attention heads×B×T×T×h×w)."""

    def __init__(self, in_channels: int, n_head: int = 16, d_k: int = 4, T: float = 730, offset: int = 0) -> None:
        super().__init__()
        self.n_head = n_head
        self.positional_encoder = PositionalEncoder(in_channels // n_head, T=T, repeat=n_head, offset=offset)
        self.attention_heads = MultiHeadAttention(n_head, d_k, in_channels)
        self.in_norm = nn.GroupNorm(num_groups=n_head, num_channels=in_channels)
        self.out_norm = nn.GroupNorm(num_groups=n_head, num_channels=in_channels)
        self.mlp = nn.Sequential(nn.Linear(in_channels, in_channels), nn.ReLU())

    def forward(self, x: torch.Tensor, days: torch.Tensor, pad_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames, channels, height, width = x.shape
        pixels = x.permute(0, 3, 4, 1, 2).reshape(batch * height * width, frames, channels)
        pixels = self.in_norm(pixels.transpose(1, 2)).transpose(1, 2)
        per_pixel_days = days[:, None, None, :].expand(batch, height, width, frames).reshape(-1, frames)
        pixels = pixels + self.positional_encoder(per_pixel_days.to(pixels.dtype))
        mask = (pad_mask[:, None, None, :].expand(batch, height, width, frames).reshape(-1, frames)
                if pad_mask is not None else None)
        heads_out, attention = self.attention_heads(pixels, mask)
        out = heads_out.permute(1, 2, 0, 3).reshape(-1, channels)  # heads concatenated, head-major
        out = self.out_norm(self.mlp(out))
        out = out.reshape(batch, height, width, frames, channels).permute(0, 3, 4, 1, 2)
        attention = attention.reshape(self.n_head, batch, height, width, frames, frames).permute(0, 1, 4, 5, 2, 3)
        return out, attention


def aggregate_skip(x: torch.Tensor, attention: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Attention-weighted sum over dates of skip features x (B×T×C×H×W), head by channel group
    (U-TAE's `att_group` mode, per output date): → B×T×C×H×W. Padded dates get zero weight."""
    heads, batch, frames, _, height, width = attention.shape
    flat = attention.reshape(heads * batch * frames, frames, height, width)
    if x.shape[-2] > height:
        flat = F.interpolate(flat, size=x.shape[-2:], mode="bilinear", align_corners=False)
    else:
        flat = F.avg_pool2d(flat, kernel_size=width // x.shape[-2])
    weights = flat.reshape(heads, batch, frames, frames, *x.shape[-2:])
    if pad_mask.any():
        weights = weights * (~pad_mask).to(weights.dtype)[None, :, None, :, None, None]
    groups = torch.stack(x.chunk(heads, dim=2))  # heads×B×T×C/heads×H×W
    # Σ_u weights[t, u] · groups[u], accumulated date by date: never holds the T×T×C/heads product
    # (bench/skip_aggregation.py times it against the formulation that does).
    out = groups.new_zeros(heads, batch, frames, *groups.shape[3:])
    for attended in range(frames):
        out += weights[:, :, :, attended, None] * groups[:, :, None, attended]
    return torch.cat(list(out), dim=2)
