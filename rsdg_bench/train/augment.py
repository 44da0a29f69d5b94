"""Random flips and rotations of a training draw, as a task's `training.augment` asks.

Every random number comes from the generator the caller passes (seeded by the protocol's seed and the draw's
index), so a draw is the same with any number of DataLoader workers and after a resume. Images and per-pixel
labels are changed together on their last two axes (a time series turns the same way on every date); an
image-level label (0-d) is left as it is.

The rotation follows albumentations' `Rotate` defaults, which CromSS's fine-tuning scripts use: an angle
uniform in ±`rotate_degrees` (counter-clockwise positive, as OpenCV counts), about the centre of the pixel
grid, the image bilinear and the labels nearest, and the border mirrored without repeating the edge pixel
(OpenCV's BORDER_REFLECT_101). It is computed with `torch.nn.functional.grid_sample`, not OpenCV's
fixed-point `warpAffine`, on the stored values: the geometry is OpenCV's, but a pipeline that clips and
quantizes before rotating (CromSS's) interpolates other values; the task says so (`reference.differences`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rsdg_bench.protocol.task_schema import AugmentSpec


def flip_axes(spec: AugmentSpec, rng: np.random.Generator) -> tuple[int, ...]:
    """The axes to flip for one draw: each axis with probability 0.5 (`each_axis`), or with probability 0.5 one
    of horizontal, vertical or both, equally likely (`one_of_three`)."""
    if spec.flip == "each_axis":
        return tuple(axis for axis in (-1, -2) if rng.random() < 0.5)
    if rng.random() >= 0.5:
        return ()
    return ((-1,), (-2,), (-1, -2))[int(rng.integers(3))]


def rotation_degrees(spec: AugmentSpec, rng: np.random.Generator) -> float | None:
    """The angle of this draw's rotation, or None when it is not rotated (nothing is drawn when `rotate_p` is
    0, so protocols without rotation keep their random streams)."""
    if spec.rotate_p == 0 or rng.random() >= spec.rotate_p:
        return None
    return float(rng.uniform(-spec.rotate_degrees, spec.rotate_degrees))


def rotate(tensor: torch.Tensor, degrees: float, *, labels: bool) -> torch.Tensor:
    """`tensor` (…×H×W) turned by `degrees` counter-clockwise about the grid's centre, borders mirrored about
    the edge pixels; bilinear, or nearest for `labels` (kept in their dtype)."""
    height, width = tensor.shape[-2:]
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    # Each output pixel reads the input where the inverse rotation takes it (y grows downwards, as in OpenCV).
    source_x = cos * (xs - centre_x) - sin * (ys - centre_y) + centre_x
    source_y = sin * (xs - centre_x) + cos * (ys - centre_y) + centre_y
    grid = torch.stack([2 * source_x / max(width - 1, 1) - 1, 2 * source_y / max(height - 1, 1) - 1], dim=-1)
    planes = tensor.reshape(1, -1, height, width)
    turned = F.grid_sample(planes.to(torch.float32), grid[None].to(torch.float32),
                           mode="nearest" if labels else "bilinear", padding_mode="reflection", align_corners=True)
    return turned.reshape(tensor.shape).to(tensor.dtype)


def augment_draw(image: torch.Tensor, label: torch.Tensor, spec: AugmentSpec,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw's image and label flipped, then rotated, by `spec` with `rng`'s next numbers."""
    per_pixel = label.ndim > 0
    axes = flip_axes(spec, rng)
    if axes:
        image = image.flip(axes)
        label = label.flip(axes) if per_pixel else label
    degrees = rotation_degrees(spec, rng)
    if degrees is not None:
        image = rotate(image, degrees, labels=False)
        label = rotate(label, degrees, labels=True) if per_pixel else label
    return image, label
