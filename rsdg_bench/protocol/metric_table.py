"""The metric table and the metric conventions: what a task may name in `metrics:`, as data.

Every headline a record stores, every board column, every export and the task schema's `primary` / `report`
read `METRICS`; the formulas live in `rsdg_bench.scoring.metrics` and read a metric's `rate` and a
convention's facts from here, so a metric's key, label and direction are written once.

A convention is how a paper turned the same confusion matrix into numbers (`metrics.convention` of a task):
three facts, no code. They are registered in `CONVENTIONS` (the generic `Registry`) in this module only, not
through entry points: a record stores its headline under every convention (`other_conventions`), so the set is
part of the record format and cannot depend on what else is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rsdg_bench.base.errors import TaskError
from rsdg_bench.base.registry import Registry


@dataclass(frozen=True)
class Metric:
    """One headline metric. `rate`: the per-class rate it averages over the headline classes (`iou`, `recall`,
    `f1`, `fscore`), or `oa` for the whole-matrix accuracy; None for a per-place metric, computed from the
    samples' groups (`per_place`)."""

    name: str  # the key in records, task YAMLs, exports and CSV columns
    label: str  # the column header on boards and in tables
    summary: str
    rate: str | None
    per_place: bool = False
    higher_is_better: bool = True
    percent: bool = True  # a fraction shown ×100


METRICS: tuple[Metric, ...] = (
    Metric("miou", "mIoU", "mean intersection over union of the headline classes", "iou"),
    Metric("oa", "OA", "overall accuracy: correct pixels (or images) over all counted", "oa"),
    Metric("aa", "AA", "average accuracy: mean recall of the headline classes", "recall"),
    # mmseg's names: `mf1` is its mDice (a class never hit right scores 0 and counts), `mfscore` its mFscore
    # (that class is left out), so the header says which of the two "mF1"s a number is
    Metric("mf1", "mDice", "mean F1 (Dice) of the headline classes, mmseg's mDice", "f1"),
    Metric("mfscore", "mFscore", "mean F-score from precision and recall, mmseg's mFscore", "fscore"),
    Metric("domain_acc", "Domain acc.", "mean over places (countries, regions) of each place's accuracy", None,
           per_place=True),
    Metric("worst_domain_acc", "Worst-domain acc.", "the accuracy of the worst place", None, per_place=True),
)
BY_NAME = {metric.name: metric for metric in METRICS}
HEADLINE_NAMES = tuple(metric.name for metric in METRICS if not metric.per_place)  # from one matrix
# headline → the rate it averages (`oa`: the whole matrix's accuracy)
HEADLINE_RATES: dict[str, str] = {metric.name: metric.rate for metric in METRICS if metric.rate is not None}
PER_PLACE_NAMES = tuple(metric.name for metric in METRICS if metric.per_place)  # from the samples' places


def metric_label(name: str) -> str:
    """The header of metric `name` (its key when it is not in the table, e.g. a reported paper's own)."""
    metric = BY_NAME.get(name)
    return metric.label if metric is not None else name


@dataclass(frozen=True)
class Convention:
    """How a paper computed its numbers from a confusion matrix."""

    name: str
    summary: str
    empty_ratio: float  # a ratio whose denominator is 0 (a class absent from ground truth and prediction)
    mean_skips_nan: bool  # class means leave NaN classes out (else: divide by every headline class)
    fscore_needs_a_hit: bool  # a class with no true positive has no F-score (NaN), as mmseg's P·R formula gives
    counts_ignored_predictions: bool = False  # may count predictions on ignore-labelled pixels (`ignored_pixels: error`)


CONVENTIONS: Registry[Convention] = Registry("metric convention", None, TaskError)
for _convention in (
    Convention("mmseg", "mmseg's IoUMetric: a class absent from ground truth and prediction is NaN, left out of "
               "the mean", empty_ratio=math.nan, mean_skips_nan=True, fscore_needs_a_hit=True),
    Convention("smp", "segmentation_models_pytorch's functions with zero_division=1, mean over every headline "
               "class (CromSS)", empty_ratio=1.0, mean_skips_nan=False, fscore_needs_a_hit=False,
               counts_ignored_predictions=True),
    Convention("codex", "CoDEX's SCDMetric: a zero denominator gives 0, mean over every headline class",
               empty_ratio=0.0, mean_skips_nan=False, fscore_needs_a_hit=False),
):
    CONVENTIONS.register(_convention)
DEFAULT_CONVENTION = "mmseg"
CONVENTION_NAMES = tuple(CONVENTIONS.names())
