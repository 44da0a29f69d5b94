"""Literal re-statements of upstream algorithms, kept slow and plain on purpose.

The tests and benchmarks check the harness's fast paths against these (bit for bit, or to float
rounding), so they follow the upstream code step by step rather than reuse anything of ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def mmseg_slide_inference(model: Callable[[torch.Tensor], torch.Tensor], img: torch.Tensor, num_classes: int,
                          crop: int, stride: int) -> torch.Tensor:
    """mmseg's `slide_inference`, one window at a time: summed window logits over the per-pixel count."""
    batch, _, h_img, w_img = img.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds = img.new_zeros((batch, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            crop_logit = model(img[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_logit, (x1, w_img - x2, y1, h_img - y2))
            count_mat[:, :, y1:y2, x1:x2] += 1
    return preds / count_mat


def utae_att_group_aggregation(x: torch.Tensor, attn_mask: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """U-TAE's `Temporal_Aggregator` in `att_group` mode as CoDEX runs it, per output date: resize the
    heads×B×T×T×h×w attention to the skip's size, zero padded dates, weight each head's channel group
    with a full B×T×T×C/heads product, then sum over the attended dates."""
    n_heads, b, t, _, h, w = attn_mask.shape
    attn = attn_mask.contiguous().view(n_heads * b * t, t, h, w)
    if x.shape[-2] > w:
        attn = torch.nn.Upsample(size=x.shape[-2:], mode="bilinear", align_corners=False)(attn)
    else:
        attn = torch.nn.AvgPool2d(kernel_size=w // x.shape[-2])(attn)
    attn = attn.view(n_heads, b, t, t, *x.shape[-2:])
    if pad_mask.any():
        attn = attn * (~pad_mask).float()[None, :, None, :, None, None]
    out = torch.stack(x.chunk(n_heads, dim=2))
    out = torch.einsum("nbtuhw, nbukhw -> nbtukhw", attn, out)
    out = out.sum(dim=3)
    return torch.cat([group for group in out], dim=2)
