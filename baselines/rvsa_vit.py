"""MTP's backbone: a plain ViT with rotated varied-size window attention (RVSA, Wang et al., TGRS 2022).

Blocks alternate between window attention and full attention: block i is global when (i + 1) is a
multiple of `interval`, otherwise it is an RVSA window block. Parameter names are those of MTP's
`RVSA_MTP` (`vit_rvsa_mtp.py`), so its fine-tuned mmseg checkpoints load unchanged.

RVSA, per head: the token grid is zero-padded (split evenly, extra row/column at the bottom/right) to a
multiple of the 7 × 7 window. Each window's key/value sampling grid is its regular 7 × 7 grid (in
[-1, 1] image coordinates), scaled by (1 + s), rotated by an angle θ around the window centre and shifted
by an offset t, where s, θ and t come from 1 × 1 convolutions of the window-average-pooled, LeakyReLU'd
input. Keys and values are read there with bilinear `grid_sample` (align_corners=True, zeros outside);
queries stay on the regular grid. Attention logits get decomposed relative positions (per-axis tables
dotted with the unscaled query) and a Swin-style relative position bias. Upstream divides the offsets by
`h // 7` and `w // 7` (the unpadded token count over the window size), applying the row count to the x
offset; this is kept, since the released weights were trained with it.

Full-attention blocks use decomposed relative positions sized for the training grid, and the position
embedding has no class token and is never resized: the input must be exactly `img_size` square. Four
FPN adapters turn the stride-16 outputs of `out_indices` into strides 4 (two transposed convolutions
with LayerNorm + GELU between), 8 (one), 16 (identity) and 32 (max-pool).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rsdg_bench.base.errors import AdapterError

WINDOW = 7


@dataclass(frozen=True)
class RVSAConfig:
    """Sizes of the backbone; the defaults are MTP's ViT-L + RVSA for 512 px LoveDA."""

    img_size: int = 512
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    interval: int = 6
    out_indices: tuple[int, ...] = (7, 11, 15, 23)

    @staticmethod
    def base(img_size: int = 512) -> RVSAConfig:
        """ViT-B + RVSA (MTP's `rvsa-b-*` configs)."""
        return RVSAConfig(img_size=img_size, embed_dim=768, depth=12, num_heads=12, interval=3,
                          out_indices=(3, 5, 7, 11))


def add_decomposed_rel_pos(attn: torch.Tensor, q: torch.Tensor, size: tuple[int, int], table_h: torch.Tensor,
                           table_w: torch.Tensor) -> torch.Tensor:
    """attn (B, heads, hw, hw) + the query's dot products with per-axis relative position tables.

    Query and key grids have the same `size` here, so the offset index of (i, j) is i − j + size − 1."""
    rows, cols = size
    batch, heads, _, dims = q.shape
    idx_h = torch.arange(rows)[:, None] - torch.arange(rows)[None, :] + rows - 1
    idx_w = torch.arange(cols)[:, None] - torch.arange(cols)[None, :] + cols - 1
    grid_q = q.reshape(batch, heads, rows, cols, dims)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h[idx_h.to(table_h.device)])
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w[idx_w.to(table_w.device)])
    attn = attn.view(batch, heads, rows, cols, rows, cols) + rel_h[..., :, None] + rel_w[..., None, :]
    return attn.view(batch, heads, rows * cols, rows * cols)


class FullAttention(nn.Module):
    """Global multi-head attention with decomposed relative positions over the training token grid."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.grid = grid
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.full_attn_rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, head_dim))
        self.full_attn_rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, head_dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q = q * self.scale
        attn = add_decomposed_rel_pos(q @ k.transpose(-2, -1), q, self.grid, self.full_attn_rel_pos_h,
                                      self.full_attn_rel_pos_w)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, -1)
        return self.proj(out)


def _window_regressor(dim: int, outputs: int) -> nn.Sequential:
    """Window average → LeakyReLU → 1×1 conv (index 2 carries the weights, as upstream)."""
    return nn.Sequential(nn.AvgPool2d(WINDOW, WINDOW), nn.LeakyReLU(), nn.Conv2d(dim, outputs, 1))


def _relative_position_index(size: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (size - 1)
    return relative[..., 0] * (2 * size - 1) + relative[..., 1]


class RotatedVariedSizeWindowAttention(nn.Module):
    """RVSA with 7 × 7 windows, one learned (scale, angle, offset) per window and head."""

    relative_position_index: torch.Tensor  # a buffer (`register_buffer`)

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * WINDOW - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * WINDOW - 1, self.head_dim))
        self.sampling_offsets = _window_regressor(dim, num_heads * 2)
        self.sampling_scales = _window_regressor(dim, num_heads * 2)
        self.sampling_angles = _window_regressor(dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * WINDOW - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(WINDOW))

    def _sampling_grid(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(B·heads) × H' × W' × 2 sampling locations (x, y in [-1, 1]) on the padded grid H' × W'."""
        batch, _, height, width = x.shape  # padded
        n_h, n_w = height // WINDOW, width // WINDOW
        ys = torch.linspace(-1, 1, height, device=x.device)
        xs = torch.linspace(-1, 1, width, device=x.device)
        image = torch.stack([xs.view(1, -1).expand(height, -1), ys.view(-1, 1).expand(-1, width)])[None]
        window_centre = F.avg_pool2d(image, WINDOW).reshape(1, 2, n_h, 1, n_w, 1)
        step_h = torch.arange(WINDOW, device=x.device) * 2 / (height - 1)
        step_w = torch.arange(WINDOW, device=x.device) * 2 / (width - 1)
        local_y = (step_h - step_h.mean()).repeat(n_h)
        local_x = (step_w - step_w.mean()).repeat(n_w)
        local = torch.stack([local_x.view(1, -1).expand(n_h * WINDOW, -1),
                             local_y.view(-1, 1).expand(-1, n_w * WINDOW)]).reshape(1, 2, n_h, WINDOW, n_w, WINDOW)
        heads = batch * self.num_heads
        offsets = self.sampling_offsets(x).reshape(heads, 2, n_h, n_w)
        offsets = torch.stack([offsets[:, 0] / (rows // WINDOW), offsets[:, 1] / (cols // WINDOW)], dim=1)
        scales = self.sampling_scales(x).reshape(heads, 2, n_h, n_w)
        angles = self.sampling_angles(x).reshape(heads, n_h, n_w)[:, :, None, :, None]
        local = local * (scales[:, :, :, None, :, None] + 1)
        cos, sin = torch.cos(angles), torch.sin(angles)
        rotated = torch.stack([local[:, 0] * cos - local[:, 1] * sin, local[:, 1] * cos + local[:, 0] * sin], dim=1)
        coords = window_centre + rotated + offsets[:, :, :, None, :, None]
        return coords.permute(0, 2, 3, 4, 5, 1).reshape(heads, height, width, 2)

    def forward(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        grid = x.transpose(1, 2).reshape(batch, dim, rows, cols)
        pad_h, pad_w = (-rows) % WINDOW, (-cols) % WINDOW
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        height, width = rows + pad_h, cols + pad_w
        n_h, n_w = height // WINDOW, width // WINDOW
        sample_at = self._sampling_grid(F.pad(grid, padding), rows, cols)

        qkv = self.qkv(x).transpose(1, 2).reshape(batch, 3, heads, head_dim, rows, cols).transpose(0, 1)
        qkv = F.pad(qkv.reshape(3 * batch * heads, head_dim, rows, cols), padding)
        q, k, v = qkv.reshape(3, batch * heads, head_dim, height, width)
        k = F.grid_sample(k, sample_at, padding_mode="zeros", align_corners=True)
        v = F.grid_sample(v, sample_at, padding_mode="zeros", align_corners=True)

        def windows(t: torch.Tensor) -> torch.Tensor:  # → (B·windows) × heads × 49 × head_dim
            t = t.reshape(batch, heads, head_dim, n_h, WINDOW, n_w, WINDOW).permute(0, 3, 5, 1, 4, 6, 2)
            return t.reshape(batch * n_h * n_w, heads, WINDOW * WINDOW, head_dim)

        q, k, v = windows(q), windows(k), windows(v)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = add_decomposed_rel_pos(attn, q, (WINDOW, WINDOW), self.rel_pos_h, self.rel_pos_w)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(WINDOW * WINDOW, WINDOW * WINDOW, heads).permute(2, 0, 1)[None]
        out = attn.softmax(dim=-1) @ v
        out = out.reshape(batch, n_h, n_w, heads, WINDOW, WINDOW, head_dim).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(batch, dim, height, width)
        out = out[:, :, padding[2]:padding[2] + rows, padding[0]:padding[0] + cols]
        return self.proj(out.permute(0, 2, 3, 1).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int], window: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RotatedVariedSizeWindowAttention(dim, num_heads) if window else FullAttention(dim, num_heads, grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rows, cols)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)


class Norm2d(nn.Module):
    """LayerNorm over the channels of a B × C × H × W map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class RVSAViT(nn.Module):
    """Image (exactly img_size²) → four maps at strides 4, 8, 16, 32."""

    def __init__(self, config: RVSAConfig) -> None:
        super().__init__()
        if config.patch_size != 16:
            raise ValueError("only MTP's patch-16 RVSA models are supported")
        self.config = config
        dim, side = config.embed_dim, config.img_size // config.patch_size
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, dim))
        self.blocks = nn.ModuleList(Block(dim, config.num_heads, (side, side), window=(i + 1) % config.interval != 0)
                                    for i in range(config.depth))
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), Norm2d(dim), nn.GELU(),
                                  nn.ConvTranspose2d(dim, dim, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = self.config.img_size
        if tuple(x.shape[-2:]) != (size, size):
            raise AdapterError(f"the RVSA ViT was trained on {size}×{size} inputs and cannot take "
                               f"{x.shape[-2]}×{x.shape[-1]} (its position embedding and global attention are "
                               "sized for the training grid)",
                               f"slide {size}-px windows over the image (the mtp adapter does this itself)")
        batch = x.shape[0]
        tokens = self.patch_embed.proj(x)
        rows, cols = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2) + self.pos_embed
        maps = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, rows, cols)
            if index in self.config.out_indices:
                maps.append(tokens.transpose(1, 2).reshape(batch, -1, rows, cols))
        return [adapter(m) for adapter, m in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), maps, strict=True)]
