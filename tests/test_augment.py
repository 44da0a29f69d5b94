"""Training-draw augmentation (`rsdg_bench.train.augment`): the flips' probabilities, the rotation's direction,
centre, borders and interpolation as albumentations' Rotate defaults make them, and protocols without rotation
keeping their random streams; mmseg's shorter-side resize, class-capped crop and photometric distortion (CrossEarth's
released pipeline), and a protocol without them drawing exactly what the trainer drew before they existed."""

from __future__ import annotations

import colorsys
from collections import Counter

import numpy as np
import pytest
import torch

from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.protocol.task_schema import AugmentSpec
from rsdg_bench.train.augment import (
    augment_draw,
    crop_draw,
    crop_origin,
    flip_axes,
    hsv_to_rgb,
    photometric_distortion,
    random_resize,
    resize_short_sides,
    rgb_to_hsv,
    rotate,
    rotation_degrees,
    short_side_shape,
)

CROSSEARTH_RATIOS = tuple(x / 10 for x in range(5, 21))  # the released configs' `int(crop * x * 0.1)`, x = 5…20


def test_one_of_three_flips_half_the_draws_and_splits_the_rest_evenly():
    rng = np.random.default_rng(0)
    counts = Counter(flip_axes(AugmentSpec(flip="one_of_three"), rng) for _ in range(60_000))
    assert set(counts) == {(), (-1,), (-2,), (-1, -2)}
    assert counts[()] / 60_000 == pytest.approx(0.5, abs=0.01)
    for axes in ((-1,), (-2,), (-1, -2)):
        assert counts[axes] / 60_000 == pytest.approx(1 / 6, abs=0.01)


def test_each_axis_flips_draw_what_the_trainer_always_drew():
    """The default spends exactly two numbers per draw, one per axis at p 0.5, and no rotation number: tasks
    that do not ask for the new augmentations train on the same draws as before."""
    for seed in range(20):
        rng, reference = np.random.default_rng(seed), np.random.default_rng(seed)
        expected = tuple(axis for axis in (-1, -2) if reference.random() < 0.5)
        assert flip_axes(AugmentSpec(), rng) == expected
        assert rotation_degrees(AugmentSpec(), rng) is None
        assert rng.random() == reference.random()  # the streams are still in step


def test_a_quarter_turn_is_counter_clockwise_about_the_grid_centre():
    image = torch.arange(5 * 5, dtype=torch.float32).reshape(1, 5, 5)
    turned = rotate(image, 90.0, labels=False)
    torch.testing.assert_close(turned, torch.rot90(image, 1, dims=(-2, -1)))  # right column goes to the top row
    assert torch.equal(turned[0, 0], image[0, :, -1])
    even = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 4, 6).repeat(1, 1, 1)
    half = rotate(even, 180.0, labels=False)  # non-square, even sides: the centre lies between pixels
    torch.testing.assert_close(half, even.flip((-2, -1)), atol=1e-4, rtol=0)


def test_borders_mirror_without_repeating_the_edge_and_labels_stay_labels():
    constant = torch.full((2, 9, 9), 7.0)
    torch.testing.assert_close(rotate(constant, 33.0, labels=False), constant)  # no zero padding enters
    row = torch.tensor([[0.0, 10.0, 20.0, 30.0, 40.0]]).repeat(5, 1)[None]
    shifted = rotate(row, 180.0, labels=False)
    assert torch.equal(shifted, row.flip(-1))
    labels = torch.tensor([[0, 1, 2], [3, IGNORE_INDEX, 4], [5, 6, 7]], dtype=torch.int64)
    turned = rotate(labels, 27.0, labels=True)
    assert turned.dtype == torch.int64 and set(turned.unique().tolist()) <= set(labels.unique().tolist())
    # A quarter turn of a 3×5 image: output columns 0 and 4 read rows −1 and 3, which mirror about the edge
    # rows to row 1 (OpenCV's REFLECT_101), not to rows 0 and 2 (edge repeated) and not to zeros.
    wide = torch.arange(15, dtype=torch.float32).reshape(1, 3, 5) + 1
    turned = rotate(wide, 90.0, labels=False)
    assert turned[0, :, 0].tolist() == wide[0, 1, [3, 2, 1]].tolist() == turned[0, :, 4].tolist()


def test_a_small_turn_interpolates_bilinearly_at_the_inverse_rotated_point():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 7, 7, generator=generator, dtype=torch.float32)
    degrees = 20.0
    turned = rotate(image, degrees, labels=False)
    theta = np.radians(degrees)
    y, x, c = 2, 5, 3.0  # an output pixel whose source lies inside the grid
    sx = np.cos(theta) * (x - c) - np.sin(theta) * (y - c) + c
    sy = np.sin(theta) * (x - c) + np.cos(theta) * (y - c) + c
    x0, y0 = int(np.floor(sx)), int(np.floor(sy))
    fx, fy = sx - x0, sy - y0
    img = image[0].double().numpy()
    expected = ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x0 + 1]
                + (1 - fx) * fy * img[y0 + 1, x0] + fx * fy * img[y0 + 1, x0 + 1])
    assert float(turned[0, y, x]) == pytest.approx(expected, abs=1e-5)


def test_a_draw_turns_image_and_labels_together_and_every_date_alike():
    series = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    labels = (torch.arange(2 * 6 * 6).reshape(2, 6, 6) % 5).to(torch.int64)
    spec = AugmentSpec(flip="one_of_three", rotate_p=1.0, rotate_degrees=90.0)
    image, label = augment_draw(series, labels, spec, np.random.default_rng(4))
    replay = np.random.default_rng(4)
    axes, degrees = flip_axes(spec, replay), rotation_degrees(spec, replay)
    expected = rotate(series.flip(axes) if axes else series, degrees, labels=False)
    torch.testing.assert_close(image, expected)
    assert torch.equal(label, rotate(labels.flip(axes) if axes else labels, degrees, labels=True))
    scalar = torch.tensor(3)
    assert augment_draw(series, scalar, spec, np.random.default_rng(4))[1] is scalar  # an image-level label stays


def test_a_protocol_without_the_new_steps_draws_exactly_what_the_trainer_drew_before():
    """The trainer's old draw, written out: pad to the crop (image 0, labels ignored), two crop numbers, the
    crop, then the flips; `crop_draw` at the defaults gives the same tensors and leaves the stream in step."""
    image = torch.arange(3 * 10 * 23, dtype=torch.float32).reshape(3, 10, 23)
    label = (torch.arange(10 * 23).reshape(10, 23) % 7).to(torch.int64)
    crop = 16
    for seed in range(6):
        rng, reference = np.random.default_rng(seed), np.random.default_rng(seed)
        got_image, got_label = crop_draw(image, label, crop, AugmentSpec(), rng)
        padded = torch.nn.functional.pad(image, (0, 0, 0, crop - 10))
        padded_label = torch.nn.functional.pad(label, (0, 0, 0, crop - 10), value=IGNORE_INDEX)
        y0, x0 = int(reference.integers(padded.shape[-2] - crop + 1)), int(reference.integers(padded.shape[-1] - crop + 1))
        want_image, want_label = augment_draw(padded[..., y0:y0 + crop, x0:x0 + crop],
                                              padded_label[..., y0:y0 + crop, x0:x0 + crop], AugmentSpec(), reference)
        assert torch.equal(got_image, want_image) and torch.equal(got_label, want_label)
        assert rng.random() == reference.random()


def test_the_resize_lengths_are_the_released_configs_scales():
    """CrossEarth's configs choose the shorter side among int(crop · x · 0.1), x = 5…20, at most 4 × crop long."""
    spec = AugmentSpec(resize_short_side=CROSSEARTH_RATIOS, resize_max_long_side=4.0)
    for crop in (512, 1024):
        assert resize_short_sides(spec, crop) == [int(crop * x * 0.1) for x in range(5, 21)]
    assert resize_short_sides(spec, 512)[:3] == [256, 307, 358] and resize_short_sides(spec, 512)[-1] == 1024


def test_the_shorter_side_is_set_and_the_longer_capped_as_resize_shortest_edge_does():
    assert short_side_shape(512, 512, 307, 2048) == (307, 307)
    assert short_side_shape(1000, 500, 256, 2048) == (512, 256)  # portrait: the width is the shorter side
    assert short_side_shape(300, 600, 1024, 2048) == (1024, 2048)  # the cap just holds
    # 100 × 1000 to a 1024 shorter side would be 10240 long: scaled to 2048 long, the shorter 204.8 → 205
    assert short_side_shape(100, 1000, 1024, 2048) == (205, 2048)
    assert short_side_shape(100, 1000, 1024, None) == (1024, 10240)


def test_the_resize_chooses_each_length_alike_and_keeps_labels_as_labels():
    image = torch.rand(2, 3, 20, 40, generator=torch.Generator().manual_seed(0))  # a 2-date series
    label = (torch.arange(20 * 40).reshape(20, 40) % 3).to(torch.int64)
    label[0, 0] = IGNORE_INDEX
    spec = AugmentSpec(resize_short_side=(0.5, 1.0, 2.0))
    heights = Counter()
    for seed in range(900):
        resized, resized_label = random_resize(image, label, spec, 20, np.random.default_rng(seed))
        heights[resized.shape[-2]] += 1
        assert resized.shape[:2] == (2, 3) and resized.shape[-1] == 2 * resized.shape[-2]
        assert resized_label.shape == resized.shape[-2:] and resized_label.dtype == torch.int64
        assert set(resized_label.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}  # nearest: no blended labels
    assert set(heights) == {10, 20, 40}
    assert all(count / 900 == pytest.approx(1 / 3, abs=0.05) for count in heights.values())
    rng, untouched = np.random.default_rng(1), np.random.default_rng(1)
    assert random_resize(image, label, AugmentSpec(), 20, rng)[0] is image  # no resize: nothing drawn
    assert rng.random() == untouched.random()


def test_the_class_cap_draws_again_up_to_ten_times_as_mmseg_random_crop():
    """A crop whose labelled pixels hold one class only, or one class at 75 % or more, is drawn again; after ten
    redraws the eleventh crop is kept whatever it holds. Ignored pixels do not count."""
    label = torch.zeros(40, 40, dtype=torch.int64)
    label[30:, 30:] = 1  # one corner of another class: most 8 × 8 crops hold class 0 only
    label[:5, :] = IGNORE_INDEX
    spec = AugmentSpec(crop_max_class_ratio=0.75)

    def share_ok(y0: int, x0: int) -> bool:
        window = label[y0:y0 + 8, x0:x0 + 8]
        counts = torch.bincount(window[window != IGNORE_INDEX])
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max().item() / counts.sum().item() < 0.75

    accepted = 0
    for seed in range(300):
        reference = np.random.default_rng(seed)
        candidates = [(int(reference.integers(33)), int(reference.integers(33))) for _ in range(11)]
        expected = next((c for c in candidates[:10] if share_ok(*c)), candidates[10])
        assert crop_origin(label, 40, 40, 8, spec, np.random.default_rng(seed)) == expected
        accepted += share_ok(*expected)
    uncapped = sum(share_ok(*crop_origin(label, 40, 40, 8, AugmentSpec(), np.random.default_rng(s))) for s in range(300))
    assert accepted > 3 * uncapped  # the cap really moves the crops towards mixed ones
    uniform = torch.zeros(40, 40, dtype=torch.int64)  # never satisfiable: all eleven crops drawn (22 numbers)
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    crop_origin(uniform, 40, 40, 8, spec, rng)
    reference.integers(33, size=22)
    assert rng.random() == reference.random()


def test_hsv_conversions_follow_opencv_8_bit_ranges():
    """H in [0, 180) as degrees / 2, S and V in 0-255 (OpenCV's 8-bit HSV, what mmcv.bgr2hsv gives)."""
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [128, 128, 128], [0, 0, 0],
                            [200, 100, 50], [10, 20, 250]], dtype=torch.float32).T[:, :, None]  # 3 × 8 × 1
    hsv = rgb_to_hsv(colours)[:, :, 0].T
    for (r, g, b), (h, s, v) in zip(colours[:, :, 0].T.tolist(), hsv.tolist(), strict=True):
        hf, sf, vf = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert (h, s, v) == (round(hf * 180) % 180, round(sf * 255), round(vf * 255))
    assert hsv[:5].tolist() == [[0, 255, 255], [60, 255, 255], [120, 255, 255], [30, 255, 255], [0, 0, 128]]
    back = hsv_to_rgb(rgb_to_hsv(colours))
    assert (back - colours).abs().max() <= 2  # 8-bit HSV loses at most a level or two
    assert torch.equal(hsv_to_rgb(torch.tensor([0.0, 0.0, 77.0])[:, None, None]).flatten(), torch.full((3,), 77.0))


class Scripted:
    """A generator that returns set numbers, to drive each step of the distortion on purpose."""

    def __init__(self, *numbers: float) -> None:
        self.numbers = list(numbers)

    def integers(self, low: int, high: int | None = None) -> int:
        value = self.numbers.pop(0)
        assert (0 <= value < low) if high is None else (low <= value < high)
        return int(value)

    def uniform(self, low: float, high: float) -> float:
        value = self.numbers.pop(0)
        assert low <= value <= high
        return float(value)


def test_photometric_steps_are_mmsegs_with_clipping_and_whole_levels():
    pixel = torch.tensor([200.4, 100.0, 50.0])[:, None, None]
    # brightness +10.7; mode 1 (contrast first) × 1.2; no saturation; hue −18 of 180
    out = photometric_distortion(pixel, Scripted(1, 10.7, 1, 1, 1.2, 0, 1, -18))
    # 200 (rounded) + 10.7 → 210, 110, 60 (cut); × 1.2 → 252, 132, 72; hue 10 → 172 of 180 (S 182, V 252)
    r, g, b = colorsys.hsv_to_rgb(172 / 180, 182 / 255, 252 / 255)
    assert out.flatten().tolist() == [round(r * 255), round(g * 255), round(b * 255)]
    bright = photometric_distortion(torch.tensor([250.0, 5.0, 0.0])[:, None, None],
                                    Scripted(1, 10.7, 0, 0, 0, 1, 0.5))
    assert bright.flatten().tolist() == [127, 7, 5]  # 255 (clipped), 15, 10, then halved and cut
    grey = torch.full((3, 1, 1), 100.0)  # saturation 0: the colour steps leave it grey
    assert photometric_distortion(grey, Scripted(0, 0, 1, 1.5, 1, 5, 0)).flatten().tolist() == [100] * 3
    with pytest.raises(ValueError, match="3-band"):
        photometric_distortion(torch.zeros(4, 2, 2), np.random.default_rng(0))


def test_photometric_values_stay_in_mmsegs_ranges():
    """Over many draws a grey 100 (colour steps are no-ops) spans brightness ±32 and contrast 0.5-1.5, in either
    order, and is left alone about a quarter of the time (neither step drawn)."""
    grey = torch.full((3, 1, 1), 100.0)
    values = [photometric_distortion(grey, np.random.default_rng(seed))[0, 0, 0].item() for seed in range(3000)]
    assert min(values) >= 34 and max(values) <= 198  # (100 − 32) · 0.5 cut, (100 + 32) · 1.5
    assert min(values) < 45 and max(values) > 180
    assert values.count(100.0) / 3000 == pytest.approx(0.25, abs=0.03)
    assert all(v == int(v) for v in values)


def test_a_crossearth_draw_is_repeatable_and_its_padding_left_alone():
    spec = AugmentSpec(flip="horizontal", resize_short_side=CROSSEARTH_RATIOS, resize_max_long_side=4.0,
                       crop_max_class_ratio=0.75, photometric=True)
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(2)) * 255
    label = (torch.arange(24 * 24).reshape(24, 24) // 100).to(torch.int64)
    first = crop_draw(image, label, 32, spec, np.random.default_rng([7, 3]))
    again = crop_draw(image, label, 32, spec, np.random.default_rng([7, 3]))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = crop_draw(image, label, 32, spec, np.random.default_rng([7, 4]))
    assert not torch.equal(first[0], other[0])
    padded = 0
    for seed in range(40):
        out, out_label = crop_draw(image, label, 32, spec, np.random.default_rng(seed))
        assert out.shape == (3, 32, 32) and out_label.shape == (32, 32)
        pad = out_label == IGNORE_INDEX
        padded += bool(pad.any())
        assert torch.all(out[:, pad] == 0)  # the distortion never brightens the padding
        assert torch.all(out == out.round()) and out.max() <= 255
    assert padded  # a 24-px sample resized below 32 px is padded in some draws
