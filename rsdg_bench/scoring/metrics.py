"""The metric engine: int64 confusion matrices, and the metrics pinned in DESIGN.md computed from them.

Semantics (the same as mmseg's IoUMetric, with exact integer counts):

- one confusion matrix per target split, accumulated over the whole split; rows = ground truth,
  columns = prediction; pixels whose label is the ignore index (255) are dropped;
- IoU_c = CM[c,c] / (row_c + col_c − CM[c,c]); a class absent from both ground truth and prediction
  is NaN and left out of every mean; a class predicted but absent from the ground truth scores 0;
- OA = trace / total; AA = mean per-class recall (recall is NaN for a class absent from the ground truth);
- F1_c = 2·CM[c,c] / (row_c + col_c) (mmseg's Dice; NaN only when the class is absent from both), so
  `mf1` is mmseg's mDice: a class with TP = 0 and some FP or FN scores 0 and counts in the mean;
- Fscore_c = 2·P_c·R_c / (P_c + R_c) from precision and recall, as mmseg's mFscore computes it (β = 1): the
  same number as F1_c where TP_c > 0, but NaN where TP_c = 0 (0/0, or a NaN precision or recall), so
  `mfscore` leaves every class the model never hit right out of its mean: never below `mf1`, NaN when no
  headline class was hit;
- mIoU, AA, mF1 and mFscore average over the task's headline classes (`metrics.classes`); OA counts every pixel.
- Classification counts each image as one "pixel", so OA is the accuracy. With each image's group
  (country) known, `domain_acc` is the mean of the groups' accuracies and `worst_domain_acc` the lowest
  (`results.group_accuracy`).

Conventions (`metrics.convention` of a task; the record keeps the matrices, so both are computed from them):

- `mmseg` (the default, above);
- `smp` (segmentation_models_pytorch's per-class functions with `zero_division=1`, as CromSS computes its
  numbers): a ratio whose denominator is 0 is 1, not NaN, and the means divide by the number of headline
  classes. With `ignored_pixels: error` (CromSS's DFC2020 run, which has no mask) pixels whose label is the
  ignore index still count: their predictions are false positives of the predicted class, and they are in
  OA's denominator. The predictions on ignored pixels are counted for that (`confusion_counts`).
- `codex` (CoDEX's `SCDMetric`, `metrics/scd_metrics.py`): a ratio whose denominator is 0 is 0 (a class
  absent from ground truth and prediction has IoU 0, a class absent from the ground truth recall 0), and the
  means divide by the number of headline classes. CoDEX reports no F1; F1 and precision follow the same rule.

Under `smp` and `codex` no ratio is NaN and Fscore_c = F1_c for every class, so there `mfscore` equals `mf1`:
with TP_c = 0 the formula gives 0 where one of P_c, R_c is 0 and the other is not (the empty ratio included),
and where P_c = R_c = 0 (0/0) smp's `f1_score`, computed from the counts, and CoDEX's zero rule both give 0;
a class absent from both scores the convention's empty ratio in each.

Counting puts each pixel in bin `label·K + pred`: uint8 maps on the CPU (what evaluation gives) in one
compiled pass (`pair_counts`), others by one `bincount` of that index built in int16 (int32 for K > 127).
Ignored pixels land in bins past K², so no mask pass is needed, and labels that are neither a class nor
the ignore index land in bins that are checked and reported, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where matrices are counted, so reading records needs no torch
    import torch

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.protocol.metric_table import CONVENTIONS, HEADLINE_NAMES, HEADLINE_RATES, PER_PLACE_NAMES

# The headline metrics of one matrix, and the per-place accuracies of a split whose samples name their group
# (classification): the metric table's names (`rsdg_bench.protocol.metric_table`)
METRIC_NAMES = HEADLINE_NAMES
GROUP_METRIC_NAMES = PER_PLACE_NAMES


def confusion_matrix(label: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """K×K int64 confusion matrix of one batch (any shape, same for both).

    `label` holds class indices or 255 (ignore); `pred` holds class indices in [0, K). Any other label
    value raises :class:`DataError`; a prediction outside [0, K) raises ValueError.
    """
    return confusion_counts(label, pred, num_classes)[0]


def confusion_counts(label: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K×K confusion matrix, K-vector of the predictions on pixels whose label is the ignore index), int64
    numpy arrays, from one count of the bins `label·K + pred`: the second is what the `smp` convention with
    `ignored_pixels: error` needs. NumPy maps are counted without torch (`score` needs none); tensors on
    another device are counted there and only the bins come back."""
    if label.shape != pred.shape:
        raise ValueError(f"label shape {tuple(label.shape)} and prediction shape {tuple(pred.shape)} differ")
    k = num_classes
    if isinstance(label, np.ndarray) and isinstance(pred, np.ndarray):
        counts = _numpy_bins(label, pred, k)
    else:
        counts = _torch_bins(label, pred, k)
    stray = counts[k * k: IGNORE_INDEX * k]
    if stray.any():
        values = sorted({int(v) // k for v in np.flatnonzero(stray) + k * k})
        raise DataError(f"label values {values} are neither one of the {k} classes nor the ignore index {IGNORE_INDEX}",
                        "the prepared labels do not match the task's class schema; check the dataset's label map")
    return counts[: k * k].reshape(k, k), counts[IGNORE_INDEX * k: (IGNORE_INDEX + 1) * k]


def batch_confusion_counts(labels: list[torch.Tensor], preds: list[torch.Tensor], num_classes: int
                           ) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """Per image, (K×K matrix, K predictions on ignore-labelled pixels) of a batch of uint8 label and
    prediction maps on one device, and whether any prediction was K (a pixel whose scores were not finite,
    `inference.class_indices(mark_non_finite=True)`): one count of (image, label, prediction) for the whole
    batch into B·256·(K+1) bins and one copy of them to the host, the only wait for the device per batch.
    Stray labels (neither a class nor the ignore index) land in their own rows of the same count and raise
    `DataError`, as `confusion_counts`. The matrices are those `confusion_counts` gives, bit for bit."""
    import torch

    k, width = num_classes, num_classes + 1
    index = torch.cat([(label.reshape(-1).to(torch.int64) + 256 * image) * width + pred.reshape(-1).to(torch.int64)
                       for image, (label, pred) in enumerate(zip(labels, preds, strict=True))])
    # index_add_ into bins of a known size: CUDA's bincount reads its input's min and max back to the host to
    # size its output, two more waits; integer additions are exact in any order
    device_bins = torch.zeros(len(labels) * 256 * width, dtype=torch.int64, device=index.device)
    device_bins.index_add_(0, index, torch.ones_like(index))
    bins = device_bins.cpu().numpy().reshape(len(labels), 256, width)
    stray = bins[:, k:IGNORE_INDEX, :].sum(axis=(0, 2))
    if stray.any():
        values = [int(v) + k for v in np.flatnonzero(stray)]
        raise DataError(f"label values {values} are neither one of the {k} classes nor the ignore index {IGNORE_INDEX}",
                        "the prepared labels do not match the task's class schema; check the dataset's label map")
    per_image = [(image[:k, :k].astype(np.int64), image[IGNORE_INDEX, :k].astype(np.int64)) for image in bins]
    return per_image, bool(bins[:, :, k].any())


def _label_range_checked(low: int, high: int) -> None:
    if low < 0 or high > IGNORE_INDEX:
        raise DataError(f"label values must lie in 0..{IGNORE_INDEX}, got {low}..{high}")


def _prediction_range_checked(low: int, high: int, k: int) -> None:
    if low < 0 or high >= k:
        raise ValueError(f"predictions must lie in [0, {k}), got {low}..{high}")


def _numpy_bins(label: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """The 256·K bins of NumPy maps: uint8 pairs in one compiled pass, others through `bincount`."""
    if label.dtype != np.uint8:
        if label.size:
            _label_range_checked(int(label.min()), int(label.max()))
        label = label.astype(np.uint8)
    if pred.dtype == np.uint8:
        from rsdg_bench.scoring.pair_counts import pair_counts  # imports numba: only where matrices are counted

        return pair_counts(label, pred, k)
    if pred.size:
        _prediction_range_checked(int(pred.min()), int(pred.max()), k)
    index = label.reshape(-1).astype(np.int64) * k + pred.reshape(-1).astype(np.int64)
    return np.bincount(index, minlength=(IGNORE_INDEX + 1) * k).astype(np.int64)


def _torch_bins(label: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """The 256·K bins of tensors: CPU uint8 pairs in one compiled pass, others by one `bincount` of an int16
    (int32 for K > 127) index on the tensors' device."""
    import torch

    label, pred = torch.as_tensor(label), torch.as_tensor(pred)
    if label.dtype != torch.uint8:
        if label.numel():
            _label_range_checked(int(label.min()), int(label.max()))
        label = label.to(torch.uint8)
    if pred.device.type == "cpu" and pred.dtype == torch.uint8 and label.device.type == "cpu":
        from rsdg_bench.scoring.pair_counts import pair_counts

        return pair_counts(label.contiguous().numpy(), pred.contiguous().numpy(), k)
    if pred.numel():
        low, high = torch.aminmax(pred)
        _prediction_range_checked(int(low), int(high), k)
    index_dtype = torch.int16 if k <= 127 else torch.int32
    index = label.reshape(-1).to(index_dtype) * k + pred.reshape(-1).to(index_dtype)
    return torch.bincount(index, minlength=(IGNORE_INDEX + 1) * k).to(torch.int64).cpu().numpy()


@dataclass(frozen=True)
class SegmentationScores:
    """Headline metrics and per-class values; NaN marks a class with nothing to measure."""

    miou: float
    oa: float
    aa: float
    mf1: float  # mmseg's mDice
    mfscore: float  # mmseg's mFscore
    iou: np.ndarray
    f1: np.ndarray
    fscore: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray

    def headline(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def per_class(self, class_names: list[str]) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "iou": float(self.iou[i]), "f1": float(self.f1[i]), "fscore": float(self.fscore[i]),
                "recall": float(self.recall[i]), "precision": float(self.precision[i]),
                "gt_pixels": int(self.gt_pixels[i]), "pred_pixels": int(self.pred_pixels[i]),
            }
            for i, name in enumerate(class_names)
        }


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator, `empty` where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), empty)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def class_rates(matrices: np.ndarray, convention: str = "mmseg", ignored: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """Per-class IoU, F1 (Dice), F-score, recall and precision, and OA, of a stack of K×K matrices (any leading
    shape).

    `ignored` (same leading shape, K): predictions on ignored pixels, counted as false positives and in
    OA's denominator (the `smp` convention's `ignored_pixels: error`); None leaves them out.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown metric convention {convention!r} (known: {', '.join(CONVENTIONS.names())})")
    facts = CONVENTIONS.get(convention)
    cm = np.asarray(matrices, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    gt = cm.sum(axis=-1)
    pred = cm.sum(axis=-2)
    total = cm.sum(axis=(-2, -1))
    if ignored is not None:
        extra = np.asarray(ignored, dtype=np.float64)
        pred, total = pred + extra, total + extra.sum(axis=-1)
    empty = facts.empty_ratio
    f1 = _ratio(2 * tp, gt + pred, empty)
    # The F-score from precision and recall is F1 wherever TP > 0; where TP = 0 mmseg's 0/0 makes it NaN, and
    # the other conventions give F1's value (module docstring). F1 from the counts keeps the values exact.
    fscore = np.where(tp > 0, f1, math.nan) if facts.fscore_needs_a_hit else f1
    return {"iou": _ratio(tp, gt + pred - tp, empty), "f1": f1, "fscore": fscore,
            "recall": _ratio(tp, gt, empty), "precision": _ratio(tp, pred, empty),
            "oa": _ratio(tp.sum(axis=-1), total, math.nan)}


def headline_metrics(matrices: np.ndarray, headline_classes: list[int] | None = None, convention: str = "mmseg",
                     ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """mIoU, OA, AA, mF1 (mDice) and mFscore of a stack of K×K matrices (leading shape kept; a bootstrap
    passes B×K×K).
    `mmseg` averages the classes that are not NaN; `smp` and `codex` divide by the number of headline classes."""
    rates = class_rates(matrices, convention, ignored)
    skips_nan = CONVENTIONS.get(convention).mean_skips_nan
    k = np.asarray(matrices).shape[-1]
    selected = np.arange(k) if headline_classes is None else np.asarray(headline_classes, dtype=np.int64)

    def mean(values: np.ndarray) -> np.ndarray:
        chosen: np.ndarray = values[..., selected]
        if not skips_nan:  # no NaN to leave out: every headline class counts
            return np.asarray(chosen.mean(axis=-1))
        if chosen.ndim == 1:  # one matrix: the reduction the stored numbers were always made with
            return np.asarray(_nanmean(chosen))
        present = ~np.isnan(chosen)
        count = present.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, np.where(present, chosen, 0).sum(axis=-1) / np.maximum(count, 1), np.nan)

    # each headline of the metric table: the mean of its per-class rate, or OA, a rate of the whole matrix
    return {name: rates["oa"] if HEADLINE_RATES[name] == "oa" else mean(rates[HEADLINE_RATES[name]])
            for name in METRIC_NAMES}


def uniform_chance_matrix(matrix: np.ndarray | list[list[int]]) -> np.ndarray:
    """The confusion matrix of chance on the same labels: the expected matrix of a model that predicts each of
    the K classes with probability 1/K (row sum / K in every cell of a row), scaled by K so that its counts are
    whole. Every metric is a ratio of counts, so the scale changes none; `scores_from_confusion` of it is the
    chance level the board marks models against."""
    rows = np.asarray(matrix, dtype=np.int64).sum(axis=1)
    return np.repeat(rows[:, None], len(rows), axis=1)


def scores_from_confusion(matrix: torch.Tensor | np.ndarray, headline_classes: list[int] | None = None,
                          convention: str = "mmseg",
                          ignored: torch.Tensor | np.ndarray | list[int] | None = None) -> SegmentationScores:
    """All segmentation metrics from one K×K confusion matrix (rows = ground truth), under a convention."""
    cm = np.asarray(matrix, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("confusion matrix has negative counts")
    extra = None if ignored is None else np.asarray(ignored, dtype=np.int64)
    if extra is not None and (extra.shape != (cm.shape[0],) or (extra < 0).any()):
        raise ValueError(f"ignored-pixel predictions must be {cm.shape[0]} non-negative counts")
    rates = class_rates(cm, convention, extra)
    means = headline_metrics(cm, headline_classes, convention, extra)
    return SegmentationScores(
        **{name: float(means[name]) for name in METRIC_NAMES}, iou=rates["iou"], f1=rates["f1"], fscore=rates["fscore"],
        recall=rates["recall"], precision=rates["precision"],
        gt_pixels=cm.sum(axis=1), pred_pixels=cm.sum(axis=0),
    )
