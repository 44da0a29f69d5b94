"""Sample predictions kept by `run --save-predictions K`: image, ground truth and prediction as PNGs.

The image is a display preview (the first three stored bands, or the single band in grey, each stretched
between its 2nd and 98th percentile); label and prediction are painted in the class schema's colours,
ignore in black. Files go to `<results>/predictions/<task>/<record key>/`; the record lists them relative
to its own folder, so a results folder can move as a whole. Only what the main process evaluated is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rsdg_bench.base.io import atomic_write_bytes
from rsdg_bench.datasets.classes import IGNORE_INDEX, ClassSchema
from rsdg_bench.datasets.quicklook import png_bytes, preview

PREDICTIONS_DIR = "predictions"


def paint(classes: np.ndarray, schema: ClassSchema) -> np.ndarray:
    """H×W class indices (255 = ignore) → H×W×3 uint8 in the schema's colours."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:schema.num_classes] = [c.colour for c in schema.classes]
    palette[IGNORE_INDEX] = 0
    return palette[classes]


class PredictionSaver:
    """Writes the first `count` samples of one evaluated split."""

    def __init__(self, results_root: Path, task_id: str, key: str, schema: ClassSchema, count: int,
                 record_dir: Path) -> None:
        self.folder = Path(results_root) / PREDICTIONS_DIR / task_id / key
        self.schema = schema
        self.count = count
        self.record_dir = record_dir
        self.saved: list[dict[str, str]] = []

    def __call__(self, sample: dict, prediction: torch.Tensor) -> None:
        if len(self.saved) >= self.count:
            return
        stem = str(sample["sample_id"])
        files = {"image": preview(sample["image"].numpy()), "label": paint(sample["label"].numpy(), self.schema),
                 "prediction": paint(prediction.numpy(), self.schema)}
        entry = {"sample_id": stem}
        for kind, array in files.items():
            path = self.folder / f"{stem}_{kind}.png"
            atomic_write_bytes(path, png_bytes(array))
            entry[kind] = os.path.relpath(path, self.record_dir)
        self.saved.append(entry)
