"""The compiled scoring loops give torch's answers exactly: the class map is `argmax`'s (first maximal class,
ties included) with every non-finite score found, and the pair counts are `bincount`'s bins. A wrong class
or a lost count here would move every confusion matrix without a sound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsdg_bench.base.errors import DataError
from rsdg_bench.evaluator.class_map import ROW, first_max_classes
from rsdg_bench.scoring.metrics import confusion_counts


def _tied_scores(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Scores of a few levels, so most pixels have tied classes; with −0.0 beside +0.0."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(-1, 2, shape, generator=generator).float()
    return torch.where(scores == 0, torch.where(torch.rand(shape, generator=generator) < 0.5, -0.0, 0.0), scores)


@pytest.mark.parametrize(("shape", "dim"), [
    ((2, 7, 33, 35), 1),  # segmentation batch: 1155 pixels, not a multiple of ROW
    ((1, 3, 5, 7, 9), 2),  # a series: B×T×K×H×W, classes on dim 2
    ((4, 12), 1),  # classification: B×K
    ((2, 1, 17, 3), 1),  # one class
    ((1, 5, ROW + 1), 1),  # a row of pixels and one more
])
def test_class_map_is_argmax_exactly(shape: tuple[int, ...], dim: int):
    for seed in range(3):
        scores = _tied_scores(shape, seed)
        classes, finite = first_max_classes(scores, dim)
        assert finite and classes.dtype == torch.uint8
        assert torch.equal(classes, scores.argmax(dim=dim).to(torch.uint8))
    varied = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first_max_classes(varied, dim)[0], varied.argmax(dim=dim).to(torch.uint8))


def test_class_map_of_a_strided_view_and_of_float64_scores_is_argmax():
    scores = torch.randn(2, 40, 30, 6).permute(0, 3, 1, 2)  # channels-last memory: not contiguous as B×K×H×W
    assert torch.equal(first_max_classes(scores, 1)[0], scores.argmax(dim=1).to(torch.uint8))
    double = _tied_scores((2, 5, 9, 11)).double()  # torch's way, never cast (a cast could make new ties)
    assert torch.equal(first_max_classes(double, 1)[0], double.argmax(dim=1).to(torch.uint8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 6, 40, 38), (0, 3, 17, 1), (1, 0, 40, 38)])
def test_one_non_finite_score_anywhere_is_found(bad: float, where: tuple[int, int, int, int]):
    scores = torch.randn(2, 7, 41, 39)
    scores[where] = bad
    assert first_max_classes(scores, 1)[1] is False
    assert first_max_classes(scores.double(), 1)[1] is False  # torch's way agrees


def test_huge_finite_scores_are_finite_and_the_class_count_is_bounded():
    scores = torch.full((1, 3, 4, 4), 3.0e38)
    scores[0, 2] = torch.finfo(torch.float32).max
    classes, finite = first_max_classes(scores, 1)
    assert finite and bool((classes == 2).all())
    assert first_max_classes(torch.randn(1, 256, 2, 2), 1)[1]
    with pytest.raises(ValueError, match="uint8 class map"):
        first_max_classes(torch.randn(1, 257, 2, 2), 1)


def test_an_empty_batch_has_an_empty_map():
    classes, finite = first_max_classes(torch.randn(0, 4, 8, 8), 1)
    assert classes.shape == (0, 8, 8) and finite


def _torch_counts(label: torch.Tensor, pred: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`confusion_counts` through torch's bincount (a prediction tensor that is not uint8 goes there)."""
    return confusion_counts(label, pred.to(torch.int64), k)


def _numpy_counts(label: torch.Tensor, pred: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`confusion_counts` through NumPy's bincount, without torch (NumPy maps, a prediction that is not uint8)."""
    return confusion_counts(label.numpy(), pred.numpy().astype(np.int64), k)


def _compiled_numpy_counts(label: torch.Tensor, pred: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`confusion_counts` of NumPy uint8 maps (what `score` counts): the compiled pass, without torch."""
    return confusion_counts(label.numpy(), pred.numpy(), k)


@pytest.mark.parametrize("k", [1, 2, 7, 150])
def test_pair_counts_are_the_bincount_bins(k: int):
    generator = torch.Generator().manual_seed(k)
    label = torch.randint(0, k, (3, 50, 61), generator=generator, dtype=torch.uint8)
    label[:, :5] = 255  # ignored pixels: counted apart
    pred = torch.randint(0, k, label.shape, generator=generator, dtype=torch.uint8)
    matrix, stray = confusion_counts(label, pred, k)
    assert matrix.dtype == stray.dtype == np.int64 and matrix.shape == (k, k) and stray.shape == (k,)
    for other in (_torch_counts, _numpy_counts, _compiled_numpy_counts):
        want_matrix, want_stray = other(label, pred, k)
        np.testing.assert_array_equal(matrix, want_matrix)
        np.testing.assert_array_equal(stray, want_stray)
    assert int(matrix.sum()) + int(stray.sum()) == label.numel()


def test_pair_counts_refuse_what_bincount_refuses():
    label = torch.zeros(20, 20, dtype=torch.uint8)
    pred = torch.zeros(20, 20, dtype=torch.uint8)
    pred[19, 19] = 7  # outside [0, 7): it would land in label 1's row
    for count in (confusion_counts, _torch_counts, _numpy_counts, _compiled_numpy_counts):
        with pytest.raises(ValueError, match=r"\[0, 7\)"):
            count(label, pred, 7)
    label[3, 3] = 9  # neither a class nor the ignore index
    for count in (confusion_counts, _torch_counts, _numpy_counts, _compiled_numpy_counts):
        with pytest.raises(DataError, match=r"label values \[9\]"):
            count(label, pred.clamp(max=6), 7)


def test_a_loop_that_cannot_be_cached_is_compiled_in_the_process(monkeypatch: pytest.MonkeyPatch):
    """Where numba finds no writable cache folder it refuses `cache=True`; scoring must go on uncached."""
    import numba

    from rsdg_bench.base.compiled import compiled

    real_njit = numba.njit

    def njit_without_a_cache_folder(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'add': no locator available for file '/read-only/add.py'")
        return real_njit(**options)

    monkeypatch.setattr(numba, "njit", njit_without_a_cache_folder)

    def add(a, b):
        return a + b

    assert compiled(add)(2, 3) == 5
