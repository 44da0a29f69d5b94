"""TorchGeo both ways (rsdg_bench/torchgeo_bridge.py): prepared data as a TorchGeo dataset, and a TorchGeo
dataset scored in place by the harness's metric engine, equal to what `rsdg_bench.evaluate` counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import rsdg_bench as rb
from rsdg_bench.base.errors import AdapterError, DataError, SplitAccessError
from rsdg_bench.models.adapters import InputContract, Normalization
from rsdg_bench.torchgeo_bridge import score_torchgeo, torchgeo_dataset  # the torchgeo extra: a test dependency

TASK = "demo/u2a"
MEAN, STD = 127.5, 64.0


def test_a_prepared_split_is_a_torchgeo_dataset_with_its_keys_and_transforms(data_root: Path):
    from torchgeo.datasets import NonGeoDataset

    dataset = torchgeo_dataset(TASK, data_root=data_root, limit=3)
    stored = rb.open_split(TASK, data_root=data_root, limit=3)
    assert isinstance(dataset, NonGeoDataset) and len(dataset) == 3
    sample = dataset[1]
    assert sample["image"].dtype == torch.float32 and sample["mask"].dtype == torch.int64
    assert torch.equal(sample["image"], stored[1]["image"].float()) and torch.equal(sample["mask"], stored[1]["label"].long())
    flipped = torchgeo_dataset(TASK, data_root=data_root, limit=3,
                               transforms=lambda s: {**s, "image": s["image"].flip(-1), "mask": s["mask"].flip(-1)})
    assert torch.equal(flipped[1]["mask"], sample["mask"].flip(-1))
    with pytest.raises(SplitAccessError, match="target split"):
        torchgeo_dataset(TASK, "target", data_root=data_root)


def test_a_torchgeo_dataset_scores_what_evaluate_counts(data_root: Path):
    """The bridge back: a TorchGeo dataset (here, a target split through the first bridge) scored in place gives
    the confusion matrix `rsdg_bench.evaluate` counts on the same split with the same module and normalization."""
    torch.manual_seed(0)
    module = torch.nn.Conv2d(3, 5, 1)
    contract = InputContract(3, Normalization((MEAN,) * 3, (STD,) * 3))
    task = rb.load_task(TASK)
    evaluation = rb.evaluate(module, task, input_contract=contract, data_root=data_root, progress=False,
                             device="cpu")
    [target_slug] = [ref.slug for ref in task.targets]
    expected = evaluation.confusion_matrices[target_slug]

    dataset = torchgeo_dataset(task, "target", data_root=data_root, for_training=False)
    scores = score_torchgeo(lambda x: module((x - MEAN) / STD), dataset, task)
    np.testing.assert_array_equal(np.asarray(scores["confusion_matrix"]), expected)
    assert expected.sum() > 0 and 0 <= scores["miou"] <= 1
    by_class_map = score_torchgeo(lambda x: module((x - MEAN) / STD).argmax(1), dataset, task)
    assert by_class_map["confusion_matrix"] == scores["confusion_matrix"]


def test_bad_predictions_and_foreign_samples_are_named(data_root: Path):
    dataset = torchgeo_dataset(TASK, data_root=data_root, limit=1)
    with pytest.raises(AdapterError, match="NaN or Inf"):
        score_torchgeo(lambda x: torch.full((1, 5, *x.shape[-2:]), float("nan")), dataset, TASK)
    with pytest.raises(AdapterError, match=r"not 1×5×H×W"):
        score_torchgeo(lambda x: torch.zeros(1, 4, *x.shape[-2:]), dataset, TASK)
    with pytest.raises(AdapterError, match=r"outside \[0, 5\)"):
        score_torchgeo(lambda x: torch.full((1, *x.shape[-2:]), 7), dataset, TASK)
    with pytest.raises(DataError, match="has no mask"):
        score_torchgeo(lambda x: x, [{"image": torch.zeros(3, 4, 4)}], TASK)
    wrong_labels = [{"image": torch.zeros(3, 4, 4), "mask": torch.full((4, 4), 9)}]
    with pytest.raises(DataError):
        score_torchgeo(lambda x: torch.zeros(1, 4, 4, dtype=torch.long), wrong_labels, TASK)
