"""The metric engine: int64 confusion matrices, and the metrics pinned in DESIGN.md computed from them.

Semantics (the same as mmseg's IoUMetric, with exact integer counts):

- one confusion matrix per target split, accumulated over the whole split; rows = ground truth,
  columns = prediction; pixels whose label is the ignore index (255) are dropped;
- IoU_c = CM[c,c] / (row_c + col_c − CM[c,c]); a class absent from both ground truth and prediction
  is NaN and left out of every mean; a class predicted but absent from the ground truth scores 0;
- OA = trace / total; AA = mean per-class recall (recall is NaN for a class absent from the ground truth);
- F1_c = 2·CM[c,c] / (row_c + col_c) (mmseg's Dice; NaN only when the class is absent from both);
- mIoU, AA and mF1 average over the task's headline classes (`metrics.classes`); OA counts every pixel.
- Classification counts each image as one "pixel", so OA is the accuracy. With each image's group
  (country) known, `domain_acc` is the mean of the groups' accuracies and `worst_domain_acc` the lowest
  (`results.group_accuracy`).

The fast path builds `label·K + pred` in int16 (int32 for K > 127) and counts it with one bincount.
Ignored pixels land in bins past K², so no mask pass is needed, and labels that are neither a class nor
the ignore index land in bins that are checked and reported, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .classes import IGNORE_INDEX
from .errors import DataError

METRIC_NAMES = ("miou", "oa", "aa", "mf1")
# Per-place accuracy of a split whose samples name their group (classification): mean over groups, worst group.
GROUP_METRIC_NAMES = ("domain_acc", "worst_domain_acc")


def _as_tensor(array: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array


def confusion_matrix(label: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray,
                     num_classes: int) -> torch.Tensor:
    """K×K int64 confusion matrix of one batch (any shape, same for both).

    `label` holds class indices or 255 (ignore); `pred` holds class indices in [0, K). Any other label
    value raises :class:`DataError`; a prediction outside [0, K) raises ValueError.
    """
    label, pred = _as_tensor(label), _as_tensor(pred)
    if label.shape != pred.shape:
        raise ValueError(f"label shape {tuple(label.shape)} and prediction shape {tuple(pred.shape)} differ")
    k = num_classes
    if label.dtype != torch.uint8:
        if label.numel() and (int(label.min()) < 0 or int(label.max()) > IGNORE_INDEX):
            raise DataError(f"label values must lie in 0..{IGNORE_INDEX}, got {int(label.min())}..{int(label.max())}")
        label = label.to(torch.uint8)
    if pred.numel():
        low, high = torch.aminmax(pred)
        if int(low) < 0 or int(high) >= k:
            raise ValueError(f"predictions must lie in [0, {k}), got {int(low)}..{int(high)}")
    index_dtype = torch.int16 if k <= 127 else torch.int32
    index = label.reshape(-1).to(index_dtype) * k + pred.reshape(-1).to(index_dtype)
    counts = torch.bincount(index, minlength=(IGNORE_INDEX + 1) * k)
    stray = counts[k * k: IGNORE_INDEX * k]
    if stray.any():
        values = sorted({int(v) // k for v in torch.nonzero(stray).flatten() + k * k})
        raise DataError(f"label values {values} are neither one of the {k} classes nor the ignore index {IGNORE_INDEX}",
                        "the prepared labels do not match the task's class schema; check the dataset's label map")
    return counts[: k * k].reshape(k, k).to(torch.int64)


class ConfusionAccumulator:
    """Sums confusion matrices over a whole split (dataset-level accumulation, not per image)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, label: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> None:
        self.matrix += confusion_matrix(label, pred, self.num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Headline metrics and per-class values; NaN marks a class with nothing to measure."""

    miou: float
    oa: float
    aa: float
    mf1: float
    iou: np.ndarray
    f1: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray

    def headline(self) -> dict[str, float]:
        return {"miou": self.miou, "oa": self.oa, "aa": self.aa, "mf1": self.mf1}

    def per_class(self, class_names: list[str]) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "iou": float(self.iou[i]), "f1": float(self.f1[i]), "recall": float(self.recall[i]),
                "precision": float(self.precision[i]), "gt_pixels": int(self.gt_pixels[i]),
                "pred_pixels": int(self.pred_pixels[i]),
            }
            for i, name in enumerate(class_names)
        }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores_from_confusion(matrix: torch.Tensor | np.ndarray, headline_classes: list[int] | None = None
                          ) -> SegmentationScores:
    """All segmentation metrics from one K×K confusion matrix (rows = ground truth)."""
    cm = np.asarray(matrix, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("confusion matrix has negative counts")
    tp = np.diag(cm).astype(np.float64)
    gt = cm.sum(axis=1).astype(np.float64)
    pred = cm.sum(axis=0).astype(np.float64)
    iou = _ratio(tp, gt + pred - tp)
    recall = _ratio(tp, gt)
    precision = _ratio(tp, pred)
    f1 = _ratio(2 * tp, gt + pred)
    selected = np.arange(cm.shape[0]) if headline_classes is None else np.asarray(headline_classes)
    total = cm.sum()
    return SegmentationScores(
        miou=_nanmean(iou[selected]), oa=float(tp.sum() / total) if total else math.nan,
        aa=_nanmean(recall[selected]), mf1=_nanmean(f1[selected]),
        iou=iou, f1=f1, recall=recall, precision=precision,
        gt_pixels=cm.sum(axis=1), pred_pixels=cm.sum(axis=0),
    )
