"""Evaluating an adapter on one split: prepared samples → harness normalization → inference → confusion matrix.

Every task kind is scored by the same confusion-matrix engine (`metrics.py`); what one sample contributes
is the task kind's business (`rsdg_bench/kinds/`): this module normalizes, loops, counts and shares the
counts between processes, and holds the output checks the kinds wrap an adapter's entry points with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .adapters import Adapter, InputContract
from .data import SegmentationSplit
from .distributed import ProcessGroup
from .errors import AdapterError, RsdgError
from .inference import check_logits
from .kinds import get_kind
from .kinds.base import SampleScorer
from .metrics import confusion_counts
from .task_schema import Task


def _single(batch: list[dict]) -> dict:
    return batch[0]


def evaluate_split(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                   num_workers: int = 0, progress: bool = True, group: ProcessGroup = ProcessGroup(),
                   window_batch: int = 1) -> torch.Tensor:
    """The K×K confusion matrix of the split (see `evaluate_split_per_image`)."""
    return evaluate_split_per_image(adapter, split, task, device, num_workers, progress, group, window_batch).sum(0)


def evaluate_split_per_image(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                             num_workers: int = 0, progress: bool = True, group: ProcessGroup = ProcessGroup(),
                             window_batch: int = 1,
                             on_prediction: Callable[[dict, torch.Tensor], None] | None = None) -> torch.Tensor:
    """N×K×K int64: one confusion matrix per sample of `split` (see `evaluate_split_counts`)."""
    return evaluate_split_counts(adapter, split, task, device, num_workers, progress, group, window_batch,
                                 on_prediction).per_image


@dataclass(frozen=True)
class SplitCounts:
    """What evaluating a split counts, per sample in the split's order: `per_image` (N×K×K int64 confusion
    matrices; their sum is the split's matrix, and a bootstrap resamples them) and `ignored` (N×K int64
    predictions on pixels whose label is the ignore index, which only the smp convention's
    `ignored_pixels: error` scores)."""

    per_image: torch.Tensor
    ignored: torch.Tensor


def evaluate_split_counts(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                          num_workers: int = 0, progress: bool = True, group: ProcessGroup = ProcessGroup(),
                          window_batch: int = 1,
                          on_prediction: Callable[[dict, torch.Tensor], None] | None = None) -> SplitCounts:
    """Every sample of `split` scored (see `SplitCounts`).

    Under torchrun each rank fills the rows of its exact shard and the tensors are summed, so every rank
    returns the counts of the whole split. `on_prediction(sample, prediction)` sees each sample the main
    process evaluates (to keep a few predictions).
    """
    num_classes = task.class_schema.num_classes
    score = sample_scorer(adapter, split, task, device, window_batch)
    per_image = torch.zeros(len(split), num_classes, num_classes, dtype=torch.int64)
    ignored = torch.zeros(len(split), num_classes, dtype=torch.int64)
    indices = group.shard(len(split))
    loader = DataLoader(Subset(split.for_inference(), indices), batch_size=1, num_workers=num_workers,
                        collate_fn=_single, prefetch_factor=4 if num_workers else None,
                        pin_memory=device.type == "cuda")
    adapter.eval()
    failure: Exception | None = None
    try:
        with torch.inference_mode():
            for index, sample in zip(indices, tqdm(loader, desc=f"eval {split.ref.slug}", unit="img", leave=False,
                                                    disable=not (progress and group.is_main)), strict=True):
                label, prediction = score(sample)
                per_image[index], ignored[index] = confusion_counts(label, prediction, num_classes)
                if on_prediction is not None and group.is_main:
                    on_prediction(sample, prediction)
    except Exception as exc:  # shared with the other ranks below, then re-raised
        failure = exc
    except SystemExit as exc:  # an adapter that exits must not end the run as if it had succeeded
        failure = AdapterError(f"adapter {adapter.name} exited (SystemExit {exc.code!r}) while evaluating "
                               f"{split.ref.slug}", "an adapter must raise an exception, never call sys.exit()")
    if group.any(failure is not None):
        if failure is not None:
            raise failure
        raise RsdgError(f"another process of this distributed run failed on {split.ref.slug}",
                        "see that process's output above")
    return SplitCounts(group.sum(per_image), group.sum(ignored))


def sample_scorer(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                  window_batch: int = 1) -> SampleScorer:
    """The function that turns one sample into (label, prediction): the task kind's scorer, given the
    harness's normalization of the sample under the adapter's input contract."""
    contract = adapter.input_contract()

    def prepare(image: torch.Tensor, sample: dict) -> torch.Tensor:
        return contract.prepare(image.to(device), split.band_names, where=f"{split.ref.slug} sample {sample['sample_id']}",
                                replicate_single_band=task.inputs.replicate_single_band)

    return get_kind(task.kind).scorer(adapter, split, task, device, prepare, window_batch)


SeriesForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def checked_series_forward(predict_series: SeriesForward, num_classes: int, size_divisor: int, who: str
                           ) -> SeriesForward:
    """Wrap an adapter's `predict_series` with padding to `size_divisor`, cropping back and output checks:
    B×T×C×H×W and B×T day offsets → B×T×K×H×W logits."""

    def forward(x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        batch, frames, _, height, width = x.shape
        pad_h, pad_w = (-height) % size_divisor, (-width) % size_divisor
        padded = F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        logits = predict_series(padded, days)
        check_logits(logits, (batch, frames, num_classes, height + pad_h, width + pad_w), who, tuple(padded.shape),
                      "B×T×K×H×W logits, one map per date")
        return logits[..., :height, :width].float()

    return forward


def checked_classify(classify: Callable[[torch.Tensor], torch.Tensor], num_classes: int, who: str
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap an adapter's `classify` with output checks: B×C×H×W → B×K logits."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = classify(x)
        check_logits(logits, (x.shape[0], num_classes), who, tuple(x.shape), "B×K logits")
        return logits.float()

    return forward


def prepare_series(contract: InputContract, image: torch.Tensor, band_names: list[str], where: str) -> torch.Tensor:
    """Normalize a B×T×C×H×W batch frame by frame under the adapter's contract."""
    batch, frames = image.shape[:2]
    flat = contract.prepare(image.flatten(0, 1), band_names, where)
    return flat.reshape(batch, frames, *flat.shape[1:])
