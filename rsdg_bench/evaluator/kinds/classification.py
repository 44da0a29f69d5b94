"""`classification`: one class per image through `Adapter.classify`; an image adds one count to cell
(label, prediction), and its group (country, area) gives per-place accuracies from the same per-image
matrices."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rsdg_bench.protocol.kind import SampleNormalizer, SampleScorer, TaskKind, register_kind

if TYPE_CHECKING:
    import torch

    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.protocol.task_data import SegmentationSplit
    from rsdg_bench.protocol.task_schema import Task


@register_kind
class Classification(TaskKind):
    name = "classification"
    summary = "one class per image"
    entry_point = "classify"
    per_pixel_map = False
    grouped = True
    losses = frozenset({"ce"})
    selection_metric = "oa"

    def scorer(self, adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
               prepare: SampleNormalizer, window_batch: int = 1) -> SampleScorer:
        from rsdg_bench.evaluator.evaluation import checked_classify
        from rsdg_bench.evaluator.inference import class_indices

        classify = checked_classify(adapter.classify, task.class_schema.num_classes, adapter.name)

        def score_image(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
            logits = classify(prepare(sample["image"][None], sample))
            return sample["label"].reshape(1), class_indices(logits, 1, adapter.name, mark_non_finite=True)

        return score_image

    def map_predictor(self, adapter: Adapter) -> Callable[[torch.Tensor], torch.Tensor]:
        """The B×K scores spread over the image."""

        def spread(x: torch.Tensor) -> torch.Tensor:
            return adapter.classify(x)[:, :, None, None].expand(-1, -1, *x.shape[-2:])

        return spread
