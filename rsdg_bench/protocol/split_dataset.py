"""A prepared split as a torch `Dataset` proper, for code that checks `isinstance(x, torch.utils.data.Dataset)`:
what `rsdg_bench.open_split` returns. The harness itself reads `data.SegmentationSplit`, which needs no torch
until a sample is served (so `score` runs without it).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from rsdg_bench.protocol.task_data import SegmentationSplit


class SplitDataset(SegmentationSplit, Dataset[dict[str, Any]]):
    """`SegmentationSplit`, registered as a torch map-style `Dataset` (same samples, same attributes)."""
