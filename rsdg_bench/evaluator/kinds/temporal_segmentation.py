"""`temporal_segmentation`: a T×C×H×W series with its day offsets → T label maps through
`Adapter.predict_series`, every labelled date counted (a missing frame's label is all ignore, so it adds
nothing). An adapter that `peeks_at_labels` (CoDEX's oracle selection, an upper bound) is handed the
sample's labels here, and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rsdg_bench.protocol.kind import SampleNormalizer, SampleScorer, TaskKind, register_kind

if TYPE_CHECKING:
    import torch

    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.protocol.task_data import SegmentationSplit
    from rsdg_bench.protocol.task_schema import Task


@register_kind
class TemporalSegmentation(TaskKind):
    name = "temporal_segmentation"
    summary = "one class per pixel and date of a time series"
    entry_point = "predict_series"
    per_pixel_map = False  # a series is predicted whole, and has no single map to paint

    def scorer(self, adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
               prepare: SampleNormalizer, window_batch: int = 1) -> SampleScorer:
        import torch
        import torch.nn.functional as F

        from rsdg_bench.datasets.classes import IGNORE_INDEX
        from rsdg_bench.evaluator.evaluation import checked_series_forward
        from rsdg_bench.evaluator.inference import class_indices

        num_classes = task.class_schema.num_classes
        divisor = adapter.input_contract().size_divisor
        plain = checked_series_forward(adapter.predict_series, num_classes, divisor, adapter.name)

        def oracle_forward(label: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
            """An upper bound that chooses with the sample's labels, padded as the input is."""
            labels = label[None].to(device=device, dtype=torch.long)

            def predict(xp: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
                pad = (0, xp.shape[-1] - labels.shape[-1], 0, xp.shape[-2] - labels.shape[-2])
                return adapter.oracle_series(xp, days, F.pad(labels, pad, value=IGNORE_INDEX))

            return checked_series_forward(predict, num_classes, divisor, adapter.name)

        def score_series(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
            x = prepare(sample["image"], sample)[None]  # frames normalized as a batch → 1×T×C×H×W
            forward = oracle_forward(sample["label"]) if adapter.peeks_at_labels else plain
            logits = forward(x, sample["days"][None].to(device))
            return sample["label"], class_indices(logits, 2, adapter.name, mark_non_finite=True)[0]  # on the device

        return score_series

    def training_inputs(self, adapter: Adapter, task: Task, batch: dict[str, Any], band_names: list[str],
                        device: torch.device) -> tuple[torch.Tensor, ...]:
        from rsdg_bench.evaluator.evaluation import prepare_series

        x = prepare_series(adapter.input_contract(), batch["image"].to(device), band_names, task.source.slug)
        return x, batch["days"].to(device)

    def loss_view(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.flatten(0, 1), labels.flatten(0, 1)  # dates folded into the batch

    def map_predictor(self, adapter: Adapter) -> Callable[[torch.Tensor], torch.Tensor]:
        """Each image as a two-date series (the image and its mirror, 31 days apart); the first date's map."""
        import torch

        def series(x: torch.Tensor) -> torch.Tensor:
            dates = torch.stack([x, x.flip(-1)], dim=1)
            days = torch.tensor([[0, 31]], dtype=torch.int64, device=x.device).expand(x.shape[0], -1)
            return adapter.predict_series(dates, days)[:, 0]

        return series
