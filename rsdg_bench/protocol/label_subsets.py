"""The fixed share of a source split that a label-efficiency task trains on (`training.label_fraction`).

A sample is in the subset when its sample id's sha256 ranks among the lowest ceil(fraction × N) of the split
(at least one sample). The subset depends on the sample ids alone: the same on every machine and in every
process, whatever order the manifest lists them in, and nested (the 1 % subset lies inside the 10 % one), so
the label-efficiency curve of a model adds labels, never swaps them. The subset's own sha256 (of its sorted
ids) goes into the checkpoint, the resumable state's fingerprint and each record's `model.training`, so
two trainings on different subsets, or a resume over data whose subset changed, show as such.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from rsdg_bench.base.io import sha256_bytes


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
    if fraction == 1.0:
        return samples
    return max(1, math.ceil(Fraction(str(fraction)) * samples))  # exact: 0.07 × 100 is 7, not 8


def subset_sha256(sample_ids: Sequence[str]) -> str:
    """The identity of a subset: the sha256 of its sorted sample ids, one per line."""
    return sha256_bytes("\n".join(sorted(sample_ids)).encode())


def restrict_to_labelled(split: Any, fraction: float) -> dict[str, Any] | None:
    """Keep only the samples of `split` (its `rows`) that a training on `fraction` of the labels reads, in
    place; what was kept (fraction, count, of how many, the subset's sha256), or None when every sample is."""
    if fraction == 1.0:
        return None
    ids = [str(i) for i in split.rows["sample_id"]]
    keep = labelled_subset(ids, fraction)
    split.rows = split.rows.iloc[keep].reset_index(drop=True)
    return {"fraction": fraction, "samples": len(keep), "of": len(ids), "sha256": subset_sha256([ids[i] for i in keep])}
