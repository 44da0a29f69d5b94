"""mmseg's UPerHead (Xiao et al., UPerNet, ECCV 2018) with mmseg's parameter names, for MTP's checkpoints.

Pyramid pooling on the coarsest map (adaptive average pools of 1, 2, 3 and 6 cells, each a 1×1 conv-BN-ReLU,
upsampled back and concatenated with the map, then a 3×3 bottleneck), lateral 1×1 convs on the other
maps, a top-down path adding each upsampled coarser level, 3×3 FPN convs, all levels upsampled to the
finest and fused by a 3×3 conv, and a 1×1 classifier. Every upsampling is bilinear with
align_corners=False. smp's UPerNet differs (extra norms, names, align_corners=True) and cannot load these
weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """mmcv ConvModule with BN and ReLU: `conv` (no bias) then `bn`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    """Four maps (fine → coarse) → logits at the finest map's size."""

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, channels: int = 512,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.psp_modules = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBNReLU(in_channels[-1], channels, 1))
                                         for scale in pool_scales)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def _pyramid_pooling(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(module(x), x.shape[2:]) for module in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=False)]
        laterals.append(self._pyramid_pooling(inputs[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals, strict=False)]
        outs.append(laterals[-1])
        outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))
