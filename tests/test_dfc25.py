"""DFC25 track 1: the OpenEarthMap-SAR preparer on its fake, no-data borders, unlabelled test, SAR replication."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rsdg_bench.base.errors import AdapterError, DataError
from rsdg_bench.datasets.prepared import PreparedDataset, read_raster
from rsdg_bench.models.adapters import InputContract, Normalization
from rsdg_bench.prep import get_preparer
from rsdg_bench.prep.openearthmap_sar import edge_zero_mask
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog


@pytest.fixture(scope="module")
def sar_raw(prepared_fakes) -> Path:
    return prepared_fakes.raw("openearthmap_sar")


@pytest.fixture(scope="module")
def sar_data(prepared_fakes) -> Path:
    """OpenEarthMap-SAR and OpenEarthMap (the optical source of `dfc25/oem2sar`) in the shared data root."""
    return prepared_fakes.data("openearthmap_sar", "openearthmap")


def test_edge_zero_mask_takes_border_runs_not_interior_zeros():
    sar = np.full((6, 7), 9, dtype=np.uint8)
    sar[:, :2] = 0      # left border
    sar[5, :] = 0       # bottom border
    sar[2, 4] = 0       # an interior zero: data
    sar[0, 3] = 0       # a zero on the top edge: border
    mask = edge_zero_mask(sar)
    expected = np.zeros((6, 7), dtype=bool)
    expected[:, :2] = True
    expected[5, :] = True
    expected[0, 3] = True
    np.testing.assert_array_equal(mask, expected)


def test_pairing_classes_and_the_sar_border(sar_data: Path, sar_raw: Path):
    dataset = PreparedDataset.open(sar_data, "openearthmap_sar")
    assert dataset.card.split_counts == {"sar": {"train": 3, "val": 2, "test": 2}, "optical": {"train": 3}}
    assert dataset.card.unlabelled == ["sar/test"] and any("PSEUDO-LABELS" in n for n in dataset.card.notes)
    rows = dataset.manifest.set_index("sample_id")
    sar_label = dataset.read_label(rows.loc["sar_val_scene_003"])
    raw_label = read_raster(sar_raw / "val" / "labels" / "scene_003.tif")[0]
    raw_sar = read_raster(sar_raw / "val" / "sar_images" / "scene_003.tif")[0]
    # Raw row 10, columns 10..18 hold 0..8: unknown → ignore, 1..8 → 0..7.
    assert raw_label[10, 10:19].tolist() == list(range(9))
    assert sar_label[10, 10:19].tolist() == [255, 0, 1, 2, 3, 4, 5, 6, 7]
    # The fake's border: 9 zero columns on the left (6 + scene index 3) and 4 zero rows at the bottom.
    assert (raw_sar[:, :9] == 0).all() and (sar_label[:, :9] == 255).all() and (sar_label[-4:, :] == 255).all()
    assert raw_sar[40, 40] == 0 and sar_label[40, 40] == (raw_label[40, 40] - 1 if raw_label[40, 40] else 255)
    optical = dataset.read_label(rows.loc["optical_train_scene_000"])
    sar_train = dataset.read_label(rows.loc["sar_train_scene_000"])
    assert (sar_train[:, :6] == 255).all() and not (optical[:, :6] == 255).all()  # border is SAR no-data only
    assert dataset.band_names("sar") == ["sar"] and dataset.band_names("optical") == ["red", "green", "blue"]


def test_scoring_the_unlabelled_test_split_is_refused(sar_data: Path, tmp_path: Path):
    task = TaskCatalog().task("dfc25/sar")
    ref = task.targets[0].model_copy(update={"split": "test"})
    with pytest.raises(DataError, match="sar/test has no public labels"):
        TaskData(sar_data, task, phase="evaluate").open(ref)


def test_a_scene_missing_its_label_is_named(sar_raw: Path, tmp_path: Path):
    raw = tmp_path / "DFC2025Track1"
    shutil.copytree(sar_raw, raw)
    (raw / "val" / "labels" / "scene_004.tif").unlink()
    with pytest.raises(DataError, match="scene_004.tif"):
        get_preparer("openearthmap_sar").prepare(raw, tmp_path / "data", progress=False)


def test_single_band_replication_only_when_the_task_asks():
    contract = InputContract(num_bands=3, normalization=Normalization((10.0,) * 3, (2.0,) * 3))
    sar = torch.arange(4.0).reshape(1, 1, 2, 2)
    out = contract.prepare(sar, ["sar"], "x", replicate_single_band=True)
    assert out.shape == (1, 3, 2, 2) and torch.equal(out[:, 0], out[:, 2]) and out[0, 0, 0, 1] == -4.5
    with pytest.raises(AdapterError, match="has 1 bands"):
        contract.prepare(sar, ["sar"], "x")


def test_the_three_dfc25_tasks_run_on_the_fakes(sar_data: Path, tmp_path: Path):
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.run.runner import RunSettings, run_tasks

    tasks = TaskCatalog().suite_tasks("dfc25")
    assert [t.id for t in tasks] == ["dfc25/oem2sar", "dfc25/sar", "dfc25/optical2optical"]
    model = ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}, random_init=True)
    outcomes = run_tasks(tasks, model, RunSettings(data_root=sar_data, results_root=tmp_path, device=torch.device("cpu"),
                                                   limit=1, progress=False))
    assert [o.error for o in outcomes] == [None, None, None]


def test_prepare_from_the_archive(sar_data: Path, tmp_path: Path):
    download = get_preparer("openearthmap_sar").make_fake(tmp_path / "download", archive=True)
    folder = get_preparer("openearthmap_sar").prepare(download, tmp_path / "data", progress=False)
    card = PreparedDataset.open(folder.parent, "openearthmap_sar").card
    assert card.split_counts == PreparedDataset.open(sar_data, "openearthmap_sar").card.split_counts
