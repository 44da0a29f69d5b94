"""DAFormer's decode head (Hoyer et al., CVPR 2022) in plain PyTorch, with mmseg/mmcv's parameter names.

Structure (DAFormer `daformer_sepaspp_mitb5` config): one linear embedding per encoder stage
(`embed_layers.<i>.proj`), all upsampled bilinearly to the stride-4 map and concatenated; a fusion of
depthwise-separable ASPP branches (`fuse_layer.aspp_modules`: a 1×1 conv, then 3×3 depthwise + 1×1
pointwise at dilations 6, 12, 18; every conv followed by BN and ReLU) and a 3×3 `bottleneck`; then
dropout and a 1×1 classifier `conv_seg`. The names are mmcv's `ConvModule` (`conv`, `bn`) and
`DepthwiseSeparableConvModule` (`depthwise_conv`, `pointwise_conv`), so an mmseg checkpoint's
`decode_head.*` keys load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """mmcv ConvModule with BN and ReLU: `conv` (no bias, as a norm follows) → `bn` → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SeparableConvBNReLU(nn.Module):
    """mmcv DepthwiseSeparableConvModule: a depthwise 3×3 ConvModule, then a pointwise 1×1 ConvModule."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNReLU(in_channels, in_channels, 3, dilation=dilation, groups=in_channels)
        self.pointwise_conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class SeparableASPP(nn.Module):
    """DAFormer's `ASPPWrapper(sep=True, pool=False)`: parallel branches, concatenated, then a 3×3 bottleneck."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1) if d == 1 else SeparableConvBNReLU(in_channels, channels, d)
            for d in dilations)
        self.bottleneck = ConvBNReLU(len(dilations) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


class LinearEmbed(nn.Module):
    """SegFormer's MLP: a per-pixel linear projection named `proj`."""

    def __init__(self, in_channels: int, embed_dims: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        out = self.proj(x.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(batch, -1, height, width)


class DAFormerHead(nn.Module):
    """Stage features (strides 4, 8, 16, 32) → logits at stride 4."""

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, channels: int = 256, embed_dims: int = 256,
                 dilations: tuple[int, ...] = (1, 6, 12, 18), dropout: float = 0.1) -> None:
        super().__init__()
        self.embed_layers = nn.ModuleDict({str(i): LinearEmbed(c, embed_dims) for i, c in enumerate(in_channels)})
        self.fuse_layer = SeparableASPP(len(in_channels) * embed_dims, channels, dilations)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = []
        for i, feature in enumerate(features):
            out = self.embed_layers[str(i)](feature)
            if out.shape[2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            embedded.append(out)
        return self.conv_seg(self.dropout(self.fuse_layer(torch.cat(embedded, dim=1))))
