"""What evaluating a split counts, and the split's scores under its task's definition: shared by `run` (which
counts a model's predictions), `score` (which counts prediction maps) and `train` (which selects a checkpoint by
the same numbers). Needs no torch: `score` and the record readers import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.scoring.metrics import SegmentationScores, scores_from_confusion
from rsdg_bench.scoring.sparse_counts import SparseCountRows


@dataclass(frozen=True)
class SplitCounts:
    """What evaluating a split counts, per sample in the split's order, held sparse (`SparseCountRows`):
    `per_image` (a K×K confusion matrix per sample, flattened; their sum is the split's matrix, and a
    bootstrap resamples them) and `ignored` (a K-vector per sample: predictions on pixels whose label is the
    ignore index, which only the smp convention's `ignored_pixels: error` scores)."""

    per_image: SparseCountRows
    ignored: SparseCountRows
    execution: dict[str, Any] | None = None  # threads, workers, batch size: how the counting ran (provenance)

    @classmethod
    def empty(cls, samples: int, num_classes: int) -> SplitCounts:
        return cls(SparseCountRows(samples, num_classes * num_classes), SparseCountRows(samples, num_classes))

    def put(self, index: int, matrix: np.ndarray, stray: np.ndarray) -> None:
        """Sample `index`'s counts, as `metrics.confusion_counts` returns them."""
        self.per_image.put(index, matrix)
        self.ignored.put(index, stray)

    def matrix(self) -> np.ndarray:
        """The split's K×K confusion matrix."""
        k = self.ignored.width
        return self.per_image.total().reshape(k, k)


def task_scores(task: Task, counts: SplitCounts) -> SegmentationScores:
    """A split's metrics as its task defines them: the task's headline classes and metric convention (with
    `ignored_pixels: error`, the predictions on ignore-labelled pixels too). What a record stores for the split
    (`results.metrics_block` recomputes the same from the record) and what model selection maximizes."""
    ignored = counts.ignored.total() if task.metrics.ignored_pixels == "error" else None
    return scores_from_confusion(counts.matrix(), task.headline_class_indices(), task.metrics.convention, ignored)
