"""NoLDO-S12 and DFC2020: raw-layout fakes through the real preparers, label decoding and band order to the
pixel and band, the NoL index, the leakage audit, band selection by name, the training protocol pieces,
and the suite end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from rsdg_bench.base.errors import DataError
from rsdg_bench.cli import main
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.label_maps import load_label_map
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.prep import get_preparer
from rsdg_bench.prep.dfc2020 import decode_dfc
from rsdg_bench.prep.noldo_s12 import S2_BANDS, decode_label
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog, TrainingSpec
from rsdg_bench.records.results import ResultStore
from rsdg_bench.train.training import dice_loss, lr_factor, segmentation_loss


@pytest.fixture(scope="module")
def noldo(prepared_fakes) -> dict[str, Path]:
    """Both fakes, unpacked, and both prepared into the session's shared data root."""
    names = ("noldo_s12", "dfc2020")
    return {**{name: prepared_fakes.raw(name) for name in names}, "data": prepared_fakes.data(*names)}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_dw_and_osm_labels_and_bands_match_the_raw_files(noldo: dict[str, Path]):
    dataset = PreparedDataset.open(noldo["data"], "noldo_s12")
    assert dataset.card.split_counts == {"dw_s1": {"test": 2, "train": 3}, "dw_s2": {"test": 2, "train": 3},
                                         "osm_s1": {"test": 2, "train": 2}, "osm_s2": {"test": 2, "train": 2}}
    assert dataset.card.classes_of("dw_s2").id == "dynamicworld9" and dataset.card.classes_of("osm_s1").id == "osm13"
    assert dataset.band_names("dw_s2") == list(S2_BANDS) and dataset.band_names("osm_s1") == ["VV", "VH"]
    for labels, domain in (("dw", "dw_s2"), ("osm", "osm_s1")):
        row = dataset.rows(domain, "train").iloc[0]
        tile_id = row["sample_id"].removeprefix(f"{domain}_train_")
        folder = noldo["noldo_s12"] / "data_s12" / f"{labels}_train"
        raw_label = read(folder / f"label_{labels}" / f"{labels}_{tile_id}.tif")[0]
        label = dataset.read_label(row)
        if labels == "dw":  # row 0 holds 0..9 in order, then (1, 0) is cloud
            assert label[0, :10].tolist() == [IGNORE_INDEX, 0, 1, 2, 3, 4, 5, 6, 7, 8] and label[1, 0] == IGNORE_INDEX
            modality, prefix = "image_s2", "s2"
        else:
            assert label[0, :14].tolist() == [IGNORE_INDEX, *range(13)]
            modality, prefix = "image_s1", "s1"
        valid = raw_label > 0 if labels == "osm" else (raw_label > 0) & (raw_label < 10)
        assert np.array_equal(label[valid], raw_label[valid] - 1) and (label[~valid] == IGNORE_INDEX).all()
        image, stored = dataset.read_image(row), read(folder / modality / f"{prefix}_{tile_id}.tif")
        assert image.dtype == stored.dtype == (np.int16 if prefix == "s2" else np.float32)
        assert np.array_equal(image, stored)  # every band, in the file's order
    with rasterio.open(dataset.root / dataset.rows("dw_s2", "test").iloc[0]["image"]) as src:
        assert src.crs.to_string() == "EPSG:4326" and src.count == 13 and src.width == 32  # test tiles 512-like


def test_dfc2020_classes_are_cromss_dw_ordered_and_s1_becomes_float32(noldo: dict[str, Path]):
    dataset = PreparedDataset.open(noldo["data"], "dfc2020")
    assert dataset.card.split_counts == {"s1": {"test": 2, "validation": 3}, "s2": {"test": 2, "validation": 3}}
    row = dataset.rows("s2", "validation").iloc[0]
    raw_label = read(noldo["dfc2020"] / "ROIs0000_validation" / "dfc_validation" / "ROIs0000_validation_dfc_0_p1.tif")[0]
    label = dataset.read_label(row)
    # raw 0..10 in row 0: -, forest, shrubland, savanna, grassland, wetlands, croplands, urban, snow, barren, water
    assert label[0, :11].tolist() == [255, 1, 5, 255, 2, 3, 4, 6, 255, 7, 0]
    assert np.array_equal(label, decode_dfc(raw_label, "x"))
    s1 = dataset.read_image(dataset.rows("s1", "validation").iloc[0])
    raw_s1 = read(noldo["dfc2020"] / "ROIs0000_validation" / "s1_validation" / "ROIs0000_validation_s1_0_p1.tif")
    assert raw_s1.dtype == np.float64 and s1.dtype == np.float32 and np.allclose(s1, raw_s1, rtol=1e-6)
    assert dataset.read_image(row).dtype == np.uint16


def test_stray_label_values_and_missing_partners_are_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"label value\(s\) \[11\]"):
        decode_label(np.array([[1, 11]], np.uint8), "dw", "dw_x.tif")
    with pytest.raises(DataError, match=r"label value\(s\) \[14\]"):
        decode_label(np.array([[14]], np.uint8), "osm", "osm_x.tif")
    with pytest.raises(DataError, match="0..10"):
        decode_dfc(np.array([[12]], np.uint8), "p1.tif")
    raw = get_preparer("noldo_s12").make_fake(tmp_path / "raw")
    victim = next((raw / "data_s12" / "osm_test" / "image_s2").glob("*.tif"))
    victim.unlink()
    with pytest.raises(DataError, match=r"has no s2 file \(s2_"):
        get_preparer("noldo_s12").prepare(raw, tmp_path / "data", progress=False)


def test_archives_prepare_too_and_nol_is_indexed_in_place(tmp_path: Path):
    download = get_preparer("noldo_s12").make_fake(tmp_path / "raw", archive=True)
    assert sorted(p.name for p in download.iterdir()) == ["ssl4eo_s12_dw.zip", "ssl4eo_s12_nol", "ssl4eo_s12_osm.zip"]
    out = get_preparer("noldo_s12", verify_checksums=False).prepare(download, tmp_path / "data", progress=False)
    index = pd.read_parquet(out / "nol_index.parquet")
    assert len(index) == 8 and sorted(index["location"].unique()) == [17, 230001] and index["label_exists"].all()
    assert index["s2c_folder"].iloc[0].startswith("s2c/0000017/")
    assert Path(index["label_path"].iloc[0]).is_relative_to(download / "ssl4eo_s12_nol")  # not copied
    assert not any(p.name == "label.tif" for p in out.rglob("*"))

    shutil.make_archive(str(download / "ssl4eo_s12_nol"), "zip", download / "ssl4eo_s12_nol")
    shutil.rmtree(download / "ssl4eo_s12_nol")
    out = get_preparer("noldo_s12", verify_checksums=False).prepare(download, tmp_path / "data2", progress=False)
    card = json.loads((out / "dataset.json").read_text())
    assert any("NoL (pretraining) not indexed: unpack ssl4eo_s12_nol.zip" in note for note in card["notes"])
    dfc = get_preparer("dfc2020").make_fake(tmp_path / "dfc", archive=True)
    assert dfc.name == "DFC_Public_Dataset.zip"
    get_preparer("dfc2020", verify_checksums=False).prepare(dfc, tmp_path / "data", progress=False)


def test_leakage_audit_reports_the_overlapping_dw_tiles(noldo: dict[str, Path]):
    card = PreparedDataset.open(noldo["data"], "noldo_s12").card
    assert card.footprint_overlaps == {"dw_s1: test/train": 1, "dw_s2: test/train": 1}
    assert PreparedDataset.open(noldo["data"], "dfc2020").card.footprint_overlaps == {}


def test_tasks_select_bands_by_name(noldo: dict[str, Path]):
    catalog = TaskCatalog()
    nine = catalog.task("noldo_s12/dw-s2-9b")
    data = TaskData(noldo["data"], nine, phase="evaluate")
    split = data.open(nine.targets[0])
    assert split.band_names == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"] == data.band_names(nine.source)
    full = TaskData(noldo["data"], catalog.task("noldo_s12/dw-s2"), phase="evaluate").open(nine.targets[0])
    picked = [S2_BANDS.index(b) for b in split.band_names]
    assert torch.equal(split[0]["image"], full[0]["image"][picked])
    wrong = nine.model_copy(update={"inputs": nine.inputs.model_copy(update={"bands": ("B2", "B13")})})
    with pytest.raises(DataError, match="has no band B13"):
        TaskData(noldo["data"], wrong, phase="evaluate").open(wrong.targets[0])


def test_osm_to_dw_label_map_follows_the_legend_alignment():
    mapping = load_label_map("osm13_to_dynamicworld9")
    dw = ["water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built", "bare", "snow_and_ice"]
    expected = ["built", "crops", "trees", "built", "grass", "bare", "grass", "crops", "water", "bare",
                "shrub_and_scrub", "flooded_vegetation", "water"]
    assert mapping.apply(np.arange(13, dtype=np.uint8)).tolist() == [dw.index(c) for c in expected]
    assert mapping.apply(np.array([IGNORE_INDEX], np.uint8)).tolist() == [IGNORE_INDEX]


def test_dice_loss_is_cromss_equation_4_over_labelled_pixels():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # B=1, K=2, H=1, W=2
    labels = torch.tensor([[[0, IGNORE_INDEX]]])
    q = logits.softmax(1)[0, :, 0, 0]  # only the first pixel is labelled
    expected = 1 - 2 * q[0] / (1 + q.sum())
    torch.testing.assert_close(dice_loss(logits, labels), expected)
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(segmentation_loss("ce+dice", logits, labels), ce + expected)
    torch.testing.assert_close(segmentation_loss("ce", logits, labels), ce)


# What CromSS's released fine-tuning runs use (zhu-xlab/CromSS: train_SSL4EO_pl_ft_{DW,OSM,DFC2020}.sh, their
# py_scripts_SSL4EO/train_SSL4EO_pl_ft_*.py and models/pl_finetune*.py), written out by hand from those files.
CROMSS_SCRIPTS = {"epochs": 50, "optimizer": "adam", "lr": 5e-4, "weight_decay": 1e-8,  # Adam(..., weight_decay=1e-8)
                  "schedule": "cosine", "final_lr": 1e-5,  # --scheduler_type cos; final_lr's default 0.00001
                  "decay_fraction": 40 / 50, "schedule_step": "epoch",  # --scheduler_values 40 of --epochs 50
                  "loss": "ce+smp_dice",  # --loss_type cd: CrossEntropyLoss + smp DiceLoss('multiclass')
                  "augment": {"flip": "one_of_three", "rotate_p": 0.2, "rotate_degrees": 90.0}}  # A.Flip, A.Rotate
# The paper's per-dataset frameworks, batches and crops (§IV-A; the DW script passes batch 32, the paper says 56).
PAPER_FRAMEWORKS = {"dw": ("deeplabv3plus", 56, 496), "osm": ("fpn", 32, 480), "dfc2020": ("pspnet", 32, 256)}


@pytest.mark.parametrize("task_id", sorted(t for t in TaskCatalog().tasks if t.startswith("noldo_s12/")))
def test_noldo_protocols_are_cromss_released_fine_tuning(task_id: str):
    spec = TaskCatalog().task(task_id).training
    assert spec.model_dump(mode="json", include=set(CROMSS_SCRIPTS)) == CROMSS_SCRIPTS
    family = task_id.split("/")[1].split("-")[0]
    assert (spec.architecture, spec.batch_size, spec.crop) == PAPER_FRAMEWORKS[family]
    assert spec.total_iterations(3574) == 50 * (3574 // spec.batch_size)


def test_cosine_schedule_steps_per_epoch_as_cromss_lambda():
    """lr at every iteration equals CromSS's LambdaLR of the epoch it falls in: (final + (1 + cos(π e / T))
    (lr − final) / 2) / lr for e < T = 40, then final / lr."""
    spec = TaskCatalog().task("noldo_s12/osm-s2").training
    per_epoch = 7
    spec = spec.model_copy(update={"iterations": spec.total_iterations(per_epoch * spec.batch_size)})

    def cromss(epoch: int) -> float:
        final, lr = 1e-5, 5e-4
        return (final + (1 + math.cos(math.pi * epoch / 40)) * (lr - final) / 2) / lr if epoch < 40 else final / lr

    got = [lr_factor(spec, iteration, per_epoch) for iteration in range(spec.iterations)]
    assert got == pytest.approx([cromss(i // per_epoch) for i in range(spec.iterations)], rel=1e-12)
    assert got[0] == 1.0 and got[per_epoch * 40] == pytest.approx(0.02) and len(set(got[:per_epoch])) == 1
    per_iteration = spec.model_copy(update={"schedule_step": "iteration"})
    assert lr_factor(per_iteration, 1, per_epoch) < 1.0  # stepping per iteration changes within the first epoch
    with pytest.raises(ValueError, match="needs `final_lr`"):
        TrainingSpec(epochs=1, batch_size=2, lr=1e-3, crop=8, schedule="cosine")
    with pytest.raises(ValueError, match="must be below lr"):
        TrainingSpec(epochs=1, batch_size=2, lr=1e-3, crop=8, schedule="cosine", final_lr=1e-2)


def test_training_spec_takes_epochs_or_iterations():
    with pytest.raises(ValueError, match="exactly one of 'iterations' and 'epochs'"):
        TrainingSpec(batch_size=2, lr=1e-3, crop=8)


def test_smp_dice_averages_per_class_dice_with_absent_classes_at_zero():
    """smp's multiclass DiceLoss by hand: per class 1 − 2Σzq / Σ(z + q) over the batch's labelled pixels, a class
    no label has counting 0, the mean over all K classes; the global Dice of eq. 4 is another number."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=generator)
    labels = torch.randint(0, 2, (2, 4, 5), generator=generator)  # class 2 never labelled
    labels[0, 0, :2] = IGNORE_INDEX
    valid = labels != IGNORE_INDEX
    q = logits.softmax(1).permute(0, 2, 3, 1)[valid]
    z = torch.nn.functional.one_hot(labels[valid], 3).float()
    per_class = 1 - 2 * (z * q).sum(0) / (z + q).sum(0)
    expected = (per_class * (z.sum(0) > 0)).mean()
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(segmentation_loss("ce+smp_dice", logits, labels), ce + expected)
    assert not torch.isclose(segmentation_loss("ce+dice", logits, labels), ce + expected)


def test_suite_runs_with_13_band_inputs_and_trains(noldo: dict[str, Path], tmp_path: Path):
    assert main(["run", "--model", "smp", "--suite", "noldo_s12", "--limit", "4", "--random-init",
                 "--data-root", str(noldo["data"]), "--results", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    records = [r for _, r in ResultStore(tmp_path).load_all()]
    assert len(records) == 9
    bands = {r.task["id"]: r.normalization["num_bands"] for r in records}
    assert bands["noldo_s12/dw-s2"] == 13 and bands["noldo_s12/osm-s2-9b"] == 9 and bands["noldo_s12/dfc2020-s1"] == 2
    assert {tuple(r.metrics) for r in records} and all({"miou", "oa", "aa", "mf1"} <= set(next(iter(r.metrics.values())))
                                                       for r in records)
    assert main(["train", "--model", "cromss", "--task", "noldo_s12/dfc2020-s1", "--iterations", "2", "--batch-size", "2",
                 "--data-root", str(noldo["data"]), "--results", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    checkpoint = torch.load(tmp_path / "checkpoints" / "cromss" / "dfc2020_s1_source.pt", weights_only=True)
    assert checkpoint["rsdg"]["adapter"]["options"]["arch"] == "pspnet"  # the task's framework
    assert checkpoint["rsdg"]["adapter"]["options"]["modality"] == "s1" and checkpoint["rsdg"]["band_names"] == ["VV", "VH"]
    assert checkpoint["rsdg"]["training"]["loss"] == "ce+smp_dice" and checkpoint["rsdg"]["training"]["iterations"] == 2


def test_osm_training_split_of_either_published_size_counts_as_the_published_one(noldo: dict[str, Path]):
    from rsdg_bench.records.results import EvaluatedSplit

    card = PreparedDataset.open(noldo["data"], "noldo_s12").card
    assert card.accepted_counts("osm_s2", "train") == [1375, 1372]  # README first, then the paper's
    assert card.published_alternatives["osm_s1"]["train"] == {"CromSS paper §III": 1372}
    assert card.accepted_counts("dw_s2", "train") == [3574]
    as_paper = card.model_copy(update={"split_counts": {**card.split_counts, "osm_s2": {"train": 1372, "test": 400}}})
    assert not any(m.startswith("osm_s2/") for m in as_paper.count_mismatches())
    assert any(m.startswith("osm_s2/train: 1371 samples, published 1375 (or 1372)") for m in card.model_copy(
        update={"split_counts": {**card.split_counts, "osm_s2": {"train": 1371, "test": 400}}}).count_mismatches())
    split = dict(role="target", dataset="noldo_s12", domain="osm_s2", split="train", published_samples=1375,
                 accepted_samples=[1372])
    assert not EvaluatedSplit(num_samples=1372, **split).partial_data  # an OSM record of 1,372 tiles is ranked
    assert EvaluatedSplit(num_samples=1371, **split).partial_data
