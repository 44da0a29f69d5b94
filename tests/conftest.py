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
