"""Evaluating an adapter on one split: prepared samples → harness normalization → inference → confusion matrix."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .adapters import Adapter
from .data import SegmentationSplit
from .inference import checked_forward, predict_logits
from .metrics import ConfusionAccumulator
from .task_schema import Task


def _single(batch: list[dict]) -> dict:
    return batch[0]


def evaluate_split(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                   num_workers: int = 0, progress: bool = True) -> torch.Tensor:
    """The K×K int64 confusion matrix of `adapter` over every sample of `split`."""
    contract = adapter.input_contract()
    num_classes = task.class_schema.num_classes
    forward = checked_forward(adapter.predict, num_classes, contract.size_divisor, adapter.name)
    accumulator = ConfusionAccumulator(num_classes)
    loader = DataLoader(split, batch_size=1, num_workers=num_workers, collate_fn=_single)
    adapter.eval()
    with torch.inference_mode():
        for sample in tqdm(loader, desc=f"eval {split.ref.slug}", unit="img", disable=not progress, leave=False):
            image = sample["image"][None].to(device)
            x = contract.prepare(image, split.band_names, where=f"{split.ref.slug} sample {sample['sample_id']}")
            scores = predict_logits(forward, x, task.inference, num_classes)
            accumulator.update(sample["label"], scores.argmax(dim=1)[0].to(torch.uint8).cpu())
    return accumulator.matrix
