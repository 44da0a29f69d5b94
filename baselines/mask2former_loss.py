"""Mask2Former's set criterion for semantic segmentation (Cheng et al., CVPR 2022), as mmseg 1.x trains its
`Mask2FormerHead` through mmdet 3.x, with the weights of CrossEarth's baseline config (Rein's
`configs/_base_/models/rein_dinov2_mask2former.py`, which CrossEarth's 1024 config names as its model base).

For each image the label map becomes one binary mask per class present in it (mmseg's
`_seg_data_to_instance_data`): the ignore label forms no mask, so an ignored pixel is a negative pixel of
every class mask, as upstream. For every prediction layer (the one before the first decoder layer and one per
decoder layer: deep supervision, all summed with equal weight):

- matching (mmdet `HungarianAssigner`): on `num_points` points drawn uniformly (the same points for every
  query and mask), the cost of query q for class mask g is 2·(−softmax(class_q)[c_g]) + 5·mean binary
  cross-entropy of the mask logits against the mask + 5·(1 − (2Σσ(m)·t + 1) / (Σσ(m) + Σt + 1)); the
  assignment minimises the summed cost (scipy's `linear_sum_assignment`, which mmdet calls: each mask gets
  its own query);
- class loss: cross-entropy over the K + 1 classes of every query (unmatched queries: "no object"), each term
  weighted by its target's class weight (1 for a class, 0.1 for no object) and divided by the sum of those
  weights; times 2;
- mask and dice losses, on the matched queries only, at `num_points` points per mask chosen by PointRend's
  importance sampling (of `oversample_ratio`·P uniform points, the `importance_sample_ratio`·P with the least
  certain logits, |logit| smallest, plus uniform points for the rest): mean binary cross-entropy times 5, and
  the dice loss above averaged over the masks, times 5. Mask logits (at 1/4 of the input) and label masks
  (at the input size) are read at the points bilinearly (mmcv's `point_sample`: `grid_sample`, zero padding,
  align_corners False), so the two resolutions need not agree.

The points are drawn from torch's global generator unless one is given (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@dataclass(frozen=True)
class Mask2FormerLossConfig:
    """The criterion's weights and sampling. The defaults are CrossEarth's / Rein's (w1oves/Rein
    `configs/_base_/models/rein_dinov2_mask2former.py`): `loss_cls` CrossEntropyLoss weight 2.0 with class
    weights [1.0]·K + [0.1]; `loss_mask` sigmoid CrossEntropyLoss weight 5.0; `loss_dice` DiceLoss weight 5.0,
    naive dice, eps 1.0; `train_cfg` num_points 12544, oversample_ratio 3.0, importance_sample_ratio 0.75;
    matcher costs ClassificationCost 2.0, CrossEntropyLossCost 5.0, DiceCost 5.0 (eps 1.0)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    dice_eps: float = 1.0
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    ignore_index: int = 255


@dataclass(frozen=True)
class LayerLoss:
    """One prediction layer's three terms, each already times its weight."""

    cls: Tensor
    mask: Tensor
    dice: Tensor

    def total(self) -> Tensor:
        return self.cls + self.mask + self.dice


def semantic_targets(label: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """An H × W label map → (the G classes present, ascending; G × H × W float masks, 1 where the pixel is
    that class). The ignore label is no class: its pixels are 0 in every mask."""
    classes = torch.unique(label)
    classes = classes[classes != ignore_index]
    masks = (label.unsqueeze(0) == classes.view(-1, 1, 1)).float()
    return classes, masks


def point_sample(maps: Tensor, points: Tensor) -> Tensor:
    """N × H × W maps read at N × P points with (x, y) in [0, 1] (bilinear, align_corners False) → N × P."""
    grid = (2.0 * points - 1.0).unsqueeze(2)  # N × P × 1 × 2
    return F.grid_sample(maps.unsqueeze(1), grid, align_corners=False)[:, 0, :, 0]


def uniform_points(count: int, num_points: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """`count` × `num_points` × 2 points uniform over the unit square."""
    return torch.rand(count, num_points, 2, generator=generator, device=like.device, dtype=like.dtype)


def uncertain_points(logits: Tensor, config: Mask2FormerLossConfig, generator: torch.Generator | None) -> Tensor:
    """PointRend's importance sampling for N × H × W mask logits → N × P points: of oversample·P uniform points,
    the importance·P where |logit| is smallest, then uniform points for the rest."""
    count, num_points = logits.shape[0], config.num_points
    candidates = uniform_points(count, int(num_points * config.oversample_ratio), logits, generator)
    uncertainty = -point_sample(logits, candidates).abs()
    num_uncertain = int(config.importance_sample_ratio * num_points)
    chosen = uncertainty.topk(num_uncertain, dim=1).indices
    picked = torch.gather(candidates, 1, chosen.unsqueeze(-1).expand(-1, -1, 2))
    rest = uniform_points(count, num_points - num_uncertain, logits, generator)
    return torch.cat([picked, rest], dim=1)


def dice_terms(probabilities: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Naive dice loss 1 − (2Σp·t + eps) / (Σp + Σt + eps) of every row of `probabilities` (M × P) against
    every row of `targets` (G × P) → M × G."""
    numerator = 2 * probabilities @ targets.T
    denominator = probabilities.sum(-1, keepdim=True) + targets.sum(-1).unsqueeze(0)
    return 1 - (numerator + eps) / (denominator + eps)


def paired_dice(probabilities: Tensor, targets: Tensor, eps: float) -> Tensor:
    """The naive dice loss of each row of `probabilities` against the same row of `targets` (M × P) → M."""
    numerator = 2 * (probabilities * targets).sum(-1)
    return 1 - (numerator + eps) / (probabilities.sum(-1) + targets.sum(-1) + eps)


def matching_cost(cls_logits: Tensor, point_logits: Tensor, classes: Tensor, point_targets: Tensor,
                  config: Mask2FormerLossConfig) -> Tensor:
    """Q × G cost of giving query q the class mask g: class, sigmoid cross-entropy and dice costs, weighted."""
    class_cost = -cls_logits.softmax(-1)[:, classes]
    positive = F.softplus(-point_logits)  # binary cross-entropy against 1
    negative = F.softplus(point_logits)  # against 0
    mask_cost = (positive @ point_targets.T + negative @ (1 - point_targets).T) / point_logits.shape[1]
    dice_cost = dice_terms(point_logits.sigmoid(), point_targets, config.dice_eps)
    return config.class_weight * class_cost + config.mask_weight * mask_cost + config.dice_weight * dice_cost


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """For a Q × G cost, the (query indices, mask indices) of the assignment of least total cost, ordered by
    mask index: every mask matched when G ≤ Q (always, with CrossEarth's 100 queries), else every query."""
    queries, masks = linear_sum_assignment(cost.detach().double().cpu().numpy())
    order = masks.argsort()
    return (torch.as_tensor(queries[order], device=cost.device),
            torch.as_tensor(masks[order], device=cost.device))


def match_image(cls_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor,
                config: Mask2FormerLossConfig, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One image's matching (Q × (K+1) class logits, Q × h × w mask logits, its G class masks) on shared
    uniform points → (query indices, mask indices)."""
    with torch.no_grad():
        points = uniform_points(1, config.num_points, mask_logits, generator)
        point_logits = point_sample(mask_logits, points.expand(mask_logits.shape[0], -1, -1))
        point_targets = point_sample(masks, points.expand(masks.shape[0], -1, -1))
        return hungarian_match(matching_cost(cls_logits, point_logits, classes, point_targets, config))


def layer_loss(cls_logits: Tensor, mask_logits: Tensor, targets: list[tuple[Tensor, Tensor]],
               config: Mask2FormerLossConfig, generator: torch.Generator | None = None) -> LayerLoss:
    """The weighted terms of one prediction layer: B × Q × (K+1) class logits, B × Q × h × w mask logits, and
    each image's (classes, masks) from `semantic_targets`."""
    num_classes = cls_logits.shape[-1] - 1
    labels = torch.full(cls_logits.shape[:2], num_classes, dtype=torch.long, device=cls_logits.device)
    matched_logits, matched_masks = [], []
    for image, (classes, masks) in enumerate(targets):
        if classes.numel() == 0:
            continue
        queries, indices = match_image(cls_logits[image], mask_logits[image], classes, masks, config, generator)
        labels[image, queries] = classes[indices]
        matched_logits.append(mask_logits[image, queries])
        matched_masks.append(masks[indices])
    weights = cls_logits.new_ones(num_classes + 1)
    weights[num_classes] = config.no_object_weight
    cls = F.cross_entropy(cls_logits.flatten(0, 1), labels.flatten(), weight=weights, reduction="sum")
    cls = cls / weights[labels].sum()
    if not matched_logits:  # no class in any image: only the class term (upstream's sum of no mask is 0)
        zero = mask_logits.sum() * 0
        return LayerLoss(config.class_weight * cls, zero, zero)
    return LayerLoss(config.class_weight * cls, *mask_terms(torch.cat(matched_logits), torch.cat(matched_masks),
                                                            config, generator))


def mask_terms(logits: Tensor, masks: Tensor, config: Mask2FormerLossConfig,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(weighted sigmoid cross-entropy, weighted dice) of M matched mask logits against their M masks, at
    importance-sampled points; each averaged over the masks (and the cross-entropy over the points)."""
    with torch.no_grad():
        points = uncertain_points(logits, config, generator)
        point_targets = point_sample(masks, points)
    point_logits = point_sample(logits, points)
    count = max(logits.shape[0], 1)
    cross_entropy = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="sum")
    cross_entropy = cross_entropy / (count * config.num_points)
    dice = paired_dice(point_logits.sigmoid(), point_targets, config.dice_eps).sum() / count
    return config.mask_weight * cross_entropy, config.dice_weight * dice


def mask2former_loss(all_cls: list[Tensor], all_masks: list[Tensor], labels: Tensor,
                     config: Mask2FormerLossConfig = Mask2FormerLossConfig(),
                     generator: torch.Generator | None = None) -> Tensor:
    """The training loss of a batch: the sum over prediction layers (deep supervision) of each layer's class,
    mask and dice terms, for B × H × W labels (ignore = `config.ignore_index`)."""
    targets = [semantic_targets(label, config.ignore_index) for label in labels]
    return torch.stack([layer_loss(cls, masks, targets, config, generator).total()
                        for cls, masks in zip(all_cls, all_masks, strict=True)]).sum()
