"""Shared fixtures: a prepared ToyEarth (made by its own raw-layout generator) and a briefly trained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsdg_bench.prep import get_preparer
from rsdg_bench.runner import ModelSpec


@pytest.fixture(scope="session")
def toyearth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return get_preparer("toyearth").make_fake(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory, toyearth_raw: Path) -> Path:
    root = tmp_path_factory.mktemp("data")
    get_preparer("toyearth").prepare(toyearth_raw, root, progress=False)
    return root


SMALL_MODEL = ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}, display_name="unet-r18")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict:
    """A U-Net trained briefly on toyearth urban/train through the real training loop."""
    from rsdg_bench.runner import default_checkpoint_dir
    from rsdg_bench.task_schema import TaskCatalog
    from rsdg_bench.training import TrainOverrides, build_trainable, train_adapter

    task = TaskCatalog().task("demo/u2a")
    results = tmp_path_factory.mktemp("results")
    adapter = build_trainable(SMALL_MODEL, task, data_root)
    checkpoint = default_checkpoint_dir(results, adapter.name) / f"{task.checkpoint_key}.pt"
    report = train_adapter(adapter, task, data_root, checkpoint,
                           overrides=TrainOverrides(iterations=150, val_interval=75), progress=False)
    return {"task": task, "checkpoint": checkpoint, "report": report, "results": results}


CROSSEARTH_DATASETS = ("potsdam", "vaihingen", "loveda", "rescuenet", "openearthmap", "deepglobe_road",
                       "massachusetts_roads", "globalroadnet", "whu_building", "casid")


@pytest.fixture(scope="session")
def ce_raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The raw-layout fake of every CrossEarth dataset, unpacked."""
    out = tmp_path_factory.mktemp("ce_raw")
    return {name: get_preparer(name).make_fake(out / name) for name in CROSSEARTH_DATASETS}


@pytest.fixture(scope="session")
def ce_data(tmp_path_factory: pytest.TempPathFactory, ce_raw: dict[str, Path]) -> Path:
    """Every CrossEarth dataset prepared by its real preparer from its fake, in one data root."""
    root = tmp_path_factory.mktemp("ce_data")
    for name in CROSSEARTH_DATASETS:
        get_preparer(name).prepare(ce_raw[name], root, progress=False)
    return root
