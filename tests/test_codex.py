"""CoDEX suite, change-detection part: OSCD's raw layout through the real preparer, the stacked bi-temporal
bands, the change metrics, and adapters declaring the kinds they do."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.prep import get_preparer
from rsdg_bench.prep.oscd import BANDS, CITIES, IMAGES, decode_change, patch_origins, stacked_band_names
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore
from rsdg_bench.run.runner import RunSettings, run_tasks


@pytest.fixture(scope="module")
def oscd(prepared_fakes) -> dict[str, Path]:
    return {"raw": prepared_fakes.raw("oscd"), "data": prepared_fakes.data("oscd")}


def test_cities_become_stacked_pairs_with_binary_change_maps(oscd: dict[str, Path]):
    dataset = PreparedDataset.open(oscd["data"], "oscd")
    assert dataset.card.split_counts == {"s2": {"test": 1, "train": 2},  # from the fake's train.txt / test.txt
                                         "s2_75": {"test": 64, "train": 128}}  # 64 patches per city
    assert dataset.band_names("s2") == stacked_band_names() and dataset.band_names("s2")[13] == "t2_B01"
    row = dataset.rows("s2", "train").iloc[0]
    image = dataset.read_image(row)
    for date, folder in ((0, "imgs_1_rect"), (1, "imgs_2_rect")):
        for b, band in enumerate(BANDS):
            with rasterio.open(oscd["raw"] / IMAGES / row["sample_id"] / folder / f"{band}.tif") as src:
                assert np.array_equal(image[13 * date + b], src.read(1))  # every band of both dates, in order
    label = dataset.read_label(row)
    assert label[0, 0] == 1 and label[5:15, 8:20].all() and label.sum() == 121  # 255 → change, 0 → no change
    with pytest.raises(DataError, match="0 \\(no change\\) and 255"):
        decode_change(np.array([[0, 128]], np.uint8), "cm.png")


def test_archives_prepare_and_a_missing_band_is_named(prepared_fakes, tmp_path: Path):
    # one city per split is enough to show the three archives prepare (each city is 65 samples to write)
    download = get_preparer("oscd").make_fake(tmp_path / "a", archive=True, cities={"train": ("bercy",),
                                                                                    "test": ("rio",)})
    assert sorted(p.name for p in download.iterdir())[0].startswith("Onera Satellite Change Detection dataset")
    get_preparer("oscd", verify_checksums=False).prepare(download, tmp_path / "data", progress=False)
    assert PreparedDataset.open(tmp_path / "data", "oscd").card.split_counts["s2"] == {"train": 1, "test": 1}
    # a private copy of the shared fake, its first city (read first: it fails before any city is written) broken
    shared = prepared_fakes.raw("oscd")
    raw = Path(shutil.copytree(shared, tmp_path / "b" / shared.name))
    (raw / IMAGES / "bercy" / "imgs_2_rect" / "B8A.tif").unlink()
    with pytest.raises(DataError, match="bercy/imgs_2_rect/B8A.tif is missing"):
        get_preparer("oscd").prepare(raw, tmp_path / "data2", progress=False)


def test_change_task_scores_the_change_class_and_checks_adapter_kinds(oscd: dict[str, Path], tmp_path: Path):
    task = TaskCatalog().task("codex/oscd")
    assert task.kind == "change_detection" and task.headline_class_indices() == [1]
    # 4 of the test city's 64 patches (each with changed pixels): the scoring is what this checks, not the U-Net
    settings = RunSettings(oscd["data"], tmp_path, progress=False, limit=4)
    [outcome] = run_tasks([task], ModelSpec("smp", {"encoder": "resnet18"}, random_init=True), settings)
    assert outcome.error is None
    (_, record), = ResultStore(tmp_path).load_all()
    block = next(iter(record.metrics.values()))
    change = block["per_class"]["change"]
    assert block["miou"] == change["iou"] and block["mf1"] == change["f1"] and block["aa"] == change["recall"]
    assert "precision" in change and record.normalization["num_bands"] == 6  # t1/t2 × B04, B03, B02
    [refused] = run_tasks([task], ModelSpec("cromss", {}, random_init=True), settings)
    assert "does not do change_detection" in refused.error


def test_change_task_trains_on_the_source_cities(oscd: dict[str, Path], tmp_path: Path):
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    task = TaskCatalog().task("codex/oscd")
    adapter = build_trainable(ModelSpec("smp", {"encoder": "resnet18"}), task, oscd["data"])
    report = train_adapter(adapter, task, oscd["data"], tmp_path / "oscd.pt",
                           overrides=TrainOverrides(iterations=2, batch_size=2), progress=False)
    assert report.opened_splits == ["oscd/s2_75/train"]  # the test cities are never read


def test_codex_patches_are_an_evenly_spaced_8x8_grid_from_corner_to_corner():
    assert patch_origins(600) == [0, 75, 150, 225, 300, 375, 450, 525]  # a 600 px city: the plain 8×8 cut
    assert patch_origins(75) == [0] * 8
    small = patch_origins(100)
    assert small[0] == 0 and small[-1] == 25 and small == sorted(small)  # overlapping, still covering the city
    with pytest.raises(DataError, match="smaller than a 75 px patch"):
        patch_origins(74)


def test_every_patch_is_its_window_of_the_city_and_keeps_the_city_as_its_scene(oscd: dict[str, Path]):
    dataset = PreparedDataset.open(oscd["data"], "oscd")
    city = dataset.rows("s2", "test").iloc[0]
    whole, whole_label = dataset.read_image(city), dataset.read_label(city)
    patches = dataset.rows("s2_75", "test")
    assert len(patches) == 64 and set(patches["group"]) == {city["sample_id"]}
    assert patches["sample_id"].is_unique
    for _, row in patches.iloc[[0, 9, 63]].iterrows():
        x0, y0, x1, y1 = row["window"]
        assert (x1 - x0, y1 - y0) == (75, 75)
        assert np.array_equal(dataset.read_image(row), whole[:, y0:y1, x0:x1])
        assert np.array_equal(dataset.read_label(row), whole_label[y0:y1, x0:x1])


@pytest.mark.slow
def test_real_size_city_fakes_give_codex_896_and_640_patches(tmp_path: Path):
    """All 24 official cities, of sizes from 96 to 359 px (not squares; the official sizes are not in our
    references): 64 patches each, so exactly CoDEX's Table 1 counts, which are the published ones."""
    names = [c for split in CITIES.values() for c in split]
    sizes = {city: (96 + 11 * i, 130 + 9 * i) for i, city in enumerate(names)}
    raw = get_preparer("oscd").make_fake(tmp_path / "raw", cities=CITIES, sizes=sizes)
    get_preparer("oscd").prepare(raw, tmp_path / "data", progress=False)
    dataset = PreparedDataset.open(tmp_path / "data", "oscd")
    assert dataset.card.split_counts["s2_75"] == {"train": 896, "test": 640}
    assert dataset.card.published_counts["s2_75"] == {"train": 896, "test": 640}
    assert dataset.rows("s2_75", "test").groupby("group").size().eq(64).all()
