"""Per-sample counts held sparse while a split is evaluated: the same numbers, in the record's very form, as the
dense N×K×K tensors they replace, at a size that scales with the non-zero cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsdg_bench.records.results import decode_per_image, encode_per_image
from rsdg_bench.scoring.metrics import confusion_counts
from rsdg_bench.scoring.sparse_counts import SparseCountRows
from rsdg_bench.scoring.split_counts import SplitCounts


def _sparse_random(rng: np.random.Generator, images: int, k: int) -> np.ndarray:
    dense = rng.integers(1, 1000, size=(images, k, k)) * (rng.random((images, k, k)) < 0.2)
    dense[images // 2] = 0  # an image whose matrix is all zero (e.g. every pixel ignored)
    return dense


def _dense_encoding(dense: np.ndarray) -> list[list[int]]:
    """The record's entries as the dense tensors were encoded before: torch.nonzero's row-major order."""
    flat = torch.as_tensor(dense).reshape(dense.shape[0], -1)
    row, cell = torch.nonzero(flat, as_tuple=True)
    return torch.stack([row, cell, flat[row, cell]], dim=1).tolist()


def test_rows_put_in_any_order_give_the_dense_sum_entries_and_arrays():
    rng = np.random.default_rng(3)
    dense = _sparse_random(rng, 40, 6)
    rows = SparseCountRows(40, 36)
    for index in rng.permutation(40):
        rows.put(int(index), dense[index])
    assert rows.entries().tolist() == _dense_encoding(dense)
    assert rows.total().tolist() == dense.sum(0).reshape(-1).tolist()
    assert np.array_equal(rows.dense(), dense.reshape(40, 36))
    assert encode_per_image(rows) == encode_per_image(torch.as_tensor(dense))
    assert np.array_equal(decode_per_image(encode_per_image(rows)), dense)


def test_a_row_put_twice_or_of_the_wrong_width_is_refused_rather_than_counted_twice():
    rows = SparseCountRows(3, 4)
    rows.put(1, np.array([0, 2, 0, 1]))
    with pytest.raises(ValueError, match="already put"):
        rows.put(1, np.array([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="width of 4"):
        rows.put(2, np.array([1, 0, 0]))
    assert rows.total().tolist() == [0, 2, 0, 1]


def test_shards_of_several_processes_merge_to_the_whole_and_overlaps_are_refused():
    rng = np.random.default_rng(5)
    dense = _sparse_random(rng, 17, 4)
    whole = SparseCountRows.from_dense(dense)
    shards = []
    for rank in range(3):  # strided, as `ProcessGroup.shard` deals samples
        shard = SparseCountRows(17, 16)
        for index in range(rank, 17, 3):
            shard.put(index, dense[index])
        shards.append(shard.entries())
    merged = SparseCountRows.merged(17, 16, shards)
    assert merged.entries().tolist() == whole.entries().tolist()
    assert merged.total().tolist() == whole.total().tolist()
    with pytest.raises(ValueError, match="same row"):
        SparseCountRows.merged(17, 16, [shards[0], shards[0]])


def test_classified_samples_are_held_as_one_label_prediction_cell_each():
    """fMoW's 62 classes over 22,108 test images: 680 MB as dense matrices, one (label, prediction) cell each here."""
    images, k = 22_108, 62
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, k, images), rng.integers(0, k, images)
    counts = SplitCounts.empty(images, k)
    for index in range(images):
        counts.put(index, *confusion_counts(torch.tensor([labels[index]], dtype=torch.uint8),
                                            torch.tensor([predictions[index]], dtype=torch.uint8), k))
    entries = counts.per_image.entries()
    assert entries.tolist() == [[i, int(labels[i]) * k + int(predictions[i]), 1] for i in range(images)]
    assert counts.per_image.nbytes < images * 100  # dense: images × 62² × 8 bytes
    expected = np.zeros((k, k), dtype=np.int64)
    np.add.at(expected, (labels, predictions), 1)
    assert np.array_equal(counts.matrix(), expected)
    assert counts.ignored.entries().shape == (0, 3)
