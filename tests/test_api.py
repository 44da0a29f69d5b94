"""The public Python API: tasks, splits as Datasets, evaluating an in-memory module, results as a frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL

import rsdg_bench as rb
from rsdg_bench.base.errors import AdapterError, RsdgError, SplitAccessError
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.models.registry import resolve_adapter
from rsdg_bench.records.results import load_record
from rsdg_bench.run.runner import RunSettings, run_tasks


def test_tasks_and_suites_by_id():
    assert [t.id for t in rb.list_tasks("demo")] == ["demo/u2a", "demo/rgb2irrg", "demo/u2coarse"]
    assert len(rb.list_tasks()) > 50 and rb.load_task("crossearth/pi2v").targets[0].slug == "vaihingen/irrg/val"
    with pytest.raises(RsdgError, match="unknown task"):
        rb.load_task("demo/nope")


def test_open_split_is_a_dataset_that_keeps_targets_out_of_training(data_root: Path):
    source = rb.open_split("demo/u2a", "source", data_root=data_root)
    sample = source[0]
    assert isinstance(source, torch.utils.data.Dataset) and len(source) > 0
    assert sample["image"].shape[0] == len(source.band_names) == 3 and sample["label"].ndim == 2
    with pytest.raises(SplitAccessError, match="target split"):
        rb.open_split("demo/u2a", "target", data_root=data_root)
    target = rb.open_split("demo/u2a", "toyearth/arid/val", data_root=data_root, for_training=False, limit=2)
    assert len(target) == 2 and target.ref.domain == "arid"
    with pytest.raises(RsdgError, match="no split"):
        rb.open_split("demo/u2a", "toyearth/urban/test", data_root=data_root)


def test_an_in_memory_module_scores_what_run_scores_with_the_same_weights(trained: dict, data_root: Path,
                                                                          tmp_path: Path):
    torch.manual_seed(0)
    task = rb.load_task("demo/u2a")
    spec = ModelSpec(SMALL_MODEL.adapter, SMALL_MODEL.options, checkpoint=trained["checkpoint"])
    [outcome] = run_tasks([task], spec, RunSettings(data_root, tmp_path / "cli", progress=False))
    by_cli = {slug: np.asarray(m) for p in outcome.written for slug, m in load_record(Path(p)).confusion_matrices.items()}

    adapter = resolve_adapter("smp")(**SMALL_MODEL.options)  # the researcher's model: a module and its contract
    adapter.setup(task, ["red", "green", "blue"])
    adapter.load(trained["checkpoint"])
    module, contract = adapter.module, adapter.input_contract()
    result = rb.evaluate(module, task, input_contract=contract, data_root=data_root, progress=False, name="mine")

    assert set(result.confusion_matrices) == set(by_cli)
    for slug, matrix in result.confusion_matrices.items():
        np.testing.assert_array_equal(matrix, by_cli[slug])
        assert matrix.sum() > 0
    [record, *_] = result.records
    assert record.model["adapter"] == "module" and record.model["checkpoint"]["in_memory"]
    assert record.model["options"]["class"].endswith("Unet") and record.model["code"]["sha256"]

    frame = result.to_frame()
    assert list(frame["model"].unique()) == ["mine"] and len(frame) == len(by_cli)
    assert {f"iou/{c}" for c in task.class_schema.names} <= set(frame.columns)

    assert result.records[0].provenance["device"] == "cpu"  # "auto" here: no GPU, and the module on the CPU

    saved = result.save(tmp_path / "cli")
    loaded = rb.load_results(tmp_path / "cli")
    assert len(saved) == len(by_cli) and len(loaded) == 2 * len(by_cli)
    mine, cli = loaded[loaded.model == "mine"], loaded[loaded.model != "mine"]
    np.testing.assert_allclose(mine.sort_values("split")["miou"], cli.sort_values("split")["miou"])
    assert mine.weights_sha256.nunique() == 1 and mine.weights_sha256.iloc[0] != cli.weights_sha256.iloc[0]

    site = rb.build_leaderboard(tmp_path / "cli", tmp_path / "site")  # what `leaderboard build` runs
    assert site.page.is_file() and (site.tasks, site.models, site.left_out) == (1, 2, 0)
    assert "mine" in (site.page.parent / "tasks" / "demo-u2a.html").read_text()


def test_changed_weights_change_the_weights_identity(data_root: Path):
    adapter = resolve_adapter("smp")(**SMALL_MODEL.options)
    task = rb.load_task("demo/u2a")
    first = rb.evaluate(adapter, task, data_root=data_root, limit=1, progress=False)  # an Adapter is set up here
    with torch.no_grad():
        next(adapter.module.parameters()).add_(1.0)
    second = rb.evaluate(adapter, task, data_root=data_root, limit=1, progress=False)
    sha = [e.records[0].model["checkpoint"]["sha256"] for e in (first, second)]
    assert sha[0] != sha[1] and first.records[0].key != second.records[0].key


def test_a_module_without_its_contract_or_a_non_model_is_refused(data_root: Path):
    with pytest.raises(AdapterError, match="input contract"):
        rb.evaluate(torch.nn.Conv2d(3, 5, 1), "demo/u2a", data_root=data_root)
    with pytest.raises(RsdgError, match="takes an Adapter or a torch.nn.Module"):
        rb.evaluate(lambda x: x, "demo/u2a", data_root=data_root)


def test_a_module_that_returns_nan_is_stopped_with_the_fix(data_root: Path):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 5, *x.shape[-2:]), float("nan"))

    contract = rb.InputContract(3, rb.Normalization((0.0,) * 3, (1.0,) * 3))
    with pytest.raises(AdapterError, match="NaN"):
        rb.evaluate(Broken(), "demo/u2a", input_contract=contract, data_root=data_root, limit=1, progress=False)


def test_evaluate_auto_device_follows_the_model_then_cuda_and_leaves_the_allocator_alone(data_root: Path,
                                                                                         monkeypatch):
    from rsdg_bench import api
    from rsdg_bench.base import allocator
    from rsdg_bench.models.module_adapter import ModuleAdapter
    from rsdg_bench.run import runner

    module = torch.nn.Conv2d(3, 5, 1)
    adapter = ModuleAdapter(module, rb.InputContract(3, rb.Normalization((127.5,) * 3, (64.0,) * 3)),
                               frozenset({"segmentation"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert api._device("auto", adapter) == torch.device("cuda")  # a GPU is present: the CLI's `auto` too
    assert api._device("cpu", adapter) == torch.device("cpu")
    with torch.device("meta"):
        adapter.module = torch.nn.Conv2d(3, 5, 1)
    assert api._device("auto", adapter) == torch.device("meta")  # where the caller put the model already
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert api._device("auto", ModuleAdapter(module, adapter.input_contract(), adapter.kinds)) == torch.device("cpu")

    def changed(*_):
        raise AssertionError("evaluate() changed the caller's allocator")

    monkeypatch.setattr(allocator, "keep_freed_blocks", changed)
    monkeypatch.setattr(runner, "keep_freed_blocks", changed)
    result = rb.evaluate(module, "demo/u2a", input_contract=adapter.input_contract(), data_root=data_root, limit=1,
                         progress=False)
    assert result.records and result.records[0].provenance["device"] == "cpu"
