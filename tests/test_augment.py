"""Training-draw augmentation (`rsdg_bench.train.augment`): the flips' probabilities, the rotation's direction,
centre, borders and interpolation as albumentations' Rotate defaults make them, and protocols without rotation
keeping their random streams."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.protocol.task_schema import AugmentSpec
from rsdg_bench.train.augment import augment_draw, flip_axes, rotate, rotation_degrees


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
