"""The convolutional blocks of U-TAE as CoDEX's MultiUTAE uses them, with the upstream parameter names.

Our implementation of the published blocks (Sainte Fare Garnot & Landrieu, U-TAE, ICCV 2021; CoDEX's
`models/networks/blocks.py` variant), written so the authors' state dicts load key for key:

- `ConvLayer`: 3×3 convolutions (reflect padding) each followed by an optional norm and a ReLU, also after
  the last one (so a CoDEX domain head's "logits" are ≥ 0). The upstream `ConvBlock` accepts a kernel size
  but never passes it on: its convolutions are always 3×3, and so are these.
- `ConvBlock`: a `ConvLayer` applied to every date of a B×T×C×H×W series; with a `pad_value`, a date whose
  input is entirely that value (a padded or missing date) is not computed and comes out as that value.
- `DownConvBlock`: a strided convolution, then a convolution and a residual one.
- `UpConvBlock`: a transposed convolution, the skip connection through a 1×1 convolution, then a
  convolution and a residual one, date by date.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]  # what torch's Conv2d accepts


def _norm(kind: str, channels: int, groups: int = 4) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(num_groups=groups, num_channels=channels)
    return None


class ConvLayer(nn.Module):
    """[conv k×k → norm → ReLU] for each consecutive pair of `widths` (`conv.<i>` as upstream)."""

    def __init__(self, widths: list[int], norm: str = "batch", k: int = 3, s: int = 1, p: int = 1,
                 last_relu: bool = True, padding_mode: PaddingMode = "reflect") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(d_in, d_out, kernel_size=k, stride=s, padding=p, padding_mode=padding_mode))
            norm_layer = _norm(norm, d_out)
            if norm_layer is not None:
                layers.append(norm_layer)
            if last_relu or index < len(widths) - 2:
                layers.append(nn.ReLU())
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TemporallyShared(nn.Module):
    """A 2-D block applied to every date of a series; dates that are entirely `pad_value` are skipped."""

    def __init__(self, pad_value: float | None = None) -> None:
        super().__init__()
        self.pad_value = pad_value

    def over_dates(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return self(x)
        batch, frames = x.shape[:2]
        flat = x.reshape(batch * frames, *x.shape[2:])
        padded = (flat == self.pad_value).flatten(1).all(dim=1) if self.pad_value is not None else None
        if padded is None or not padded.any():
            out = self(flat)
        else:
            computed = self(flat[~padded])
            out = computed.new_full((flat.shape[0], *computed.shape[1:]), float(self.pad_value or 0))  # not None: `padded`
            out[~padded] = computed
        return out.reshape(batch, frames, *out.shape[1:])


class ConvBlock(TemporallyShared):
    """A `ConvLayer` (`conv.conv.<i>`), 3×3 whatever kernel size a config names (see the module docstring)."""

    def __init__(self, widths: list[int], pad_value: float | None = None, norm: str = "batch",
                 last_relu: bool = True, padding_mode: PaddingMode = "reflect") -> None:
        super().__init__(pad_value)
        self.conv = ConvLayer(widths, norm=norm, last_relu=last_relu, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownConvBlock(TemporallyShared):
    def __init__(self, d_in: int, d_out: int, k: int, s: int, p: int, pad_value: float | None = None,
                 norm: str = "batch", padding_mode: PaddingMode = "reflect") -> None:
        super().__init__(pad_value)
        self.down = ConvLayer([d_in, d_in], norm=norm, k=k, s=s, p=p, padding_mode=padding_mode)
        self.conv1 = ConvLayer([d_in, d_out], norm=norm, padding_mode=padding_mode)
        self.conv2 = ConvLayer([d_out, d_out], norm=norm, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.down(x))
        return out + self.conv2(out)


class UpConvBlock(nn.Module):
    """Upsample B×T×C×h×w date by date and fuse the B×T×C_skip×H×W skip features."""

    def __init__(self, d_in: int, d_out: int, d_skip: int, k: int, s: int, p: int, norm: str = "batch",
                 padding_mode: PaddingMode = "reflect") -> None:
        super().__init__()
        self.skip_conv = nn.Sequential(nn.Conv2d(d_skip, d_skip, kernel_size=1), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(d_in, d_out, kernel_size=k, stride=s, padding=p), nn.ReLU())
        self.conv1 = ConvLayer([d_out + d_skip, d_out], norm=norm, padding_mode=padding_mode)
        self.conv2 = ConvLayer([d_out, d_out], norm=norm, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        up = self.up(x.reshape(batch * frames, *x.shape[2:]))
        fused = torch.cat([up, self.skip_conv(skip.reshape(batch * frames, *skip.shape[2:]))], dim=1)
        out = self.conv1(fused)
        out = out + self.conv2(out)
        return out.reshape(batch, frames, *out.shape[1:])
