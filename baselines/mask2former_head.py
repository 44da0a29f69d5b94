"""Mask2Former (Cheng et al., CVPR 2022) head in plain PyTorch, with the parameter names of mmdet 3.x /
mmseg 1.x so their checkpoints load unchanged, in the form CrossEarth uses it (Rein queries).

- Pixel decoder (`MSDeformAttnPixelDecoder`): the three coarsest input maps (strides 32, 16, 8) are
  projected (1×1 conv + GroupNorm), flattened together and refined by `encoder_layers` deformable
  self-attention layers with sine position encodings plus a learned level encoding; the finest map
  (stride 4) gets a lateral 1×1 conv added to the upsampled stride-8 output and a 3×3 conv; a 1×1 conv
  on it gives the mask features.
- Transformer decoder: each layer is masked cross-attention (to one level, cycling 32 → 16 → 8, masked
  where the previous mask prediction is below 0.5), self-attention and an FFN, each followed by
  LayerNorm (post-norm), then a shared LayerNorm before every prediction.
- Queries: CrossEarth drops Mask2Former's learned query embeddings; the Rein queries are the query
  positions and a linear map of them (`querys2feat`) the initial query features.
- Prediction: class scores (K + 1 with "no object") and mask logits per query; the segmentation scores
  are softmax(class)[:K] × sigmoid(mask), summed over queries, after upsampling the masks bilinearly
  to the input size (mmseg's `Mask2FormerHead.predict`). These are probabilities-like scores, not logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .deformable_attention import MultiScaleDeformableAttention


@dataclass(frozen=True)
class Mask2FormerConfig:
    """Sizes of the head; the defaults are CrossEarth's (256 channels, 6 + 9 layers, 3 levels)."""

    num_classes: int
    in_channels: tuple[int, ...] = (1024, 1024, 1024, 1024)
    feat_channels: int = 256
    out_channels: int = 256
    num_levels: int = 3
    num_groups: int = 32
    encoder_layers: int = 6
    encoder_heads: int = 8
    encoder_points: int = 4
    encoder_ffn: int = 1024
    decoder_layers: int = 9
    decoder_heads: int = 8
    decoder_ffn: int = 2048


def sine_position_encoding(batch: int, height: int, width: int, num_feats: int, device: torch.device
                           ) -> torch.Tensor:
    """DETR's normalized sine encoding of an unpadded H × W grid: B × 2·num_feats × H × W (y first, then x)."""
    y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device).view(1, height, 1).expand(batch, -1, width)
    x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device).view(1, 1, width).expand(batch, height, -1)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).view(batch, height, width, -1)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).view(batch, height, width, -1)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class ConvGN(nn.Module):
    """mmcv ConvModule with GroupNorm: `conv` then `gn`, optionally ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int, bias: bool,
                 relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.gn = nn.GroupNorm(groups, out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class FFN(nn.Module):
    """mmcv FFN: Linear → ReLU → Linear, with the identity added."""

    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), nn.ReLU()), nn.Linear(hidden, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """Deformable self-attention → LayerNorm → FFN → LayerNorm."""

    def __init__(self, dims: int, heads: int, levels: int, points: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dims, heads, levels, points)
        self.ffn = FFN(dims, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(dims) for _ in range(2))

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        query = self.norms[0](self.self_attn(query, query_pos, reference_points, spatial_shapes))
        return self.norms[1](self.ffn(query))


class Encoder(nn.Module):
    def __init__(self, num_layers: int, dims: int, heads: int, levels: int, points: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dims, heads, levels, points, hidden) for _ in range(num_layers))

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        for layer in self.layers:
            query = layer(query, query_pos, reference_points, spatial_shapes)
        return query


class MSDeformAttnPixelDecoder(nn.Module):
    """Four maps (strides 4, 8, 16, 32) → (mask features at stride 4, [stride 32, 16, 8 memories])."""

    def __init__(self, config: Mask2FormerConfig) -> None:
        super().__init__()
        c, levels, groups = config.feat_channels, config.num_levels, config.num_groups
        self.num_levels = levels
        self.feat_channels = c
        self.input_convs = nn.ModuleList(
            ConvGN(config.in_channels[-1 - i], c, 1, groups, bias=True, relu=False) for i in range(levels))
        self.encoder = Encoder(config.encoder_layers, c, config.encoder_heads, levels, config.encoder_points,
                               config.encoder_ffn)
        self.level_encoding = nn.Embedding(levels, c)
        finer = len(config.in_channels) - levels
        self.lateral_convs = nn.ModuleList(
            ConvGN(config.in_channels[i], c, 1, groups, bias=False, relu=False) for i in range(finer))
        self.output_convs = nn.ModuleList(ConvGN(c, c, 3, groups, bias=False, relu=True) for _ in range(finer))
        self.mask_feature = nn.Conv2d(c, config.out_channels, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch = feats[0].shape[0]
        inputs, positions, references, shapes = [], [], [], []
        for i in range(self.num_levels):
            feat = feats[len(feats) - 1 - i]
            h, w = feat.shape[-2:]
            projected = self.input_convs[i](feat)
            pos = sine_position_encoding(batch, h, w, self.feat_channels // 2, feat.device)
            pos = pos + self.level_encoding.weight[i].view(1, -1, 1, 1)
            ys, xs = torch.meshgrid((torch.arange(h, device=feat.device, dtype=torch.float32) + 0.5) / h,
                                    (torch.arange(w, device=feat.device, dtype=torch.float32) + 0.5) / w,
                                    indexing="ij")
            references.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))
            inputs.append(projected.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2))
            shapes.append((h, w))
        reference_points = torch.cat(references)[None, :, None].expand(batch, -1, self.num_levels, -1)
        memory = self.encoder(torch.cat(inputs, 1), torch.cat(positions, 1), reference_points, shapes)
        memory = memory.transpose(1, 2)
        outs = [m.reshape(batch, -1, h, w) for m, (h, w) in zip(memory.split([h * w for h, w in shapes], -1), shapes,
                                                                  strict=True)]
        for i in range(len(feats) - self.num_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            upsampled = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(self.output_convs[i](lateral + upsampled))
        return self.mask_feature(outs[-1]), outs[:self.num_levels]


class AttentionWithPosition(nn.Module):
    """mmcv MultiheadAttention: positions added to query and key (not value), residual added."""

    def __init__(self, dims: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, heads, batch_first=True)

    def forward(self, query: torch.Tensor, key: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.attn(query + query_pos, key + key_pos, key, attn_mask=attn_mask, need_weights=False)[0]
        return query + out


class DecoderLayer(nn.Module):
    """Masked cross-attention → LayerNorm → self-attention → LayerNorm → FFN → LayerNorm."""

    def __init__(self, dims: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = AttentionWithPosition(dims, heads)
        self.cross_attn = AttentionWithPosition(dims, heads)
        self.ffn = FFN(dims, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(dims) for _ in range(3))

    def forward(self, query: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor, memory_pos: torch.Tensor,
                attn_mask: torch.Tensor) -> torch.Tensor:
        query = self.norms[0](self.cross_attn(query, memory, query_pos, memory_pos, attn_mask))
        query = self.norms[1](self.self_attn(query, query, query_pos, query_pos))
        return self.norms[2](self.ffn(query))


class TransformerDecoder(nn.Module):
    def __init__(self, num_layers: int, dims: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dims, heads, hidden) for _ in range(num_layers))
        self.post_norm = nn.LayerNorm(dims)


class ReinMask2FormerHead(nn.Module):
    """(features, Rein queries) → per-layer class scores and mask logits; `predict` → segmentation scores."""

    def __init__(self, config: Mask2FormerConfig) -> None:
        super().__init__()
        c = config.feat_channels
        self.config = config
        self.pixel_decoder = MSDeformAttnPixelDecoder(config)
        self.transformer_decoder = TransformerDecoder(config.decoder_layers, c, config.decoder_heads,
                                                      config.decoder_ffn)
        self.level_embed = nn.Embedding(config.num_levels, c)
        self.cls_embed = nn.Linear(c, config.num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c), nn.ReLU(),
                                        nn.Linear(c, config.out_channels))
        self.querys2feat = nn.Linear(c, c)

    def _predict_masks(self, query: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class scores, mask logits, and the cross-attention mask for the next layer (True = blocked)."""
        decoded = self.transformer_decoder.post_norm(query)
        cls_scores = self.cls_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        attn = F.interpolate(masks, attn_size, mode="bilinear", align_corners=False)
        attn = attn.flatten(2).unsqueeze(1).repeat(1, self.config.decoder_heads, 1, 1).flatten(0, 1)
        return cls_scores, masks, attn.sigmoid() < 0.5

    def forward(self, feats: list[torch.Tensor], queries: torch.Tensor
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        batch = feats[0].shape[0]
        query_pos = queries.expand(batch, -1, -1) if queries.ndim == 2 else queries
        mask_features, memories = self.pixel_decoder(feats)
        levels = self.config.num_levels
        keys, key_positions = [], []
        for i, memory in enumerate(memories):
            keys.append(memory.flatten(2).transpose(1, 2) + self.level_embed.weight[i].view(1, 1, -1))
            height, width = memory.shape[-2:]
            pos = sine_position_encoding(batch, height, width, self.config.feat_channels // 2, memory.device)
            key_positions.append(pos.flatten(2).transpose(1, 2))
        query = self.querys2feat(query_pos)
        cls_scores, masks, attn_mask = self._predict_masks(query, mask_features, memories[0].shape[-2:])
        all_cls, all_masks = [cls_scores], [masks]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % levels
            attn_mask = attn_mask.clone()
            attn_mask[attn_mask.all(dim=-1)] = False  # a query masked everywhere attends everywhere
            query = layer(query, keys[level], query_pos, key_positions[level], attn_mask)
            cls_scores, masks, attn_mask = self._predict_masks(query, mask_features,
                                                               memories[(i + 1) % levels].shape[-2:])
            all_cls.append(cls_scores)
            all_masks.append(masks)
        return all_cls, all_masks

    def predict(self, feats: list[torch.Tensor], queries: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """B × K × H × W scores at `size`: Σ_q softmax(class_q)[:K] · sigmoid(mask_q), from the last layer."""
        all_cls, all_masks = self(feats, queries)
        masks = F.interpolate(all_masks[-1], size=size, mode="bilinear", align_corners=False)
        return torch.einsum("bqc,bqhw->bchw", all_cls[-1].softmax(-1)[..., :-1], masks.sigmoid())
