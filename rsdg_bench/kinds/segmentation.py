"""`segmentation`: one H×W label map per sample, predicted by `Adapter.predict` through the task's inference
(windows, resize, TTA); `change_detection` is the same with the bi-temporal pair stacked as bands
(`t1_*`, `t2_*`) and the change class as the headline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import SampleNormalizer, SampleScorer, TaskKind
from .registry import register_kind

if TYPE_CHECKING:
    import torch

    from ..adapters import Adapter
    from ..data import SegmentationSplit
    from ..task_schema import Task


@register_kind
class Segmentation(TaskKind):
    name = "segmentation"
    summary = "one class per pixel"
    entry_point = "predict"

    def scorer(self, adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
               prepare: SampleNormalizer, window_batch: int = 1) -> SampleScorer:
        from ..inference import checked_forward, class_indices, predict_logits

        num_classes = task.class_schema.num_classes
        forward = checked_forward(adapter.predict, num_classes, adapter.input_contract().size_divisor, adapter.name)

        def score_map(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
            scores = predict_logits(forward, prepare(sample["image"][None], sample), task.inference, num_classes,
                                    window_batch)
            return sample["label"], class_indices(scores, dim=1)[0].cpu()

        return score_map

    def map_predictor(self, adapter: Adapter) -> Callable[[torch.Tensor], torch.Tensor]:
        return adapter.predict


@register_kind
class ChangeDetection(Segmentation):
    name = "change_detection"
    summary = "change / no change per pixel of a bi-temporal pair (stacked as bands)"
