"""How precise is a score? Bootstrap intervals over target images, and tie groups of models.

A split's score comes from one confusion matrix summed over its images; resampling the images with
replacement (the per-image matrices are stored in each record) and recomputing the metric gives its
sampling spread. For a task with several targets, each target's images are resampled independently and
the replicate scores averaged, as the task's target mean is. Models whose intervals overlap the leader's
of their group form a tie group: the ranking between them is not resolved by the test set.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_REPLICATES = 1000
LEVEL = 0.95


def miou_replicates(per_image: np.ndarray, headline: list[int], replicates: int = BOOTSTRAP_REPLICATES,
                    seed: int = 0) -> np.ndarray:
    """B bootstrap mIoUs (over the `headline` classes, NaN classes left out) of an N×K×K stack."""
    images, k, _ = per_image.shape
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(replicates, images))
    weights = np.zeros((replicates, images))
    np.add.at(weights, (np.repeat(np.arange(replicates), images), draws.ravel()), 1)
    matrices = (weights @ per_image.reshape(images, k * k).astype(np.float64)).reshape(replicates, k, k)
    diagonal = np.diagonal(matrices, axis1=1, axis2=2)
    union = matrices.sum(axis=2) + matrices.sum(axis=1) - diagonal
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, diagonal / union, np.nan)[:, headline]
    present = ~np.isnan(iou)
    return np.where(present.any(axis=1), np.nansum(iou, axis=1) / np.maximum(present.sum(axis=1), 1), np.nan)


def target_interval(targets: list[np.ndarray], headline: list[int], seed: int = 0) -> tuple[float, float]:
    """Percentile interval (95%) of the mean target mIoU; each target resampled on its own."""
    replicates = np.mean([miou_replicates(t, headline, seed=seed + i) for i, t in enumerate(targets)], axis=0)
    low, high = np.nanpercentile(replicates, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(low), float(high)


def tie_groups(scores: dict[str, tuple[float, float, float]]) -> dict[str, int]:
    """{model: group}, 1 = the top group. `scores` maps model → (estimate, low, high). Going down the
    ranking, a model joins the current group while its interval reaches the group leader's lower bound."""
    groups: dict[str, int] = {}
    ordered = sorted((m for m in scores if not np.isnan(scores[m][0])), key=lambda m: -scores[m][0])
    group, leader_low = 0, None
    for model in ordered:
        _, low, high = scores[model]
        if leader_low is None or high < leader_low:
            group, leader_low = group + 1, low
        groups[model] = group
    return groups
