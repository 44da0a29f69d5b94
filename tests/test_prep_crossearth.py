"""CrossEarth part 1 datasets: every preparer run on its raw-layout fake, checked to the pixel.

Expected values here are written out by hand from the dataset documentation (palettes, mask encodings,
mmseg's window rule, the paper's label-map tables), not recomputed with the code under test.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from conftest import trainable_pixel_linear

from rsdg_bench.base.errors import DataError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import PreparedDataset, quiet_georef, read_raster
from rsdg_bench.prep import get_preparer
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog


def _row(dataset: PreparedDataset, sample_id: str) -> pd.Series:
    rows = dataset.manifest[dataset.manifest["sample_id"] == sample_id]
    assert len(rows) == 1, sample_id
    return rows.iloc[0]


# ----------------------------------------------------------------------------- Potsdam

def test_potsdam_windows_follow_mmseg_with_the_last_one_clamped(ce_data: Path):
    dataset = PreparedDataset.open(ce_data, "potsdam")
    # The fake tiles are 560 rows × 530 columns: windows start at 0 and at the edge minus 512.
    ids = set(dataset.manifest[dataset.manifest["source_file"] == "top_potsdam_2_10_RGB.tif"]["sample_id"])
    assert ids == {"rgb_2_10_0_0_512_512", "rgb_2_10_18_0_530_512", "rgb_2_10_0_48_512_560",
                   "rgb_2_10_18_48_530_560"}
    assert dataset.card.split_counts == {"rgb": {"train": 96, "val": 56}, "irrg": {"train": 96, "val": 56}}
    assert dataset.card.published_counts["irrg"] == {"train": 3456, "val": 2016}


def test_potsdam_labels_decode_the_isprs_palette_in_rgb_order(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "potsdam")
    raw_label = read_raster(ce_raw["potsdam"] / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif")
    prepared = dataset.read_label(_row(dataset, "rgb_2_10_0_0_512_512"))
    # The fake draws class v in a bar at rows 2..7, columns 2+8v..7+8v; read at row 4, column 4+8v.
    expected_colour = {0: (255, 255, 255), 1: (0, 0, 255), 2: (0, 255, 255), 3: (0, 255, 0), 4: (255, 255, 0),
                       5: (255, 0, 0)}
    for value, colour in expected_colour.items():
        assert tuple(raw_label[:, 4, 4 + 8 * value]) == colour
        assert prepared[4, 4 + 8 * value] == value
    black = np.all(raw_label[:, :512, :512] == 0, axis=0)
    assert black.any() and np.all(prepared[black] == IGNORE_INDEX)
    assert dataset.card.classes.names[1] == "building"


def test_potsdam_images_are_the_raw_windows_in_each_domain(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "potsdam")
    for domain, product in (("rgb", "2_Ortho_RGB/top_potsdam_3_13_RGB.tif"), ("irrg", "3_Ortho_IRRG/top_potsdam_3_13_IRRG.tif")):
        raw = read_raster(ce_raw["potsdam"] / product)
        window = dataset.read_image(_row(dataset, f"{domain}_3_13_18_48_530_560"))
        np.testing.assert_array_equal(window, raw[:, 48:560, 18:530])
    assert dataset.band_names("irrg") == ["nir", "red", "green"]


def test_potsdam_keeps_the_world_file_georeferencing(ce_data: Path):
    import geopandas as gpd

    dataset = PreparedDataset.open(ce_data, "potsdam")
    frame = gpd.read_parquet(dataset.root / "manifest.parquet")
    assert frame.crs.to_epsg() == 32633
    row = _row(dataset, "rgb_2_10_18_48_530_560")
    with rasterio.open(dataset.root / row["image"]) as src:
        # Tile 2_10's fake origin is (366000 + 10·300, 5808000 − 2·300) at 5 cm; the window starts 18 px right, 48 down.
        assert src.transform.c == pytest.approx(369_000 + 18 * 0.05)
        assert src.transform.f == pytest.approx(5_807_400 - 48 * 0.05)


def test_potsdam_from_rgbir_alone_gives_the_same_prepared_images(ce_raw: dict[str, Path], ce_data: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["potsdam"], raw, ignore=shutil.ignore_patterns("2_Ortho_RGB", "3_Ortho_IRRG"))
    derived = PreparedDataset.open(get_preparer("potsdam").prepare(raw, tmp_path / "data", progress=False).parent,
                                   "potsdam")
    original = PreparedDataset.open(ce_data, "potsdam")
    assert "rgb from RGBIR" in " ".join(derived.card.notes)
    for sample_id in ("rgb_6_7_0_0_512_512", "irrg_7_13_18_48_530_560"):
        np.testing.assert_array_equal(derived.read_image(_row(derived, sample_id)),
                                      original.read_image(_row(original, sample_id)))


def test_potsdam_falls_back_to_full_labels_and_says_so(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["potsdam"], raw, ignore=shutil.ignore_patterns("5_Labels_all_noBoundary", "4_Ortho_RGBIR"))
    card = PreparedDataset.open(get_preparer("potsdam").prepare(raw, tmp_path / "data", progress=False).parent,
                                "potsdam").card
    assert any("full 5_Labels_all" in note and "not comparable" in note for note in card.notes)


def test_potsdam_missing_tile_names_the_file_and_writes_nothing(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["potsdam"], raw, ignore=shutil.ignore_patterns("5_Labels_all"))
    (raw / "5_Labels_all_noBoundary" / "top_potsdam_4_13_label_noBoundary.tif").unlink()
    with pytest.raises(DataError, match="top_potsdam_4_13_label_noBoundary.tif"):
        get_preparer("potsdam").prepare(raw, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "potsdam").exists()
    assert not (tmp_path / "data" / ".potsdam.partial").exists()


@pytest.mark.slow
def test_potsdam_full_size_tile_has_144_windows(tmp_path: Path):
    raw = get_preparer("potsdam").make_fake(tmp_path / "raw", full_size_tiles=("2_13",))
    dataset = PreparedDataset.open(get_preparer("potsdam").prepare(raw, tmp_path / "data", progress=False).parent,
                                   "potsdam")
    for domain in ("rgb", "irrg"):
        windows = dataset.manifest[dataset.manifest["sample_id"].str.startswith(f"{domain}_2_13_")]
        assert len(windows) == 144
        starts = sorted({w[0] for w in windows["window"]})
        assert starts == [*range(0, 5121, 512), 5488]
        assert all(w[2] - w[0] == 512 and w[3] - w[1] == 512 for w in windows["window"])


def test_off_palette_pixels_within_tolerance_become_ignore_beyond_it_raise(ce_raw: dict[str, Path], tmp_path: Path):
    from rsdg_bench.prep import isprs

    source = ce_raw["potsdam"] / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif"
    label = read_raster(source)
    few, many = label.copy(), label.copy()
    few[:, 100, 100] = (10, 20, 30)  # 1 pixel of 296800: below the 1e-4 tolerance
    many[:, 100:140, 100:140] = np.array([10, 20, 30], dtype=np.uint8)[:, None, None]
    for name, array in (("few.tif", few), ("many.tif", many)):
        isprs.write_tif(tmp_path / name, array)
    decoded, stray = isprs.decode_label(tmp_path / "few.tif")
    assert stray == 1 and decoded[100, 100] == IGNORE_INDEX
    with pytest.raises(DataError, match=r"many.tif: colour \(10, 20, 30\) at \(row 100, col 100\)"):
        isprs.decode_label(tmp_path / "many.tif")


# ----------------------------------------------------------------------------- Vaihingen

def test_vaihingen_areas_split_and_clamped_windows(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "vaihingen")
    raw_image = read_raster(ce_raw["vaihingen"] / "ISPRS_semantic_labeling_Vaihingen" / "top" / "top_mosaic_09cm_area6.tif")
    _, height, width = raw_image.shape
    rows = dataset.rows("irrg", "val")
    area6 = rows[rows["source_file"] == "top_mosaic_09cm_area6.tif"]
    assert sorted(tuple(w) for w in area6["window"]) == sorted(
        (x0, y0, x0 + 512, y0 + 512) for y0 in (0, height - 512) for x0 in (0, width - 512))
    last = area6[[tuple(w) == (width - 512, height - 512, width, height) for w in area6["window"]]].iloc[0]
    np.testing.assert_array_equal(dataset.read_image(last), raw_image[:, height - 512:, width - 512:])
    assert set(dataset.rows("irrg", "train")["source_file"].str.extract(r"(area\d+)")[0]) == {
        f"area{n}" for n in (1, 11, 13, 15, 17, 21, 23, 26, 28, 3, 30, 32, 34, 37, 5, 7)}


def test_vaihingen_without_the_eroded_labels_names_the_archive(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["vaihingen"], raw,
                    ignore=shutil.ignore_patterns("ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"))
    with pytest.raises(DataError, match="ground_truth_eroded_COMPLETE.zip"):
        get_preparer("vaihingen").prepare(raw, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "vaihingen").exists()


# ----------------------------------------------------------------------------- LoveDA

def test_loveda_masks_shift_by_one_with_zero_as_ignore(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "loveda")
    raw_mask = read_raster(ce_raw["loveda"] / "Val" / "Urban" / "masks_png" / "9.png")[0]
    assert list(raw_mask[0, :8]) == list(range(8))  # the fake's row of every raw value
    label = dataset.read_label(_row(dataset, "urban_val_9"))
    assert list(label[0, :8]) == [255, 0, 1, 2, 3, 4, 5, 6]
    assert dataset.card.split_counts == {"rural": {"train": 3, "val": 3}, "urban": {"train": 3, "val": 3}}
    assert dataset.card.published_counts["urban"]["val"] == 677


def test_loveda_images_are_stored_as_zstd_geotiff_with_the_raw_pixels(ce_data: Path, ce_raw: dict[str, Path],
                                                                       tmp_path: Path):
    """The prepared encoding chosen by decode time (README, Performance): an RGB image becomes a zstd-compressed
    GeoTIFF with exactly the raw PNG's pixels, tiled unless both its sides are at most `SMALL_RASTER` px (the
    fake's 96² images: strips); a label stays a single-band PNG."""
    from rsdg_bench.datasets.prepared import SMALL_RASTER, _write_raster

    dataset = PreparedDataset.open(ce_data, "loveda")
    row = _row(dataset, "urban_val_9")
    assert row["image"].endswith(".tif") and row["label"].endswith(".png") and dataset.card.format_version == 3
    with quiet_georef(), rasterio.open(dataset.root / row["image"]) as src:  # the fake has no georeference
        assert src.profile["compress"] == "zstd" and not src.profile["tiled"] and src.width <= SMALL_RASTER
    raw_image = read_raster(ce_raw["loveda"] / "Val" / "Urban" / "images_png" / "9.png")
    assert np.array_equal(dataset.read_image(row), raw_image)
    for height, width, tiled in ((SMALL_RASTER, SMALL_RASTER, False), (SMALL_RASTER + 1, 40, True), (1024, 1024, True)):
        array = np.random.default_rng(height).integers(0, 255, (3, height, width), dtype=np.uint8)
        _write_raster(tmp_path / f"{height}.tif", array, None, None)
        with quiet_georef(), rasterio.open(tmp_path / f"{height}.tif") as src:
            assert (src.profile["tiled"], src.profile["compress"]) == (tiled, "zstd"), (height, width)
        assert np.array_equal(read_raster(tmp_path / f"{height}.tif"), array)


def test_loveda_bad_mask_value_and_missing_split_are_named(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(ce_raw["loveda"], raw)
    mask_path = raw / "Train" / "Rural" / "masks_png" / "0.png"
    mask = read_raster(mask_path)
    mask[0, 5, 6] = 9
    with quiet_georef(), rasterio.open(mask_path, "w", driver="PNG", height=mask.shape[1], width=mask.shape[2], count=1,
                       dtype="uint8") as dst:
        dst.write(mask)
    with pytest.raises(DataError, match=r"0.png: mask value 9 at \(row 5, col 6\)"):
        get_preparer("loveda").prepare(raw, tmp_path / "data", progress=False)
    shutil.rmtree(raw / "Val")
    with pytest.raises(DataError, match=r"(?s)Val/Urban/images_png.*Val.zip"):
        get_preparer("loveda").prepare(raw, tmp_path / "data2", progress=False)


# ----------------------------------------------------------------------------- RescueNet

def test_loveda_archives_are_checked_against_the_published_md5(tmp_path: Path):
    download = get_preparer("loveda").make_fake(tmp_path / "download", archive=True)
    with pytest.raises(DataError, match=r"Train.zip has md5 [0-9a-f]{32}, the published one is de2b1960"):
        get_preparer("loveda").prepare(download, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "loveda").exists()


def test_rescuenet_images_are_copied_byte_for_byte(ce_data: Path, ce_raw: dict[str, Path]):
    dataset = PreparedDataset.open(ce_data, "rescuenet")
    row = _row(dataset, "uav_10005")
    raw_jpg = ce_raw["rescuenet"] / "test" / "test-org-img" / "10005.jpg"
    assert row["image"].endswith(".jpg") and row["image_sha256"] == sha256_file(raw_jpg)
    assert dataset.card.split_counts == {"uav": {"train": 3, "val": 2, "test": 3}}
    # read back as the papers' pipelines decode it (libjpeg-turbo: torchvision.io here), not as GDAL does
    from torchvision.io import decode_jpeg, read_file

    assert np.array_equal(dataset.read_image(row), decode_jpeg(read_file(str(raw_jpg))).numpy())
    # the card says what decoded the JPEGs, with its version: another decoder shows
    import PIL
    from PIL import features

    assert dataset.card.decoders["jpeg"] == (f"Pillow {PIL.__version__} with libjpeg-turbo "
                                             f"{features.version('libjpeg_turbo')}")
    assert dataset.card.decoders["other"].startswith(f"GDAL {rasterio.__gdal_version__}")


def test_rescuenet_v1_labels_are_refused(ce_raw: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "RescueNet"
    shutil.copytree(ce_raw["rescuenet"], raw)
    label_path = raw / "val" / "val-label-img" / "10003_lab.png"
    label = read_raster(label_path)
    label[0, 0, 0] = 11
    with quiet_georef(), rasterio.open(label_path, "w", driver="PNG", height=label.shape[1], width=label.shape[2], count=1,
                       dtype="uint8") as dst:
        dst.write(label)
    with pytest.raises(DataError, match="v1.0"):
        get_preparer("rescuenet").prepare(raw, tmp_path / "data", progress=False)


def test_pr2res_reads_both_sides_through_table_12(ce_data: Path):
    task = TaskCatalog().task("crossearth/pr2res")
    data = TaskData(ce_data, task, phase="evaluate")
    target = data.open(task.targets[0])
    sample = target[next(i for i in range(len(target)) if target.rows.iloc[i]["sample_id"] == "uav_10005")]
    # Raw row 0 holds RescueNet values 0..10: background, water, 4 building grades, vehicle, road clear,
    # road blocked, tree, pool → clutter, ignore, building ×4, car, impervious ×2, tree, ignore.
    assert sample["label"][0, :11].tolist() == [4, 255, 1, 1, 1, 1, 3, 0, 0, 2, 255]
    source = TaskData(ce_data, task, phase="train").open(task.source)
    first = source[0]
    # Potsdam's isprs6 bar row: impervious, building, low vegetation, tree, car, clutter → 0, 1, ignore, 2, 3, 4.
    assert [int(first["label"][4, 4 + 8 * v]) for v in range(6)] == [0, 1, 255, 2, 3, 4]


# ----------------------------------------------------------------------------- OpenEarthMap

def test_openearthmap_leaves_out_xbd_and_keeps_each_crs(ce_data: Path):
    import geopandas as gpd

    dataset = PreparedDataset.open(ce_data, "openearthmap")
    assert not dataset.manifest["sample_id"].str.contains("el_rodeo").any()
    assert sorted(dataset.rows("global", "val")["sample_id"]) == ["global_aachen_3", "global_tokyo_3"]
    assert any("3 xBD-derived entries" in note for note in dataset.card.notes)
    with rasterio.open(dataset.root / _row(dataset, "global_tokyo_3")["image"]) as src:
        assert src.crs.to_epsg() == 32654 and (src.height, src.width) == (72, 80)
    frame = gpd.read_parquet(dataset.root / "manifest.parquet")
    assert frame.crs.to_epsg() == 4326
    assert set(frame["crs"]) == {"EPSG:32632", "EPSG:32654"}
    tokyo = frame[frame["sample_id"] == "global_tokyo_3"].geometry.iloc[0]
    assert 130 < tokyo.centroid.x < 145  # UTM zone 54 is 138°E-144°E


def test_u2oem_reads_openearthmap_through_table_13(ce_data: Path):
    task = TaskCatalog().task("crossearth/u2oem")
    target = TaskData(ce_data, task, phase="evaluate").open(task.targets[0])
    sample = target[0]
    # Raw row 0 holds OEM values 0..8: unknown, bareland, rangeland, developed, road, tree, water, agriculture,
    # building → ignore, barren 4, background 0, background 0, road 2, forest 5, water 3, agricultural 6, building 1.
    assert sample["label"][0, :9].tolist() == [255, 4, 0, 0, 2, 5, 3, 6, 1]


# ----------------------------------------------------------------------------- the published split

def _trained_once(model, task, data_root: Path, checkpoint: Path):
    """`model` after one training iteration of `task`'s protocol batch, as a spec with that checkpoint."""
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    train_adapter(build_trainable(model, task, data_root), task, data_root, checkpoint,
                  overrides=TrainOverrides(iterations=1), progress=False)
    return replace(model, checkpoint=checkpoint)


def test_a_run_on_data_that_is_not_the_published_split_is_flagged_and_kept_off_the_board(ce_data: Path, tmp_path: Path):
    from rsdg_bench.leaderboards.aggregate import build_board
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.records.results import ResultStore
    from rsdg_bench.run.runner import RunSettings, run_tasks

    settings = RunSettings(data_root=ce_data, results_root=tmp_path / "res", device=torch.device("cpu"), progress=False)
    # smp trains on a CrossEarth task (one iteration of the protocol's batch: one 512² crop) and runs on it
    pi2v = TaskCatalog().task("crossearth/pi2v")
    smp = _trained_once(ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}), pi2v, ce_data, tmp_path / "pi2v.pt")
    [outcome] = run_tasks([pi2v], smp, replace(settings, limit=1, results_root=tmp_path / "smp"))
    assert outcome.error is None and len(outcome.written) == 1

    # LoveDA's fake holds 3 of the published 677 Urban/val images (any trained weights show it: a 1×1 convolution's)
    task = TaskCatalog().task("crossearth/r2u")
    [outcome] = run_tasks([task], _trained_once(trainable_pixel_linear(), task, ce_data, tmp_path / "r2u.pt"), settings)
    assert outcome.error is None
    [(path, record)] = ResultStore(tmp_path / "res").load_all()
    assert (record.evaluated.num_samples, record.evaluated.published_samples) == (3, 677)
    board = build_board([(path, record)])
    assert not board.tasks and "the published split has 677" in board.excluded[0][1]
