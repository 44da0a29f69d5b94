"""The fixed share of a source split that a label-efficiency task trains on (`training.label_fraction`).

A sample is in the subset when its sample id's sha256 ranks among the lowest ceil(fraction × N) of the split
(at least one sample). The subset depends on the sample ids alone: the same on every machine and in every
process, whatever order the manifest lists them in, and nested (the 1 % subset lies inside the 10 % one), so
the label-efficiency curve of a model adds labels, never swaps them. The subset's own sha256 (of its sorted
ids) goes into the checkpoint, so a changed subset shows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from .io import sha256_bytes


def labelled_subset(sample_ids: Sequence[str], fraction: float) -> list[int]:
    """Indices (in split order) of the samples a training on `fraction` of the split's labels reads."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a label fraction is in (0, 1], not {fraction}")
    if fraction == 1.0:
        return list(range(len(sample_ids)))
    keep = labelled_count(len(sample_ids), fraction)
    ranked = sorted(range(len(sample_ids)), key=lambda i: (hashlib.sha256(sample_ids[i].encode()).digest(), i))
    return sorted(ranked[:keep])


def labelled_count(samples: int, fraction: float) -> int:
    """How many of a split's `samples` a training on `fraction` of its labels reads: ceil(fraction × N), at
    least one (so epochs over the subset, and the protocol's iteration count, follow from the count alone)."""
    return samples if fraction == 1.0 else max(1, math.ceil(fraction * samples))


def subset_sha256(sample_ids: Sequence[str]) -> str:
    """The identity of a subset: the sha256 of its sorted sample ids, one per line."""
    return sha256_bytes("\n".join(sorted(sample_ids)).encode())
