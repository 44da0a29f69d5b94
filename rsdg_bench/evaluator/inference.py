"""Turning a normalized image batch into logits: optional resize, whole image or sliding window, flip TTA.

Sliding window follows mmseg's `slide_inference` exactly (the grid is `rsdg_bench.datasets.windows`: the last
window is clamped to the image edge; an image smaller than the crop is one window of its own size). Logits of overlapping
windows are summed and divided by the per-pixel window count. Windows are stacked into batches of
`window_batch` (a run setting, not part of the protocol: it cannot change a number; on CPU, 1 is as fast
as any, see bench/sliding_window.py).

Each forward pass pads its input on the bottom/right with zeros (the normalized mean) to the adapter's
size divisor and crops the logits back, so odd sizes work with any encoder. With TTA, the softmax
probabilities of the plain and flipped passes are averaged (mmseg's SegTTAModel); without it the raw
logits are returned. Outputs are checked: wrong shape, or NaN/Inf, is an AdapterError.

With `resize_long_side` S the image is first scaled as mmseg's `Resize(scale=(S, S), keep_ratio=True)`
does (factor S / long side, sizes rounded as mmcv rounds them), and each pass's scores are resized back
bilinearly to the input size before any softmax, as mmseg's `postprocess_result` does, so metrics are
computed against the labels at their own resolution. One difference remains: mmseg resizes the uint8
image and we resize the normalized float image, which skips a rounding to integers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.datasets.windows import window_grid
from rsdg_bench.evaluator.finite import all_finite
from rsdg_bench.protocol.task_schema import InferenceSpec

Forward = Callable[[torch.Tensor], torch.Tensor]


def checked_forward(predict: Forward, num_classes: int, size_divisor: int, who: str, finite: bool = True) -> Forward:
    """Wrap an adapter's predict with padding to `size_divisor`, cropping back, and output checks. `finite=False`
    leaves the NaN / Inf check to `class_indices`, which makes it on the final scores in the same pass: a
    non-finite logit stays non-finite through window averaging, resizing and softmax, except a −Inf, which
    is a probability of 0 under TTA and changes no class."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        pad_h, pad_w = (-height) % size_divisor, (-width) % size_divisor
        padded = F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        logits = predict(padded)
        check_logits(logits, (batch, num_classes, height + pad_h, width + pad_w), who, tuple(padded.shape),
                     "B×K×H×W logits", finite)
        return logits[:, :, :height, :width].float()

    return forward


def check_logits(logits: object, expected: tuple[int, ...], who: str, given: tuple[int, ...], form: str,
                 finite: bool = True) -> None:
    """Refuse what an adapter's entry point returned unless it is a floating-point tensor of the expected shape
    with finite values (unless `finite` is False): class indices, booleans or complex numbers would be scored
    as if they were scores."""
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise AdapterError(f"adapter {who} returned {got} for input {given}, expected {expected} ({form})",
                           "fix the adapter; `rsdg-bench adapter check` tests it")
    if logits.is_complex() or not logits.is_floating_point():
        raise AdapterError(f"adapter {who} returned {logits.dtype} logits, not floating-point scores ({form})",
                           "return the network's raw floating-point scores, not class indices or masks")
    if finite and not all_finite(logits):
        raise non_finite_error(who)


def non_finite_error(who: str) -> AdapterError:
    return AdapterError(f"adapter {who} returned NaN or Inf logits",
                        "check the checkpoint and the input normalization the adapter declares")


def counts_on_device(device: torch.device) -> bool:
    """Whether a split's confusion counts are made where its predictions are, a batch at a time with one copy
    to the host (`metrics.batch_confusion_counts`): on accelerators, where every wait for the device idles it.
    On the CPU the compiled per-image loops are faster (`class_map`, `pair_counts`)."""
    return device.type != "cpu"


def class_indices(scores: torch.Tensor, dim: int, who: str, mark_non_finite: bool = False) -> torch.Tensor:
    """The predicted class along `dim` as uint8: the first maximal score, exactly what `argmax` returns, ties
    included (`class_map`: one pass over the scores on the CPU). A NaN or Inf score is the adapter's error.

    `mark_non_finite` (the evaluator's batch count, where `counts_on_device`): nothing waits for the device to
    say whether the scores were finite; a pixel with a NaN or Inf score gets the class K instead (no class),
    and `metrics.batch_confusion_counts` finds it in the same count that makes the matrices, so the error is
    raised after the batch's one copy to the host instead of a wait per forward pass."""
    from rsdg_bench.evaluator.class_map import first_max_classes  # imports numba: only where a split is scored

    num_classes = scores.shape[dim]
    if mark_non_finite and counts_on_device(scores.device) and num_classes < 256:
        classes = scores.max(dim=dim).indices.to(torch.uint8)
        return classes.masked_fill_(~torch.isfinite(scores).all(dim=dim), num_classes)
    classes, finite = first_max_classes(scores, dim)
    if not finite:
        raise non_finite_error(who)
    return classes


def _slide(forward: Forward, x: torch.Tensor, num_classes: int, crop: int, stride: int, window_batch: int
           ) -> torch.Tensor:
    batch, _, height, width = x.shape
    windows = window_grid(height, width, crop, stride)
    if windows == [(0, height, 0, width)]:  # one window covers the image: nothing to accumulate or average
        return forward(x)
    logits = x.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = x.new_zeros((1, 1, height, width), dtype=torch.float32)
    # Windows of one image may differ in size only when the image is smaller than the crop on an
    # axis; then every window has that size, so windows always stack.
    for start in range(0, len(windows), window_batch):
        chunk = windows[start:start + window_batch]
        crops = torch.cat([x[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in chunk])
        out = forward(crops).reshape(len(chunk), batch, num_classes, *crops.shape[-2:])
        for (y0, y1, x0, x1), window_logits in zip(chunk, out, strict=True):
            logits[:, :, y0:y1, x0:x1] += window_logits
            count[:, :, y0:y1, x0:x1] += 1
    return logits / count


_FLIPS = {"hflip": (-1,), "vflip": (-2,)}


def keep_ratio_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """mmcv's `rescale_size` for scale (S, S) with keep_ratio: factor S / max(h, w), rounded half up."""
    factor = long_side / max(height, width)
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def predict_logits(forward: Forward, x: torch.Tensor, spec: InferenceSpec, num_classes: int,
                   window_batch: int = 1) -> torch.Tensor:
    """B×K×H×W scores for a normalized batch under `spec` (logits, or mean probabilities with TTA)."""

    def infer(inp: torch.Tensor) -> torch.Tensor:
        if spec.mode == "slide":
            assert spec.crop is not None and spec.stride is not None  # guaranteed by InferenceSpec
            return _slide(forward, inp, num_classes, spec.crop, spec.stride, window_batch)
        return forward(inp)

    def once(inp: torch.Tensor) -> torch.Tensor:
        if spec.resize_long_side is None:
            return infer(inp)
        height, width = inp.shape[-2:]
        scaled = _bilinear(inp, keep_ratio_size(height, width, spec.resize_long_side))
        return _bilinear(infer(scaled), (height, width))

    if not spec.tta:
        return once(x)
    probabilities = once(x).softmax(dim=1)
    for name in spec.tta:
        dims = _FLIPS[name]
        probabilities += once(x.flip(dims)).flip(dims).softmax(dim=1)
    return probabilities / (1 + len(spec.tta))
