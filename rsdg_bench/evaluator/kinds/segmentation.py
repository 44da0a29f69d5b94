"""`segmentation`: one H×W label map per sample, predicted by `Adapter.predict` through the task's inference
(windows, resize, TTA); `change_detection` is the same with the bi-temporal pair stacked as bands
(`t1_*`, `t2_*`) and the change class as the headline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rsdg_bench.protocol.kind import BatchScorer, SampleNormalizer, TaskKind, register_kind

if TYPE_CHECKING:
    import torch

    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.protocol.task_data import SegmentationSplit
    from rsdg_bench.protocol.task_schema import Task


@register_kind
class Segmentation(TaskKind):
    name = "segmentation"
    summary = "one class per pixel"
    entry_point = "predict"

    def batch_scorer(self, adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                     prepare: SampleNormalizer, window_batch: int = 1) -> BatchScorer:
        """Consecutive samples of one image size go through one forward pass (`run --batch-size`); a sample of
        another size starts a new pass. Predictions stay on the device, as uint8 class maps; there, a pixel
        whose scores were not finite is class K, which the evaluator's count refuses (`class_indices`)."""
        import torch

        from rsdg_bench.evaluator.inference import checked_forward, class_indices, predict_logits

        num_classes = task.class_schema.num_classes
        forward = checked_forward(adapter.predict, num_classes, adapter.input_contract().size_divisor, adapter.name,
                                  finite=False)  # checked on the scores by class_indices

        def score_batch(samples: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            scored: list[tuple[torch.Tensor, torch.Tensor]] = []
            for group in _runs_of_equal_size(samples):
                images = group[0]["image"][None] if len(group) == 1 else torch.stack([s["image"] for s in group])
                scores = predict_logits(forward, prepare(images, group[0]), task.inference, num_classes, window_batch)
                classes = class_indices(scores, 1, adapter.name, mark_non_finite=True)  # checked when counted
                scored += zip((s["label"] for s in group), classes, strict=True)
            return scored

        return score_batch

    def map_predictor(self, adapter: Adapter) -> Callable[[torch.Tensor], torch.Tensor]:
        return adapter.predict


@register_kind
class ChangeDetection(Segmentation):
    name = "change_detection"
    summary = "change / no change per pixel of a bi-temporal pair (stacked as bands)"


def _runs_of_equal_size(samples: list[dict]) -> list[list[dict]]:
    """The samples cut into runs of consecutive equal image shapes (order kept)."""
    runs: list[list[dict]] = []
    for sample in samples:
        if runs and runs[-1][0]["image"].shape == sample["image"].shape:
            runs[-1].append(sample)
        else:
            runs.append([sample])
    return runs
