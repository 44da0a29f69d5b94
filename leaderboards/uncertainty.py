"""How precise is a score, and is one model really ahead of another? A paired scene-level bootstrap.

A split's score comes from one confusion matrix summed over its images. The images are not independent:
Potsdam's 2016 test windows come from 14 tiles, a CoDEX patch shares its area with 63 others. So the unit
resampled is the **scene** an image was cut from (records keep each image's scene; see
`results.SampleIndex`): a replicate draws the split's scenes with replacement and sums the matrices of every
image of each drawn scene (the cluster bootstrap; Davison & Hinkley 1997, §3.8; Field & Welsh 2007,
"Bootstrapping clustered data", JRSS B 69(3)). Resampling windows as if independent gives intervals that
are too narrow whenever windows of one scene agree with each other.

The draws of a split are a function of the split and its scene list only (`draw_counts`), never of the
model: every model evaluated on the same data gets the same resampled test sets, so the difference between
two models is bootstrapped **paired**, replicate by replicate, and the same target split is resampled the
same way in every task that scores it (so suite means are resampled jointly). A task's replicate is the
mean over its targets, as its score is; a suite's is the mean over its tasks. Intervals are percentile
intervals at `LEVEL`. Two models are told apart only when the interval of their paired difference excludes
0; tie groups follow from that (`paired_tie_groups`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import overload

import numpy as np

from rsdg_bench.records.results import entries_array
from rsdg_bench.scoring.metrics import headline_metrics

BOOTSTRAP_REPLICATES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class SplitEvidence:
    """What the bootstrap needs of one model on one split: the record's sparse per-image matrices
    (`results.encode_per_image`), each image's scene, and the unit a scene is."""

    per_image: dict
    scenes: list[str]
    scene_unit: str

    @property
    def num_scenes(self) -> int:
        return len(set(self.scenes))


def draw_counts(slug: str, scenes: Sequence[str], replicates: int = BOOTSTRAP_REPLICATES) -> np.ndarray:
    """B×S: how often each of the split's S scenes (sorted by name) is drawn in each replicate. Seeded by the
    split and its scene list, so every model on the same data gets the same draws."""
    return _draws(slug, tuple(sorted(set(scenes))), replicates)


@lru_cache(maxsize=256)
def _draws(slug: str, names: tuple[str, ...], replicates: int) -> np.ndarray:
    """`draw_counts`, once per split and scene list: every model of a board shares them (read-only)."""
    digest = hashlib.sha256("\n".join([slug, *names]).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    draws = rng.integers(0, len(names), size=(replicates, len(names)))
    rows = np.repeat(np.arange(replicates), len(names))
    counts = np.bincount(rows * len(names) + draws.ravel(), minlength=replicates * len(names)).reshape(
        replicates, len(names))
    counts.flags.writeable = False
    return counts


def _by_scene(entries: list, scene_of: np.ndarray, num_scenes: int, width: int) -> np.ndarray:
    """Sparse [image, cell, count] entries summed per scene: S×width float64."""
    out: np.ndarray = np.zeros(num_scenes * width)
    if len(entries):
        image, cell, count = entries_array(entries).T
        out = np.bincount(scene_of[image] * width + cell, weights=count, minlength=num_scenes * width)
    return out.reshape(num_scenes, width)


def metric_replicates(slug: str, evidence: SplitEvidence, metric: str, headline: list[int],
                      convention: str = "mmseg", replicates: int = BOOTSTRAP_REPLICATES) -> np.ndarray:
    """B bootstrap values of `metric` (miou, oa, aa, mf1 or mfscore) on one split, resampling its scenes."""
    names = sorted(set(evidence.scenes))
    index = {name: i for i, name in enumerate(names)}
    scene_of = np.array([index[s] for s in evidence.scenes], dtype=np.int64)
    k = evidence.per_image["k"]
    counts = draw_counts(slug, names, replicates).astype(np.float64)
    matrices = (counts @ _by_scene(evidence.per_image["entries"], scene_of, len(names), k * k)).reshape(-1, k, k)
    ignored = None
    if "ignored_entries" in evidence.per_image:
        ignored = counts @ _by_scene(evidence.per_image["ignored_entries"], scene_of, len(names), k)
    return headline_metrics(matrices, headline, convention, ignored)[metric]


def interval(replicates: np.ndarray | None) -> tuple[float, float]:
    """The percentile interval at `LEVEL` (NaN, NaN without replicates)."""
    if replicates is None or np.isnan(replicates).all():
        return math.nan, math.nan
    low, high = np.nanpercentile(replicates, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(low), float(high)


def interquartile_mean(values: np.ndarray) -> np.ndarray:
    """The interquartile mean (IQM) along the last axis: the mean of what is left after cutting int(n / 4)
    values from each end of the n sorted values (`scipy.stats.trim_mean(values, 0.25, axis=-1)`, as rliable
    and GEO-Bench compute it). Robust to one task that every model fails or aces; the plain mean below 4
    values, since nothing is cut then; NaN where a value is NaN."""
    ordered = np.sort(np.asarray(values, dtype=np.float64), axis=-1)
    n = ordered.shape[-1]
    cut = n // 4
    # NaN sorts last and would be cut as if it were the best value: a set with a NaN has no IQM
    return np.where(np.isnan(ordered).any(axis=-1), np.nan, ordered[..., cut:n - cut].mean(axis=-1))


@overload
def normalized_score(score: float, chance: float) -> float: ...


@overload
def normalized_score(score: np.ndarray, chance: float) -> np.ndarray: ...


def normalized_score(score: float | np.ndarray, chance: float) -> float | np.ndarray:
    """`score` on a scale whose anchors are the task's own: 0 = chance (each class predicted at random on the
    same labels), 1 = a perfect score; so tasks of very different difficulty and class counts can be pooled.
    NaN when there is no chance level or chance is already perfect."""
    if math.isnan(chance) or chance >= 1.0:
        return score * math.nan
    return (score - chance) / (1.0 - chance)


def paired_difference(better: np.ndarray | None, other: np.ndarray | None) -> tuple[float, float]:
    """Interval of `better − other` over shared replicates (both from the same draws)."""
    if better is None or other is None:
        return math.nan, math.nan
    return interval(better - other)


def separated(better: np.ndarray | None, other: np.ndarray | None) -> bool:
    """Whether the paired difference's interval lies above 0 (the test set tells the two apart)."""
    low, _ = paired_difference(better, other)
    return not math.isnan(low) and low > 0


def paired_tie_groups(estimates: dict[str, float], replicates: dict[str, np.ndarray | None]) -> dict[str, int]:
    """{model: group}, 1 = the top group. Going down the ranking, a model stays in the current group unless
    the paired difference to the group's leader excludes 0; then it leads the next group. Models without
    replicates cannot be told apart from the leader and stay in its group."""
    groups: dict[str, int] = {}
    ordered = sorted((m for m in estimates if not math.isnan(estimates[m])), key=lambda m: -estimates[m])
    group, leader = 0, None
    for model in ordered:
        if leader is None or separated(replicates.get(leader), replicates.get(model)):
            group, leader = group + 1, model
        groups[model] = group
    return groups
