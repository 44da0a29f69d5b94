"""Evaluating an adapter on one split: prepared samples → harness normalization → inference → confusion matrix."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .adapters import Adapter
from .data import SegmentationSplit
from .distributed import ProcessGroup
from .errors import RsdgError
from .inference import checked_forward, predict_logits
from .metrics import ConfusionAccumulator
from .task_schema import Task


def _single(batch: list[dict]) -> dict:
    return batch[0]


def evaluate_split(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                   num_workers: int = 0, progress: bool = True, group: ProcessGroup = ProcessGroup(),
                   window_batch: int = 1) -> torch.Tensor:
    """The K×K int64 confusion matrix of `adapter` over every sample of `split`.

    Under torchrun each rank takes its exact shard and the matrices are summed, so every rank returns the
    matrix of the whole split.
    """
    contract = adapter.input_contract()
    num_classes = task.class_schema.num_classes
    forward = checked_forward(adapter.predict, num_classes, contract.size_divisor, adapter.name)
    accumulator = ConfusionAccumulator(num_classes)
    loader = DataLoader(Subset(split, group.shard(len(split))), batch_size=1, num_workers=num_workers,
                        collate_fn=_single)
    adapter.eval()
    failure: Exception | None = None
    try:
        with torch.inference_mode():
            for sample in tqdm(loader, desc=f"eval {split.ref.slug}", unit="img", leave=False,
                               disable=not (progress and group.is_main)):
                image = sample["image"][None].to(device)
                x = contract.prepare(image, split.band_names, where=f"{split.ref.slug} sample {sample['sample_id']}",
                                     replicate_single_band=task.inputs.replicate_single_band)
                scores = predict_logits(forward, x, task.inference, num_classes, window_batch)
                accumulator.update(sample["label"], scores.argmax(dim=1)[0].to(torch.uint8).cpu())
    except Exception as exc:  # shared with the other ranks below, then re-raised
        failure = exc
    if group.any(failure is not None):
        if failure is not None:
            raise failure
        raise RsdgError(f"another process of this distributed run failed on {split.ref.slug}",
                        "see that process's output above")
    return group.sum(accumulator.matrix)
