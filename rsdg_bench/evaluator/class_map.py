"""The predicted class of every pixel, exactly `argmax`'s (the first maximal score), and whether every score
was finite, from one pass over the scores.

Why not torch's kernels on the CPU: `max(dim)` walks the classes with a branch per score, so on a 1024² map
of 7 classes from a real model (scores that vary from pixel to pixel, so the branch is unpredictable) it
takes about 22 ms, `argmax` about 125 ms, where one read of the 28 MiB of scores takes about 1.5 ms; and the
finiteness check is another full read (`aminmax`, about 1 ms). The loop below, compiled by numba, takes
`ROW` pixels at a time: their running maximum stays in the L1 cache, each class plane is read once and
the comparisons are vectorized (selects, no branch), and the check rides along: `v - v` is 0 for a finite
score and NaN for ±Inf or NaN, and a NaN added into the row's accumulator stays NaN. Measured on the 2-core
box: 1.9 ms for both, against 6 ms (constant scores) to 23 ms (varying scores) for `max` and `aminmax`.

Ties: a class replaces the running best only when strictly greater, so the first maximal class wins, as
`argmax` has it (−0.0 and +0.0 tie). No `fastmath` (`compiled`), which would fold `v - v` to 0.
This module imports numba (about 0.2 s), so it is imported where a split is scored, not at start-up.
On other devices (CUDA) torch's kernels are fast, and the same answer comes from `max().indices` and an
`aminmax`. Scores of another dtype than float32 also take that way, as they are: never cast, which could
create ties.
"""

from __future__ import annotations

import numpy as np
import torch

from rsdg_bench.base.compiled import compiled
from rsdg_bench.evaluator.finite import all_finite

ROW = 128  # pixels per step (fastest of 32 to 1024 on the box): the row's running maximum and class map stay in L1


def first_max_classes(scores: torch.Tensor, dim: int) -> tuple[torch.Tensor, bool]:
    """(uint8 class indices of `scores` along `dim`, the class dimension removed; True when every score is
    finite). Up to 256 classes."""
    dim = dim % scores.dim()
    classes = scores.shape[dim]
    if not 0 < classes <= 256:
        raise ValueError(f"{classes} classes along dim {dim}: a uint8 class map holds 1 to 256")
    kept = scores.shape[:dim] + scores.shape[dim + 1:]
    if scores.numel() == 0:
        return torch.empty(kept, dtype=torch.uint8, device=scores.device), True
    if scores.device.type != "cpu" or scores.dtype != torch.float32:
        return scores.max(dim=dim).indices.to(torch.uint8), all_finite(scores)
    planes = scores.detach().contiguous().view(int(np.prod(scores.shape[:dim])), classes, -1)
    out = torch.empty(kept, dtype=torch.uint8)
    finite = _first_max(planes.numpy(), out.view(planes.shape[0], -1).numpy())
    return out, bool(finite)


@compiled
def _update_row(plane, best, classes, accumulator, index):
    """One class plane of a row against the row's running best: strictly greater replaces (first max wins)."""
    for q in range(plane.shape[0]):
        value = plane[q]
        current = best[q]
        greater = np.uint8(value > current)
        best[q] = value if value > current else current
        classes[q] = classes[q] + greater * (np.uint8(index) - classes[q])
        accumulator[q] += value - value


@compiled
def _first_max(planes, out):
    """Fill `out` (images × pixels) from `planes` (images × classes × pixels); False when a score is not finite."""
    images, count, pixels = planes.shape
    best = np.empty(ROW, np.float32)
    accumulator = np.zeros(ROW, np.float32)
    for image in range(images):
        for start in range(0, pixels, ROW):
            stop = min(start + ROW, pixels)
            width = stop - start
            row_best = best[:width]
            row_classes = out[image, start:stop]
            row_best[:] = planes[image, 0, start:stop]
            row_classes[:] = 0
            for index in range(count):  # plane 0 again too: only its finiteness is new
                _update_row(planes[image, index, start:stop], row_best, row_classes, accumulator[:width], index)
    for q in range(ROW):
        if accumulator[q] != 0:
            return False
    return True

