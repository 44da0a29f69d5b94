"""CrossEarth's backbone: a DINOv2 ViT with patch size 16 and a LoRA "Rein" after every block.

The ViT itself is timm's `VisionTransformer` (DINOv2 layout: class token, layer scale, LayerNorm eps 1e-6);
its parts are held directly on this module so the keys are CrossEarth's (`cls_token`, `pos_embed`,
`patch_embed.proj.*`, `blocks.N.*`, `norm.*`, `mask_token`). `mask_token` and `norm` exist in every
CrossEarth checkpoint but play no part in inference: the features are taken without the final norm.

Reins (Wei et al., "Stronger, Fewer, & Superior", CVPR 2024) refine the tokens after each block with a
set of learnable tokens: the patch tokens attend (scaled softmax) over the layer's tokens, the attended
token projections (all but the first token) are added to the features, passed through a linear layer,
scaled by a learned scalar and added back. In the LoRA variant each layer's tokens are the product of a
`token_length × lora_dim` and a `lora_dim × embed_dim` matrix. The same tokens, pooled over layers (max,
mean and the last layer, concatenated per channel and merged), become the Mask2Former head's queries.

Outputs: four maps from blocks `out_indices` (all at stride 16), rescaled bilinearly by ×4, ×2, ×1 and
×0.5 to stand in for strides 4, 8, 16 and 32, as CrossEarth's DINOv2 wrapper does; and the queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from rsdg_bench.base.errors import AdapterError

FEATURE_SCALES = (4.0, 2.0, 1.0, 0.5)


@dataclass(frozen=True)
class ReinsViTConfig:
    """Sizes of the backbone; the defaults are CrossEarth's DINOv2-L with LoRA Reins at 512 px."""

    img_size: int = 512
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    init_values: float = 1e-5
    out_indices: tuple[int, ...] = (7, 11, 15, 23)
    token_length: int = 100
    lora_dim: int = 16
    query_dims: int = 256


class LoRAReins(nn.Module):
    """Per-layer learnable tokens (low-rank) that refine the ViT tokens and also yield the head's queries."""

    def __init__(self, num_layers: int, embed_dims: int, token_length: int, lora_dim: int, query_dims: int,
                 patch_size: int) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.scale = nn.Parameter(torch.tensor(1e-3))
        self.learnable_tokens_a = nn.Parameter(torch.empty(num_layers, token_length, lora_dim))
        self.learnable_tokens_b = nn.Parameter(torch.empty(num_layers, lora_dim, embed_dims))
        self.mlp_token2feat = nn.Linear(embed_dims, embed_dims)
        self.mlp_delta_f = nn.Linear(embed_dims, embed_dims)
        self.transform = nn.Linear(embed_dims, query_dims)
        self.merge = nn.Linear(query_dims * 3, query_dims)
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + math.sqrt(embed_dims * lora_dim)))
        nn.init.uniform_(self.learnable_tokens_a, -bound, bound)
        nn.init.uniform_(self.learnable_tokens_b, -bound, bound)

    def tokens(self, layer: int) -> torch.Tensor:
        """The layer's tokens, token_length × embed_dims."""
        return self.learnable_tokens_a[layer] @ self.learnable_tokens_b[layer]

    def refine(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """B × (1 + N) × C tokens after block `layer` → refined tokens; the class token passes unchanged."""
        cls_token, feats = x[:, :1], x[:, 1:]
        tokens = self.tokens(layer)
        attn = torch.einsum("bnc,mc->bnm", feats, tokens) * self.embed_dims ** -0.5
        attn = attn.softmax(dim=-1)
        delta = torch.einsum("bnm,mc->bnc", attn[:, :, 1:], self.mlp_token2feat(tokens[1:]))
        delta = self.mlp_delta_f(delta + feats) * self.scale
        return torch.cat([cls_token, feats + delta], dim=1)

    def queries(self) -> torch.Tensor:
        """token_length × query_dims queries: per channel, the max, mean and last-layer value over layers."""
        per_layer = self.transform(self.learnable_tokens_a @ self.learnable_tokens_b)  # L × M × Q
        per_layer = per_layer.permute(1, 2, 0)  # M × Q × L
        pooled = torch.stack([per_layer.amax(dim=-1), per_layer.mean(dim=-1), per_layer[..., -1]], dim=-1)
        return self.merge(pooled.flatten(-2))


class ReinsDinoBackbone(nn.Module):
    """DINOv2 ViT + LoRA Reins → (four multi-scale maps, Rein queries)."""

    def __init__(self, config: ReinsViTConfig) -> None:
        super().__init__()
        self.config = config
        vit = VisionTransformer(img_size=config.img_size, patch_size=config.patch_size, embed_dim=config.embed_dim,
                                depth=config.depth, num_heads=config.num_heads, mlp_ratio=4.0, qkv_bias=True,
                                init_values=config.init_values, num_classes=0)
        assert vit.cls_token is not None and vit.pos_embed is not None  # timm's default: both, as DINOv2 has
        self.cls_token = vit.cls_token
        self.pos_embed = vit.pos_embed
        self.mask_token = nn.Parameter(torch.zeros(1, config.embed_dim))  # for masked training only
        self.patch_embed = vit.patch_embed
        self.blocks = vit.blocks
        self.norm = vit.norm  # CrossEarth's features skip the final norm; kept for its keys
        self.reins = LoRAReins(config.depth, config.embed_dim, config.token_length, config.lora_dim,
                               config.query_dims, config.patch_size)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """The position embedding for a rows × cols token grid, resized as DINOv2 does when it differs
        from the training grid: bicubic with scale factor (n + 0.1) / M per axis."""
        pos: torch.Tensor = self.pos_embed
        grid = int(math.sqrt(pos.shape[1] - 1))
        if rows == cols == grid:
            return pos
        pos = pos.float()
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid), mode="bicubic")
        if tuple(patch_pos.shape[-2:]) != (rows, cols):
            raise AdapterError(f"cannot resize the {grid}×{grid} position embedding to {rows}×{cols} tokens")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The refined patch tokens of the `out_indices` blocks as B × C × H/16 × W/16 maps (no final norm)."""
        batch, _, height, width = x.shape
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise AdapterError(f"CrossEarth's ViT needs input sides that are multiples of {patch}, got {height}×{width}")
        rows, cols = height // patch, width // patch
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1) + self.position_embedding(rows, cols)
        maps = []
        for index, block in enumerate(self.blocks):
            tokens = self.reins.refine(block(tokens), index)
            if index in self.config.out_indices:
                maps.append(tokens[:, 1:].transpose(1, 2).reshape(batch, -1, rows, cols))
        return maps

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = [m if s == 1.0 else F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)
                    for m, s in zip(self.stage_maps(x), FEATURE_SCALES, strict=True)]
        return features, self.reins.queries()
