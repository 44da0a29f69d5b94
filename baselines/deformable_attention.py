"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021) in plain PyTorch.

Each query looks at `num_points` sampled locations per head and level around its reference point; the
sample offsets and the attention weights (softmax over levels × points) are linear functions of the query.
Values are read with bilinear `grid_sample` (zeros outside, align_corners=False), which is what mmcv's
compiled kernel computes and what its CPU fallback does, so no compiled extension is needed.

Parameter names follow mmcv's `MultiScaleDeformableAttention` (`sampling_offsets`, `attention_weights`,
`value_proj`, `output_proj`), so mmdet / mmseg checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def deformable_sample(value: torch.Tensor, spatial_shapes: list[tuple[int, int]], locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of bilinearly sampled values.

    value: B × ΣHW × heads × d (levels concatenated, row-major); locations: B × Q × heads × levels × points × 2
    as (x, y) in [0, 1]; weights: B × Q × heads × levels × points. Returns B × Q × (heads · d).
    """
    batch, _, heads, dims = value.shape
    _, queries, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        level_value = per_level[level].flatten(2).transpose(1, 2).reshape(batch * heads, dims, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B·heads) × Q × points × 2
        sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))
    weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(batch, heads * dims, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Batch-first deformable self-attention over a flattened multi-level feature sequence, with residual."""

    def __init__(self, embed_dims: int, num_heads: int = 8, num_levels: int = 4, num_points: int = 4) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query, query_pos: B × Q × C (the values are the queries without position); reference_points:
        B × Q × levels × 2 as (x, y) in [0, 1]. Returns query + attention output."""
        batch, num_query, _ = query.shape
        value = self.value_proj(query).view(batch, num_query, self.num_heads, -1)
        positioned = query + query_pos
        offsets = self.sampling_offsets(positioned).view(batch, num_query, self.num_heads, self.num_levels,
                                                         self.num_points, 2)
        weights = self.attention_weights(positioned).view(batch, num_query, self.num_heads, -1).softmax(-1)
        weights = weights.view(batch, num_query, self.num_heads, self.num_levels, self.num_points)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return query + self.output_proj(deformable_sample(value, spatial_shapes, locations, weights))
