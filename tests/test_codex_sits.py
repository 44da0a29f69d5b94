"""CoDEX suite, time-series part: DynamicEarthNet and MUDS through the real preparers (patching, in-domain
corner patches, ignore values, missing months), the temporal_segmentation kind end to end, and the
per-date baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.prep import get_preparer
from rsdg_bench.prep.dynamicearthnet import month_days
from rsdg_bench.prep.sits import MONTHS, area_patches, in_domain_patches
from rsdg_bench.protocol.task_schema import Task, TaskCatalog
from rsdg_bench.records.results import ResultStore
from rsdg_bench.run.runner import RunSettings, run_tasks


@pytest.fixture(scope="module")
def sits(prepared_fakes) -> dict[str, Path]:
    """Both series fakes, unpacked, and prepared into the session's shared data root."""
    names = ("dynamicearthnet", "muds")
    return {"data": prepared_fakes.data(*names), **{name: prepared_fakes.raw(name) for name in names}}


def test_codex_patch_plan_on_a_1024_area():
    assert in_domain_patches(8) == {"val_id": [(7, 7), (6, 6)], "test_id": [(7, 6), (6, 7)]}  # CoDEX's corner block
    plan = area_patches("train", 8)
    assert len(plan["train"]) == 60 and not set(plan["train"]) & {(6, 6), (6, 7), (7, 6), (7, 7)}
    assert len(area_patches("test", 8)["test"]) == 64  # all non-overlapping patches of an unseen area


def test_dynamicearthnet_patches_series_and_ignored_snow(sits: dict[str, Path]):
    dataset = PreparedDataset.open(sits["data"], "dynamicearthnet")
    card = dataset.card
    assert card.timesteps == [m.isoformat() for m in MONTHS] and card.timesteps[12] == "2019-01-01"
    # fake: 3 training areas on a 3×3 grid (5 train + 2 + 2 held out each), 1 val and 1 test area (9 each)
    assert card.split_counts == {"planet": {"train": 15, "val_id": 6, "test_id": 6, "val": 9, "test": 9}}
    area = "1311_3077_13"
    ids = {s: set(dataset.rows("planet", s)["sample_id"]) for s in ("train", "val_id", "test_id")}
    assert {f"{area}_r2_c2", f"{area}_r1_c1"} <= ids["val_id"] and {f"{area}_r2_c1", f"{area}_r1_c2"} <= ids["test_id"]
    assert f"{area}_r0_c0" in ids["train"] and not ids["train"] & (ids["val_id"] | ids["test_id"])
    assert set(dataset.rows("planet", "test")["group"]) == {"2235_3403_13"}  # group = area (CoDEX's domain)

    row = dataset.rows("planet", "train").set_index("sample_id").loc[f"{area}_r0_c1"]
    image = dataset.read_image(row).reshape(24, 4, 128, 128)
    day = month_days()[5]
    folder = sits["dynamicearthnet"] / "DynamicEarthNet" / "train" / area
    from torchvision.io import decode_jpeg, read_file  # CoDEX's own reader: libjpeg-turbo, as the harness decodes

    rgb, nir = (decode_jpeg(read_file(str(folder / f"{area}_{day}_{part}.jpeg"))).numpy() for part in ("rgb", "infra"))
    expected = np.concatenate([rgb, nir])[:, :128, 128:256]  # patch (0, 1): x 128-256
    assert list(row["window"]) == [128, 0, 256, 128]  # (x0, y0, x1, y1), as every manifest holds windows
    assert np.array_equal(image[5], expected)  # June 2018, bands R G B NIR, the right window
    raw = np.load(sits["dynamicearthnet"] / "DynamicEarthNet" / "labels" / f"{area}.npy")
    label = dataset.read_label(row)
    assert label.shape == (24, 128, 128) and np.array_equal(label, raw[:, :128, 128:256].astype(np.uint8))
    corner = dataset.read_label(dataset.rows("planet", "train").set_index("sample_id").loc[f"{area}_r0_c0"])
    assert (corner[:, :8, :8] == IGNORE_INDEX).all() and (corner[:, 8:, 8:] < 6).all()  # snow & ice (6) ignored


def test_muds_missing_months_are_zeros_and_never_scored(sits: dict[str, Path]):
    dataset = PreparedDataset.open(sits["data"], "muds")
    row = dataset.rows("planet", "test").iloc[0]
    image = dataset.read_image(row).reshape(24, 3, 128, 128)
    label = dataset.read_label(row)
    assert not image[3].any() and (label[3] == IGNORE_INDEX).all()  # month 4 has no data in the fake
    assert image[4].any() and set(np.unique(label[4])) <= {0, 1}


def _raw_copy(raw: Path, out: Path) -> Path:
    """A private copy of a shared unpacked fake (a test that breaks a file must not break the shared one)."""
    return Path(shutil.copytree(raw, out / raw.name))


def test_sits_bad_inputs_are_named(sits: dict[str, Path], tmp_path: Path, prepared_fakes):
    muds = get_preparer("muds")
    download = prepared_fakes.archive("muds")  # made, and prepared from, once per run (test_contracts reads it too)
    assert [p.name for p in download.iterdir()] == ["Muds.zip"]  # CoDEX's release zip, as downloaded
    assert PreparedDataset.open(prepared_fakes.from_archive("muds"), "muds").card.split_counts["planet"]["test"] == 9

    # Each broken input below is in the first area the prepare reads (split.json's train list comes first),
    # so it fails there instead of after writing the other areas' patches.
    raw = _raw_copy(sits["muds"], tmp_path / "a")
    area = muds.fake_areas["train"][0]
    (raw / "Muds" / "train" / area / f"{area}_2018_06.jpg").unlink()
    with pytest.raises(DataError, match=f"{area}_2018_06.jpg is missing"):
        muds.prepare(raw, tmp_path / "d1", progress=False)

    raw = _raw_copy(sits["muds"], tmp_path / "b")
    lists = json.loads((raw / "Muds" / "split.json").read_text())
    lists["test"].append(lists["train"][0])
    (raw / "Muds" / "split.json").write_text(json.dumps(lists))
    with pytest.raises(DataError, match="in both train and test"):
        muds.prepare(raw, tmp_path / "d2", progress=False)

    den = get_preparer("dynamicearthnet")
    raw = _raw_copy(sits["dynamicearthnet"], tmp_path / "c")
    path = raw / "DynamicEarthNet" / "labels" / f"{den.fake_areas['train'][0]}.npy"
    labels = np.load(path)
    labels[0, 0, 0] = 9
    np.save(path, labels)
    with pytest.raises(DataError, match=r"values \[9\]"):
        den.prepare(raw, tmp_path / "d3", progress=False)


class ConstantSeries(Adapter):
    """Predicts class 1 everywhere on every date: its confusion matrix is the labels' histogram."""

    name = "constant-series"
    kinds = frozenset({"temporal_segmentation"})

    def setup(self, task: Task, band_names: list[str]) -> None:
        self.module = torch.nn.Identity()
        self.k = task.class_schema.num_classes
        self.contract = InputContract(len(band_names), Normalization((0.0,) * len(band_names), (1.0,) * len(band_names)))

    def input_contract(self) -> InputContract:
        return self.contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a temporal task must call predict_series")

    def predict_series(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        assert days.tolist() == [[(m - MONTHS[0]).days for m in MONTHS]]
        logits = torch.zeros(*x.shape[:2], self.k, *x.shape[-2:])
        logits[:, :, 1] = 1
        return logits


def test_temporal_task_counts_every_labelled_date(sits: dict[str, Path], tmp_path: Path):
    from rsdg_bench.models.registry import register_adapter

    register_adapter("constant-series")(ConstantSeries)
    task = TaskCatalog().task("codex/muds")
    [outcome] = run_tasks([task], ModelSpec("constant-series", random_init=True),
                          RunSettings(sits["data"], tmp_path, progress=False))
    assert outcome.error is None, outcome.error
    (_, record), = ResultStore(tmp_path).load_all()
    dataset = PreparedDataset.open(sits["data"], "muds")
    labels = np.stack([dataset.read_label(r) for _, r in dataset.rows("planet", "test").iterrows()])
    counts = [int((labels == c).sum()) for c in (0, 1)]
    assert record.confusion_matrices["muds/planet/test"] == [[0, counts[0]], [0, counts[1]]]  # ignore never counted
    assert sum(counts) == labels.size - int((labels == IGNORE_INDEX).sum()) and sum(counts) < labels.size


def test_temporal_kind_refusals(sits: dict[str, Path], tmp_path: Path):
    task = TaskCatalog().task("codex/dynamicearthnet")
    [refused] = run_tasks([task], ModelSpec("smp", random_init=True), RunSettings(sits["data"], tmp_path, progress=False))
    assert "does not do temporal_segmentation" in refused.error
    with pytest.raises(ValueError, match="predicted whole"):
        Task.model_validate({**task.model_dump(mode="json"), "inference": {"mode": "slide", "crop": 64, "stride": 32}})
    with pytest.raises(ValueError, match="per-place accuracies of classification"):
        Task.model_validate({**task.model_dump(mode="json"), "metrics": {"primary": "domain_acc"}})

    class WrongShape(ConstantSeries):
        def predict_series(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], self.k, *x.shape[-2:])  # one map for the series, not one per date

    from rsdg_bench.models.registry import register_adapter
    register_adapter("wrong-shape-series")(WrongShape)
    [broken] = run_tasks([task], ModelSpec("wrong-shape-series", random_init=True),
                         RunSettings(sits["data"], tmp_path / "b", progress=False, limit=1))
    assert "B×T×K×H×W" in broken.error


# smp-temporal with a light per-date network (a U-Net on a ResNet-18 took most of a minute here, on 24 dates of
# 128² per series): the pooling, the training and the run are what is tested, not the smp network inside;
# `adapter check smp-temporal` (test_contracts) builds the default U-Net.
LIGHT_TEMPORAL = {"features": "4", "arch": "linknet", "encoder": "tu-mobilenetv3_small_050"}


@pytest.mark.slow
def test_temporal_baseline_pools_dates_and_trains(sits: dict[str, Path], tmp_path: Path):
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    task = TaskCatalog().task("codex/muds")
    adapter = build_trainable(ModelSpec("smp-temporal", LIGHT_TEMPORAL), task, sits["data"])
    x = torch.randn(1, 3, 3, 64, 64)
    adapter.eval()
    with torch.no_grad():
        before = adapter.predict_series(x, torch.zeros(1, 3))
        x[0, 2] += 1  # change the last date only
        after = adapter.predict_series(x, torch.zeros(1, 3))
    assert before.shape == (1, 3, 2, 64, 64) and not torch.allclose(before[0, 0], after[0, 0])  # pooled context
    report = train_adapter(adapter, task, sits["data"], tmp_path / "muds.pt",
                           overrides=TrainOverrides(iterations=1, batch_size=2), progress=False)
    assert report.opened_splits == ["muds/planet/train", "muds/planet/val"] and report.selection_metric == "miou"
    settings = RunSettings(sits["data"], tmp_path, progress=False, limit=2)
    [outcome] = run_tasks([task], ModelSpec("smp-temporal", LIGHT_TEMPORAL, checkpoint=tmp_path / "muds.pt"), settings)
    assert outcome.error is None, outcome.error
    (_, record), = ResultStore(tmp_path).load_all()
    assert record.task["kind"] == "temporal_segmentation" and {"miou", "oa"} <= set(record.metrics["muds/planet/test"])
