"""Whether a tensor of scores holds only finite values: the check every adapter output passes, shared by the
logits check (`inference`) and the class map (`class_map`), which imports numba and so is imported only where a
split is scored."""

from __future__ import annotations

import torch


def all_finite(values: torch.Tensor) -> bool:
    """No NaN or ±Inf in `values`: NaN reaches both extremes, so finite extremes mean every value is finite
    (`aminmax` takes a tenth of the time of `isfinite().all()`)."""
    if not values.numel():
        return True
    low, high = torch.aminmax(values)
    return bool(torch.isfinite(low) and torch.isfinite(high))
