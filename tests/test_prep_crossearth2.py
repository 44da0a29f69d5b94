"""CrossEarth part 2 datasets (roads, WHU Building, CASID) on their raw-layout fakes, and all 32 tasks.

Expected values are written out by hand from the dataset documentation (thresholds, mask encodings,
the crop rule, Table 1's counts), not recomputed with the code under test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import pixel_linear

from rsdg_bench.base.errors import DataError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.datasets.prepared import PreparedDataset, read_raster
from rsdg_bench.datasets.windows import window_grid
from rsdg_bench.prep import casid, get_preparer
from rsdg_bench.prep.fakes import write_raster
from rsdg_bench.protocol.task_schema import TaskCatalog


def _row(dataset: PreparedDataset, sample_id: str) -> pd.Series:
    rows = dataset.manifest[dataset.manifest["sample_id"] == sample_id]
    assert len(rows) == 1, sample_id
    return rows.iloc[0]


def test_deepglobe_masks_are_binarized_at_128_and_images_copied(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "deepglobe_road")
    assert dataset.card.split_counts == {"sat": {"train": 4}}  # valid/ and test/ have no masks: not prepared
    raw_mask = read_raster(ce_raw["deepglobe_road"] / "train" / "100_mask.png")
    assert raw_mask[0, 0, :4].tolist() == [127, 128, 0, 255]
    assert set(np.unique(raw_mask).tolist()) - {0, 255}  # not pure 0/255, as the real masks
    row = _row(dataset, "sat_100")
    assert dataset.read_label(row)[0, :4].tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(dataset.read_label(row), (raw_mask[0] >= 128).astype(np.uint8))
    assert row["image_sha256"] == sha256_file(ce_raw["deepglobe_road"] / "train" / "100_sat.jpg")


def test_massachusetts_splits_and_strict_binary_masks(ce_data: Path, ce_raw: dict[str, Path], tmp_path: Path):
    dataset = PreparedDataset.open(ce_data, "massachusetts_roads")
    assert dataset.card.split_counts == {"aerial": {"train": 2, "val": 1, "test": 2}}
    assert dataset.card.published_counts["aerial"]["test"] == 49
    raw_label = read_raster(ce_raw["massachusetts_roads"] / "tiff" / "test_labels" / "10081_15.tif")[0]
    np.testing.assert_array_equal(dataset.read_label(_row(dataset, "aerial_10081_15")), raw_label // 255)
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["massachusetts_roads"], raw)
    bad = raw_label.copy()
    bad[3, 3] = 128
    write_raster(raw / "tiff" / "test_labels" / "10081_15.tif", bad[None], "GTiff")
    with pytest.raises(DataError, match=r"10081_15.tif: a binary mask must hold 0/255"):
        get_preparer("massachusetts_roads").prepare(raw, tmp_path / "data", progress=False)


def test_globalroadnet_convention_and_a_missing_mask(ce_data: Path, ce_raw: dict[str, Path], tmp_path: Path):
    dataset = PreparedDataset.open(ce_data, "globalroadnet")
    assert dataset.card.split_counts == {"global": {"test": 3}}
    assert any("UNVERIFIED" in note for note in dataset.card.notes)
    raw = tmp_path / "GlobalRoadNet"
    shutil.copytree(ce_raw["globalroadnet"], raw)
    (raw / "test" / "labels" / "city01_0001.png").unlink()
    with pytest.raises(DataError, match="city01_0001"):
        get_preparer("globalroadnet").prepare(raw, tmp_path / "data", progress=False)


def test_whu_subsets_merge_the_no_building_folders(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "whu_building")
    assert dataset.card.split_counts == {"aerial": {"train": 3, "val": 2, "test": 1},
                                         "satellite1": {"test": 2}, "satellite2": {"train": 3, "test": 2}}
    train2 = dataset.rows("satellite2", "train")
    assert sorted(f.split("/")[1] for f in train2["source_file"]) == ["train", "train", "train_no"]
    row = dataset.rows("aerial", "train").iloc[0]
    raw_label = read_raster(ce_raw["whu_building"] / "aerial" / "train" / "label" / Path(row["source_file"]).name)[0]
    np.testing.assert_array_equal(dataset.read_label(row), raw_label // 255)


def test_whu_without_satellite1_says_so_and_partial_subsets_are_errors(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["whu_building"], raw, ignore=shutil.ignore_patterns("satellite1"))
    card = PreparedDataset.open(get_preparer("whu_building").prepare(raw, tmp_path / "data", progress=False).parent,
                                "whu_building").card
    assert "satellite1" not in card.split_counts and any("satellite1" in n for n in card.notes)
    shutil.rmtree(raw / "aerial" / "val")
    with pytest.raises(DataError, match="WHU aerial: no tiles for split"):
        get_preparer("whu_building").prepare(raw, tmp_path / "data2", progress=False)


def test_casid_crops_on_the_clamped_1024_grid_with_colours_decoded(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "casid")
    # Fake images are 1100 rows × 1090 columns: crops start at 0 and at 1100 − 1024 = 76 / 1090 − 1024 = 66.
    crops = dataset.manifest[dataset.manifest["source_file"] == "SubMs/image/subms_000.png"]
    assert sorted(tuple(w) for w in crops["window"]) == [(0, 0, 1024, 1024), (0, 76, 1024, 1100),
                                                         (66, 0, 1090, 1024), (66, 76, 1090, 1100)]
    raw_label = read_raster(ce_raw["casid"] / "SubMs" / "label" / "subms_000-label.png")
    assert tuple(raw_label[:, 0, 4]) == (255, 255, 0) and tuple(raw_label[:, 0, 16]) == (0, 112, 255)
    label = dataset.read_label(_row(dataset, "sub_subms_000_0_0_1024_1024"))
    assert label[0, :20].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    # 3 images per zone: the documented rule puts the first 2 (by name) in train: 8 and 4 crops.
    assert all(counts == {"train": 8, "test": 4} for counts in dataset.card.split_counts.values())


def test_casid_split_rule_reproduces_table_1_on_full_zones():
    # Full zones: 284, 284, 202, 210 images of 25 crops; Table 1's train crops / 25 = 196, 201, 136, 148.
    assert [casid.train_image_count(z, n) for z, n in (("sub", 284), ("tem", 284), ("tms", 202), ("trf", 210))] == [
        196, 201, 136, 148]
    starts = sorted({y0 for y0, _, _, _ in window_grid(5000, 5000, 1024, 1024)})
    assert starts == [0, 1024, 2048, 3072, 3976] and len(window_grid(5000, 5000, 1024, 1024)) == 25


def test_casid_5000_image_gives_25_crops_and_split_files_win(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "CASID"
    shutil.copytree(ce_raw["casid"], raw)
    big = np.zeros((3, 5000, 5000), dtype=np.uint8)
    write_raster(raw / "TemMs" / "image" / "temms_000.png", big)
    write_raster(raw / "TemMs" / "label" / "temms_000-label.png", big)  # all black = background
    (raw / "TemMs" / "train.txt").write_text("temms_001.png\ntemms_002.png\n")
    (raw / "TemMs" / "test.txt").write_text("temms_000.png\n")
    dataset = PreparedDataset.open(get_preparer("casid").prepare(raw, tmp_path / "data", progress=False).parent, "casid")
    assert dataset.card.split_counts["tem"] == {"train": 8, "test": 25}
    assert any(note.startswith("tem: split from TemMs/train.txt") for note in dataset.card.notes)


def test_crossearth_suite_has_32_tasks_and_each_runs_on_the_fakes(ce_data: Path, tmp_path: Path):
    from rsdg_bench.run.runner import RunSettings, run_tasks

    tasks = TaskCatalog().suite_tasks("crossearth")
    assert len(tasks) == 32 and len({t.id for t in tasks}) == 32
    binary = {t.id: t.headline_class_indices() for t in tasks if t.classes in {"road2", "building2"}}
    assert set(binary) == {f"crossearth/{n}" for n in ("d2m", "d2g", "a2s", "s2a", "a2s-i")}
    assert all(indices == [1] for indices in binary.values())  # the foreground IoU is the headline
    model = pixel_linear()  # a U-Net took over a minute for the 32 tasks; smp on CrossEarth tasks: test_prep_crossearth.py
    outcomes = run_tasks(tasks, model, RunSettings(data_root=ce_data, results_root=tmp_path, device=torch.device("cpu"),
                                                   limit=1, progress=False))
    assert [(o.task_id, o.error) for o in outcomes] == [(t.id, None) for t in tasks]
