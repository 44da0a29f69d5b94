"""TorchGeo, both ways (the `torchgeo` extra: `pip install "rsdg-bench[torchgeo]"`).

- `torchgeo_dataset(task, split)`: a prepared split as a TorchGeo `NonGeoDataset`, samples in TorchGeo's keys
  (`image` as float32 in the stored units with the task's band selection; `mask` as int64 for per-pixel kinds,
  `label` for per-image ones; 255 stays the ignore index), with TorchGeo-style `transforms` (a callable on the
  sample dict, e.g. a `kornia` augmentation wrapper), so TorchGeo's samplers, data modules and trainers take
  rsdg-bench's data. The task's door stays shut: for training only its source and selection splits open.
- `score_torchgeo(predict, dataset, task)`: any map-style dataset of TorchGeo samples (`image`, `mask`) scored
  in place, without copying or preparing it, by the harness's own metric engine under the task's classes,
  headline classes and convention. These are numbers, not a result record: nothing identifies the data's
  version (no manifest, no hashes), so they can never reach a leaderboard; `rsdg-bench prepare` and `run` make
  records.

TorchGeo is imported on first use of this module (about 9 s: it loads Lightning and kornia); nothing else in
rsdg-bench imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchgeo.datasets import NonGeoDataset

from rsdg_bench.api import load_task, open_split
from rsdg_bench.base.errors import AdapterError, DataError
from rsdg_bench.evaluator.class_map import first_max_classes
from rsdg_bench.protocol.kind import get_kind
from rsdg_bench.protocol.split_dataset import SplitDataset
from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.records.results import metrics_block
from rsdg_bench.scoring.metrics import confusion_counts

Transforms = Callable[[dict[str, Any]], dict[str, Any]]


class PreparedSplitDataset(NonGeoDataset):
    """One prepared split of a task as a TorchGeo dataset (see the module docstring for the sample keys)."""

    def __init__(self, split: SplitDataset, per_pixel: bool, transforms: Transforms | None = None) -> None:
        self.split = split
        self.target_key = "mask" if per_pixel else "label"
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stored = self.split[index]
        sample: dict[str, Any] = {"image": stored["image"].float(), self.target_key: stored["label"].long(),
                                  "sample_id": stored["sample_id"]}
        if "days" in stored:
            sample["days"] = stored["days"]
        return self.transforms(sample) if self.transforms is not None else sample


def torchgeo_dataset(task: Task | str, split: str = "source", *, data_root: Path | str | None = None,
                     for_training: bool = True, transforms: Transforms | None = None,
                     limit: int | None = None) -> PreparedSplitDataset:
    """A prepared split of `task` as a TorchGeo `NonGeoDataset`. `split`: `source`, `select`, `target` or a
    split's slug; with `for_training` (the default) a target split is refused, as `open_split` refuses it."""
    task = load_task(task) if isinstance(task, str) else task
    inner = open_split(task, split, data_root=data_root, for_training=for_training, limit=limit)
    return PreparedSplitDataset(inner, get_kind(task.kind).per_pixel_map, transforms)


def score_torchgeo(predict: Callable[[torch.Tensor], torch.Tensor], dataset: Any, task: Task | str, *,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """The task's metrics of `predict` on a TorchGeo segmentation dataset, read in place.

    Each sample's `image` (C×H×W, as the dataset and its transforms give it: normalize in `predict` or in the
    transforms) goes through `predict` as a batch of one; it returns logits (1×K×H×W: the class map is
    `argmax`'s, a NaN or Inf score is an error) or a class map (1×H×W, integers in [0, K)). `mask` holds the
    task's class indices, 255 ignored; any other value is an error that names it. Returns the record's metrics
    block (headline metrics under the task's convention and the others, per class) and the confusion matrix."""
    task = load_task(task) if isinstance(task, str) else task
    if not get_kind(task.kind).per_pixel_map:
        raise DataError(f"task {task.id} is a {task.kind} task; score_torchgeo scores per-pixel masks",
                        "pick a segmentation task")
    k = task.class_schema.num_classes
    matrix = np.zeros((k, k), dtype=np.int64)
    ignored = np.zeros(k, dtype=np.int64)
    device = torch.device(device)
    with torch.inference_mode():
        for index in range(len(dataset)):
            sample = dataset[index]
            if "mask" not in sample or "image" not in sample:
                raise DataError(f"sample {index} of the dataset has no {'mask' if 'image' in sample else 'image'}",
                                "give a TorchGeo segmentation dataset (samples with `image` and `mask`)")
            output = predict(sample["image"][None].to(device))
            classes = _class_map(output, k, index)
            label = sample["mask"].reshape(classes.shape).to(torch.uint8).cpu()
            counts, on_ignored = confusion_counts(label, classes.cpu(), k)
            matrix += counts
            ignored += on_ignored
    block = metrics_block(matrix, task.class_schema.names, task.headline_class_indices(), convention=task.metrics.convention,
                          ignored=ignored.tolist())
    return {**block, "confusion_matrix": matrix.tolist()}


def _class_map(output: torch.Tensor, k: int, index: int) -> torch.Tensor:
    """H×W uint8 classes of one sample from logits (1×K×H×W) or a class map (1×H×W)."""
    if output.is_floating_point():
        if output.ndim != 4 or output.shape[:2] != (1, k):
            raise AdapterError(f"sample {index}: logits of shape {tuple(output.shape)}, not 1×{k}×H×W")
        classes, finite = first_max_classes(output[0], dim=0)
        if not finite:
            raise AdapterError(f"sample {index}: the model returned NaN or Inf scores", "check the model and its input")
        return classes
    if output.ndim != 3 or output.shape[0] != 1:
        raise AdapterError(f"sample {index}: a class map of shape {tuple(output.shape)}, not 1×H×W")
    if output.numel() and (int(output.min()) < 0 or int(output.max()) >= k):
        raise AdapterError(f"sample {index}: predicted classes outside [0, {k})")
    return output[0].to(torch.uint8)
