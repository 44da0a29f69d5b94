"""CoDEX suite, classification part: FMoW-WILDS's raw layout through the real preparer (both split schemes),
the classification kind's metrics (accuracy, per-place mean and worst), and the 2-D classifier baseline."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rsdg_bench.base.errors import DataError, ResultsError
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.prep import get_preparer
from rsdg_bench.prep.fmow import FOLDER, SPLIT_FILE, country_split, wilds_split
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore, check_consistency, encode_per_image, group_accuracy
from rsdg_bench.run.runner import RunSettings, run_tasks


@pytest.fixture(scope="module")
def fmow(tmp_path_factory: pytest.TempPathFactory, prepared_fakes) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fmow")
    raw = prepared_fakes.archive("fmow")  # the download as it comes, made once per run (test_contracts reads it too)
    return {"raw": raw, "data": prepared_fakes.data("fmow"), "root": root}  # prepared from it: test_contracts


def test_wilds_time_split_and_country_split_rules():
    ts = pd.Timestamp
    assert wilds_split("train", ts("2012-12-31", tz="UTC")) == "train"
    assert wilds_split("train", ts("2014-01-01", tz="UTC")) is None  # WILDS drops late training rows
    assert wilds_split("val", ts("2015-06-01", tz="UTC")) == "ood_val" and wilds_split("test", ts("2015-06-01", tz="UTC")) is None
    assert wilds_split("test", ts("2016-01-01", tz="UTC")) == "ood_test"
    assert wilds_split("test", ts("2010-01-01", tz="UTC")) == "id_test"
    codes = [a + b + c for a in string.ascii_uppercase[:8] for b in string.ascii_uppercase[:8] for c in "WXYZ"][:230]
    split = country_split(codes)
    assert [len(split[s]) for s in ("train", "val", "test")] == [100, 50, 50]  # CoDEX's sizes; 30 left unused
    assert split == country_split(list(reversed(codes)))  # the order of the input never matters
    assert len({c for v in split.values() for c in v}) == 200
    assert [len(v) for v in country_split(codes[:9]).values()] == [5, 2, 2]  # fewer than 200: 2:1:1


def test_fmow_prepares_both_schemes_with_image_labels(fmow: dict[str, Path]):
    dataset = PreparedDataset.open(fmow["data"], "fmow")
    card = dataset.card
    assert card.label_level == "image" and card.group_regions["FRA"] == "Europe" and card.group_regions["AUS"] == "Other"
    manifest = dataset.manifest
    assert manifest["label"].isna().all() and manifest["label_sha256"].isna().all()
    assert not manifest["sample_id"].str.contains(r"rgb_img_(?:4|9|14)(?:\.c)?$").any()  # every 5th fake row is `seq`
    country = {s: set(dataset.rows("rgb", s)["group"]) for s in ("country_train", "country_val", "country_test")}
    assert not (country["country_train"] & country["country_test"]) and not (country["country_val"] & country["country_test"])
    assert sum(card.split_counts["rgb"][s] for s in country) == 72  # 90 rows − 18 seq, all in one country split
    row = dataset.rows("rgb", "train").iloc[0]
    image = dataset.read_image(row)
    assert image.shape == (3, 224, 224) and image.dtype == np.uint8
    from rsdg_bench.datasets.classes import load_class_schema

    names = load_class_schema("fmow62").names
    index = int(row["sample_id"].split("_")[-1])
    raw_rows = pd.read_csv(_unpacked_metadata(fmow))
    assert names[int(dataset.read_label(row))] == raw_rows.loc[index, "category"]  # the class from its own CSV row
    assert row["group"] == raw_rows.loc[index, "country_code"]
    assert dataset.verify_files() == []


def _unpacked_metadata(fmow: dict[str, Path]) -> Path:
    import tarfile

    out = fmow["root"] / "unpacked"
    if not out.exists():
        with tarfile.open(fmow["raw"] / f"{FOLDER}.tar.gz") as tf:
            tf.extractall(out, filter="data")
    return out / FOLDER / "rgb_metadata.csv"


def test_a_published_country_list_replaces_ours(fmow: dict[str, Path], tmp_path: Path, prepared_fakes):
    shared = prepared_fakes.raw("fmow")  # the session's fake, copied: this test edits it
    raw = Path(shutil.copytree(shared, tmp_path / "raw" / shared.name))
    (raw / FOLDER / SPLIT_FILE).write_text(json.dumps({"train": ["USA", "FRA"], "val": ["CHN"], "test": ["KEN", "BRA"]}))
    get_preparer("fmow").prepare(raw, tmp_path / "data", progress=False)
    dataset = PreparedDataset.open(tmp_path / "data", "fmow")
    assert set(dataset.rows("rgb", "country_test")["group"]) == {"KEN", "BRA"}
    assert any(f"from {SPLIT_FILE}" in note for note in dataset.card.notes)
    (raw / FOLDER / SPLIT_FILE).write_text(json.dumps({"train": ["USA"], "val": ["USA"], "test": []}))
    with pytest.raises(DataError, match="country in two splits"):
        get_preparer("fmow").prepare(raw, tmp_path / "data2", progress=False)
    (raw / FOLDER / SPLIT_FILE).unlink()
    frame = pd.read_csv(raw / FOLDER / "rgb_metadata.csv")
    frame.loc[0, "category"] = "volcano"
    frame.to_csv(raw / FOLDER / "rgb_metadata.csv", index=False)
    with pytest.raises(DataError, match="volcano"):
        get_preparer("fmow").prepare(raw, tmp_path / "data3", progress=False)


def test_group_accuracy_by_hand():
    # 4 images, K = 3: A right, A wrong, B right, "" (no place) wrong
    per_image = torch.zeros(4, 3, 3, dtype=torch.int64)
    per_image[0, 1, 1] = per_image[1, 2, 0] = per_image[2, 0, 0] = per_image[3, 1, 2] = 1
    block = encode_per_image(per_image)
    assert group_accuracy(block, ["A", "A", "B", ""]) == {"A": 0.5, "B": 1.0}
    with pytest.raises(ResultsError):
        group_accuracy(block, ["A"])


def test_classification_records_carry_place_scores_that_recompute(fmow: dict[str, Path], tmp_path: Path):
    catalog = TaskCatalog()
    tasks = [catalog.task("codex/fmow"), catalog.task("codex/fmow-wilds")]
    outcomes = run_tasks(tasks, ModelSpec("timm-classifier", random_init=True),
                         RunSettings(fmow["data"], tmp_path, progress=False))
    assert [o.error for o in outcomes] == [None, None]
    records = {r.task["id"]: (p, r) for p, r in ResultStore(tmp_path).load_all()}
    path, record = records["codex/fmow"]
    slug = "fmow/rgb/country_test"
    block = record.metrics[slug]
    groups = record.groups[slug]
    labels_preds = [(cell // 62, cell % 62) for _, cell, _ in record.per_image_matrices[slug]["entries"]]
    correct = {g: [] for g in set(groups)}
    for (label, pred), g in zip(labels_preds, groups, strict=True):
        correct[g].append(label == pred)
    by_hand = {g: float(np.mean(v)) for g, v in correct.items()}
    assert block["group_acc"] == pytest.approx(by_hand)
    assert block["worst_domain_acc"] == pytest.approx(min(by_hand.values()))
    assert block["oa"] == pytest.approx(np.mean([lp[0] == lp[1] for lp in labels_preds]))
    _, wilds = records["codex/fmow-wilds"]
    assert set(wilds.groups["fmow/rgb/ood_test"]) <= {"Americas", "Europe", "Asia", "Africa", ""}  # regions; "Other" → ""
    record.metrics[slug]["worst_domain_acc"] = 0.123  # a hand edit
    with pytest.raises(ResultsError, match="worst_domain_acc"):
        check_consistency(record, path)


def test_classifier_trains_and_refuses_maps(fmow: dict[str, Path], tmp_path: Path):
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    task = TaskCatalog().task("codex/fmow")
    adapter = build_trainable(ModelSpec("timm-classifier"), task, fmow["data"])
    report = train_adapter(adapter, task, fmow["data"], tmp_path / "fmow.pt",
                           overrides=TrainOverrides(iterations=2, batch_size=4), progress=False)
    assert report.opened_splits == ["fmow/rgb/country_train", "fmow/rgb/country_val"] and report.selection_metric == "oa"
    [refused] = run_tasks([TaskCatalog().task("codex/oscd")], ModelSpec("timm-classifier", random_init=True),
                          RunSettings(fmow["data"], tmp_path, progress=False))
    assert "does not do change_detection" in refused.error
