"""Random resizes, class-capped crops, flips, rotations and photometric distortion of a training draw, as a
task's `training.augment` asks.

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

The resize, the crop's class cap and the photometric distortion follow mmseg 1.x's `RandomChoiceResize` with
`ResizeShortestEdge`, `RandomCrop(cat_max_ratio)` and `PhotoMetricDistortion` (the transforms of CrossEarth's
released training pipeline): the same sizes, rules and value ranges, drawn from our generator (not numpy's global
one, so not mmseg's numbers). The resize is `torch.nn.functional.interpolate` (bilinear without antialiasing, as
OpenCV's INTER_LINEAR; labels nearest, as OpenCV's INTER_NEAREST) on float values, where mmseg rounds to uint8; the
colour conversions are OpenCV's 8-bit HSV formulas in floating point (OpenCV's fixed-point tables may put a pixel
one level apart).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.protocol.task_schema import AugmentSpec

CROP_TRIES = 10  # mmseg's RandomCrop: crops drawn again at most this many times while one class dominates
BRIGHTNESS_DELTA = 32  # mmseg's PhotoMetricDistortion defaults (CrossEarth's pipeline sets none of them)
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # of OpenCV's 8-bit hue circle of 180


def resize_short_sides(spec: AugmentSpec, crop: int) -> list[int]:
    """The shorter-side lengths a draw's resize chooses from: ⌊ratio × crop⌋ for each of `resize_short_side`
    (mmseg configs write them as `int(crop * x * 0.1)`; the small slack keeps a product such as 0.7 × 1000
    from landing a hair under its whole number)."""
    return [math.floor(ratio * crop + 1e-6) for ratio in spec.resize_short_side]


def short_side_shape(height: int, width: int, short: int, max_long: int | None) -> tuple[int, int]:
    """(height, width) after mmseg's `ResizeShortestEdge(short, max_size=max_long)`: the shorter side to
    `short`, scaled down so the longer is at most `max_long`, rounded half up, then mmcv's aspect-keeping
    rescale to that size (its factor is the smaller of the long and short sides' ratios)."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max_long and max(new_h, new_w) > max_long:
        shrink = max_long / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    target_h, target_w = int(new_h + 0.5), int(new_w + 0.5)
    factor = min(max(target_h, target_w) / max(height, width), min(target_h, target_w) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def random_resize(image: torch.Tensor, label: torch.Tensor, spec: AugmentSpec, crop: int,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The draw resized as `resize_short_side` asks (one number drawn: the choice of length), or as it is
    (nothing drawn) when the protocol has no resize. Labels nearest, the image bilinear, on the last two axes."""
    if not spec.resize_short_side:
        return image, label
    sides = resize_short_sides(spec, crop)
    max_long = math.floor(spec.resize_max_long_side * crop + 1e-6) if spec.resize_max_long_side else None
    height, width = image.shape[-2:]
    size = short_side_shape(height, width, sides[int(rng.integers(len(sides)))], max_long)
    if size == (height, width):
        return image, label
    planes = image.reshape(1, -1, height, width).to(torch.float32)
    image = F.interpolate(planes, size=size, mode="bilinear", align_corners=False).reshape(
        *image.shape[:-2], *size).to(image.dtype)
    if label.ndim > 0:
        label_planes = label.reshape(1, -1, height, width).to(torch.float32)
        label = F.interpolate(label_planes, size=size, mode="nearest").reshape(*label.shape[:-2], *size).to(label.dtype)
    return image, label


def crop_origin(label: torch.Tensor, height: int, width: int, crop: int, spec: AugmentSpec,
                rng: np.random.Generator) -> tuple[int, int]:
    """(y0, x0) of a draw's crop of a `height` × `width` sample: uniform over the positions that fit (0 on a
    side shorter than the crop, which is then padded). Under `crop_max_class_ratio` < 1 a crop is drawn again,
    up to `CROP_TRIES` times, while its labelled pixels hold one class only or one class covers that share or
    more of them; the last one drawn is kept (mmseg's RandomCrop). Two numbers per crop drawn."""

    def draw() -> tuple[int, int]:
        return int(rng.integers(max(height - crop, 0) + 1)), int(rng.integers(max(width - crop, 0) + 1))

    y0, x0 = draw()
    if spec.crop_max_class_ratio < 1 and label.ndim > 0:
        for _ in range(CROP_TRIES):
            window = label[..., y0:y0 + crop, x0:x0 + crop]
            counts = torch.bincount(window[window != IGNORE_INDEX].reshape(-1).long())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max().item() / counts.sum().item() < spec.crop_max_class_ratio:
                break
            y0, x0 = draw()
    return y0, x0


def _truncated(values: torch.Tensor) -> torch.Tensor:
    """mmseg's `convert` after its arithmetic: clipped to 0-255 and cut to whole levels (a cast to uint8)."""
    return values.clamp(0, 255).floor()


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit RGB → HSV of whole-level values (channels on axis -3): H in [0, 180) (degrees / 2), S and V
    in 0-255, each rounded to a whole level."""
    r, g, b = rgb.unbind(-3)
    value = torch.maximum(torch.maximum(r, g), b)
    diff = value - torch.minimum(torch.minimum(r, g), b)
    saturation = torch.where(value > 0, torch.round(diff * 255 / value.clamp_min(1)), torch.zeros_like(value))
    spread = diff.clamp_min(1)
    degrees = torch.where(value == r, 60 * (g - b) / spread,
                          torch.where(value == g, 120 + 60 * (b - r) / spread, 240 + 60 * (r - g) / spread))
    hue = torch.round(torch.where(diff > 0, degrees, torch.zeros_like(degrees)) / 2)
    hue = torch.where(hue < 0, hue + 180, hue)
    return torch.stack([hue, saturation, value], dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit HSV → RGB (H in [0, 180)): the float conversion of the sector formulas, rounded to whole
    levels."""
    hue, saturation, value = hsv.unbind(-3)
    h = hue * (6 / 180)
    h = torch.where(h >= 6, h - 6, h)
    sector = torch.floor(h)
    f = h - sector
    s, v = saturation / 255, value / 255
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # (r, g, b) of each sector: 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v), 5 (v, p, q)
    table = torch.stack([torch.stack(c, dim=0) for c in (
        (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], dim=0)  # 6 × 3 × …
    index = sector.long().clamp(0, 5)[None, None].expand(1, 3, *sector.shape)
    rgb = table.gather(0, index)[0]  # 3 × …
    return torch.round(rgb.movedim(0, -3) * 255)


def photometric_distortion(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion (defaults) of a 3-band image with 0-255 values (channels on axis -3): the
    values first rounded to whole levels (mmseg's image is uint8), then brightness, contrast (before or after the
    colour steps, equally likely), saturation and hue, each applied with probability 0.5 and each clipped and cut
    to whole levels. The numbers are drawn in mmseg's order."""
    if image.shape[-3] != 3:
        raise ValueError(f"photometric distortion works on 3-band images (RGB-like), not {image.shape[-3]} bands")
    out = image.to(torch.float32).clamp(0, 255).round()
    if rng.integers(2):
        out = _truncated(out + float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)))
    contrast_last = not rng.integers(2)  # mmseg's `mode == 0`: contrast after saturation and hue
    if not contrast_last and rng.integers(2):
        out = _truncated(out * float(rng.uniform(*CONTRAST_RANGE)))
    if rng.integers(2):
        hsv = rgb_to_hsv(out)
        saturated = _truncated(hsv[..., 1, :, :] * float(rng.uniform(*SATURATION_RANGE)))
        out = hsv_to_rgb(torch.stack([hsv[..., 0, :, :], saturated, hsv[..., 2, :, :]], dim=-3))
    if rng.integers(2):
        hsv = rgb_to_hsv(out)
        hue = torch.remainder(hsv[..., 0, :, :] + int(rng.integers(-HUE_DELTA, HUE_DELTA)), 180)
        out = hsv_to_rgb(torch.stack([hue, hsv[..., 1, :, :], hsv[..., 2, :, :]], dim=-3))
    if contrast_last and rng.integers(2):
        out = _truncated(out * float(rng.uniform(*CONTRAST_RANGE)))
    return out.to(image.dtype)


def flip_axes(spec: AugmentSpec, rng: np.random.Generator) -> tuple[int, ...]:
    """The axes to flip for one draw: each axis with probability 0.5 (`each_axis`); with probability 0.5 one
    of horizontal, vertical or both, equally likely (`one_of_three`); or horizontally with probability 0.5
    (`horizontal`)."""
    if spec.flip == "each_axis":
        return tuple(axis for axis in (-1, -2) if rng.random() < 0.5)
    if spec.flip == "horizontal":
        return (-1,) if rng.random() < 0.5 else ()
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


def crop_draw(image: torch.Tensor, label: torch.Tensor, crop: int, spec: AugmentSpec,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One training draw from a sample: resized (`random_resize`), a `crop` × `crop` window cut
    (`crop_origin`), photometrically distorted, padded at the bottom and right to the crop (image 0, labels
    ignored) where the sample was smaller, then flipped and rotated (`augment_draw`). The distortion acts on
    each pixel alone, so making it before the flips (mmseg makes it after) changes nothing but spares the padding
    (mmseg pads later, in its data preprocessor). A protocol without the resize, the class cap and the
    distortion draws exactly the numbers, and makes exactly the draws, that the trainer made before they existed.
    """
    per_pixel = label.ndim > 0
    image, label = random_resize(image, label, spec, crop, rng)
    height, width = image.shape[-2:]
    y0, x0 = crop_origin(label, height, width, crop, spec, rng)
    image = image[..., y0:y0 + crop, x0:x0 + crop]
    if per_pixel:
        label = label[..., y0:y0 + crop, x0:x0 + crop]
    if spec.photometric:
        image = photometric_distortion(image, rng)
    pad_h, pad_w = crop - image.shape[-2], crop - image.shape[-1]
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        if per_pixel:
            label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return augment_draw(image, label, spec, rng)


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
