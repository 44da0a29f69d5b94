"""Evaluating an adapter on one split: prepared samples → harness normalization → inference → confusion matrix."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .adapters import Adapter
from .data import SegmentationSplit
from .distributed import ProcessGroup
from .errors import RsdgError
from .inference import checked_forward, predict_logits
from .metrics import confusion_matrix
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
    """N×K×K int64: one confusion matrix per sample of `split`, in the split's order (their sum is the
    split's matrix; per-image matrices are what a bootstrap over images resamples).

    Under torchrun each rank fills the rows of its exact shard and the tensors are summed, so every rank
    returns the matrices of the whole split. `on_prediction(sample, prediction)` sees each sample the main
    process evaluates (to keep a few predictions).
    """
    contract = adapter.input_contract()
    num_classes = task.class_schema.num_classes
    forward = checked_forward(adapter.predict, num_classes, contract.size_divisor, adapter.name)
    per_image = torch.zeros(len(split), num_classes, num_classes, dtype=torch.int64)
    indices = group.shard(len(split))
    loader = DataLoader(Subset(split, indices), batch_size=1, num_workers=num_workers, collate_fn=_single)
    adapter.eval()
    failure: Exception | None = None
    try:
        with torch.inference_mode():
            for index, sample in zip(indices, tqdm(loader, desc=f"eval {split.ref.slug}", unit="img", leave=False,
                                                    disable=not (progress and group.is_main)), strict=True):
                image = sample["image"][None].to(device)
                x = contract.prepare(image, split.band_names, where=f"{split.ref.slug} sample {sample['sample_id']}",
                                     replicate_single_band=task.inputs.replicate_single_band)
                scores = predict_logits(forward, x, task.inference, num_classes, window_batch)
                prediction = scores.argmax(dim=1)[0].to(torch.uint8).cpu()
                per_image[index] = confusion_matrix(sample["label"], prediction, num_classes)
                if on_prediction is not None and group.is_main:
                    on_prediction(sample, prediction)
    except Exception as exc:  # shared with the other ranks below, then re-raised
        failure = exc
    if group.any(failure is not None):
        if failure is not None:
            raise failure
        raise RsdgError(f"another process of this distributed run failed on {split.ref.slug}",
                        "see that process's output above")
    return group.sum(per_image)
