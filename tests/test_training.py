"""Training: only source and selection splits are read; checkpoints carry the task hash and load strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SMALL_MODEL, trainable_pixel_linear

from rsdg_bench.base.errors import AdapterError, SplitAccessError
from rsdg_bench.models.model_spec import build_for_task
from rsdg_bench.protocol.task_data import SegmentationSplit, TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.train.training import RandomCrops, TrainOverrides, train_adapter


def test_the_training_door_refuses_target_splits(data_root: Path):
    task = TaskCatalog().task("demo/u2a")
    access = TaskData(data_root, task, phase="train")
    access.open(task.source)
    access.open(task.select)
    for target in task.targets:
        with pytest.raises(SplitAccessError, match="toyearth/arid/val"):
            access.open(target)
    assert TaskData(data_root, task, phase="evaluate").open(task.targets[0]) is not None


def test_training_reads_no_sample_of_any_target(data_root: Path, tmp_path: Path, monkeypatch):
    task = TaskCatalog().task("demo/rgb2irrg")
    read = set()
    original = SegmentationSplit.__getitem__

    def spy(self, index):
        read.add(self.ref.slug)
        return original(self, index)

    monkeypatch.setattr(SegmentationSplit, "__getitem__", spy)
    # which splits the trainer opens is not the model's business: a 1×1 convolution, not a U-Net's passes
    adapter = build_for_task(trainable_pixel_linear(), task, TaskData(data_root, task, phase="train"))
    report = train_adapter(adapter, task, data_root, tmp_path / "c.pt",
                           overrides=TrainOverrides(iterations=2, batch_size=2, val_interval=1), progress=False)
    assert read == {"toyearth/urban/train", "toyearth/urban/val"}
    assert set(report.opened_splits) == read


def test_checkpoint_records_task_hash_and_reloads_strictly(trained: dict, data_root: Path):
    payload = torch.load(trained["checkpoint"], weights_only=True)
    meta = payload["rsdg"]
    assert meta["task_hash"] == trained["task"].hash
    assert meta["checkpoint_key"] == "toyearth_urban"
    assert meta["opened_splits"] == ["toyearth/urban/train", "toyearth/urban/val"]
    assert meta["selection"]["split"] == "toyearth/urban/val" and meta["selection"]["value"] > 0.5
    task = trained["task"]
    adapter = build_for_task(SMALL_MODEL, task, TaskData(data_root, task, phase="evaluate"))
    adapter.load(trained["checkpoint"])
    other = build_for_task(type(SMALL_MODEL)("smp", {"arch": "unet", "encoder": "resnet34"}), task,
                           TaskData(data_root, task, phase="evaluate"))
    with pytest.raises(AdapterError, match="missing"):
        other.load(trained["checkpoint"])


def test_random_crops_are_repeatable_and_pad_with_ignore(data_root: Path):
    task = TaskCatalog().task("demo/u2a")
    split = TaskData(data_root, task, phase="train").open(task.source)
    a, b = RandomCrops(split, 160, 4, seed=1), RandomCrops(split, 160, 4, seed=1)
    image_a, label_a = a[2]["image"], a[2]["label"]
    image_b, label_b = b[2]["image"], b[2]["label"]
    assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    assert image_a.shape == (3, 160, 160) and (label_a == 255).sum() >= 160 * 160 - 128 * 128


def test_training_is_repeatable_from_the_protocol_seed(data_root: Path, tmp_path: Path):
    from conftest import trainable_pixel_linear

    from rsdg_bench.train.training import build_trainable

    task = TaskCatalog().task("demo/u2a")
    states = []
    for run in ("a", "b"):  # the init and the draws come from the protocol's seed: a 1×1 convolution shows it
        adapter = build_trainable(trainable_pixel_linear(), task, data_root)
        train_adapter(adapter, task, data_root, tmp_path / f"{run}.pt",
                      overrides=TrainOverrides(iterations=3, batch_size=2, val_interval=3), progress=False)
        states.append(torch.load(tmp_path / f"{run}.pt", weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_an_adapter_with_its_own_objective_trains_on_it_and_sees_each_draws_domain(data_root: Path, tmp_path: Path):
    """`Adapter.training_loss` replaces the protocol's loss: the trainer backpropagates what it returns (here
    the mean squared output, which drives every weight towards 0, where cross-entropy would not), and each batch
    carries its draws' domain indices into the split's sorted places (the demo's source is one place)."""
    from conftest import TrainablePixelLinear

    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.models.registry import register_adapter
    from rsdg_bench.train.training import build_trainable

    seen: list[torch.Tensor] = []

    @register_adapter("pixel-linear-own-loss")
    class OwnLoss(TrainablePixelLinear):
        def training_loss(self, inputs, batch):
            seen.append(batch["domain"])
            assert batch["label"].shape[0] == inputs[0].shape[0] == batch["domain"].shape[0]
            return self.predict(*inputs).pow(2).mean()

    task = TaskCatalog().task("demo/u2a")
    adapter = build_trainable(ModelSpec("pixel-linear-own-loss"), task, data_root)
    before = {k: v.clone() for k, v in adapter.module.state_dict().items()}
    train_adapter(adapter, task, data_root, tmp_path / "own.pt",
                  overrides=TrainOverrides(iterations=3, batch_size=2, val_interval=3, lr=0.05), progress=False)
    after = torch.load(tmp_path / "own.pt", weights_only=True)["state_dict"]
    assert len(seen) == 3 and all(d.tolist() == [0, 0] for d in seen)
    assert all(after[k].abs().sum() < before[k].abs().sum() for k in before)  # shrunk, as the own loss asks
    split = TaskData(data_root, task, phase="train").open(task.source)
    assert RandomCrops(split, 64, 1, seed=0).domains == sorted(set(split.groups()))


def test_a_crashed_training_resumes_to_the_same_weights(data_root: Path, tmp_path: Path, monkeypatch):
    """A training that crashes after a saved state resumes to the uninterrupted run's weights, selection and
    history; the model draws random numbers while it trains (dropout), so this holds only because the state
    keeps torch's generators too."""
    from conftest import TrainableNormedNet

    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.models.registry import register_adapter
    from rsdg_bench.train import training
    from rsdg_bench.train.training import build_trainable, train_state_path

    @register_adapter("normed-net-dropout")
    class DropoutNet(TrainableNormedNet):  # weights, buffers (as a U-Net's) and draws
        def predict(self, x):
            return super().predict(torch.nn.functional.dropout(x, 0.3, training=self.module.training))

    task, model = TaskCatalog().task("demo/u2a"), ModelSpec("normed-net-dropout")
    overrides = TrainOverrides(iterations=4, batch_size=2, val_interval=2)
    adapter = build_trainable(model, task, data_root)
    train_adapter(adapter, task, data_root, tmp_path / "straight.pt", overrides=overrides, progress=False)

    real_loss, calls = training.F.cross_entropy, {"n": 0}

    def crash_on_third(*args, **kwargs):  # after the state saved at iteration 2, before the one at 4
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training.F, "cross_entropy", crash_on_third)
    crashed = tmp_path / "crashed.pt"
    with pytest.raises(KeyboardInterrupt):
        train_adapter(build_trainable(model, task, data_root), task, data_root, crashed,
                      overrides=overrides, progress=False)
    assert not crashed.exists() and train_state_path(crashed).exists()
    monkeypatch.setattr(training.F, "cross_entropy", real_loss)
    report = train_adapter(build_trainable(model, task, data_root), task, data_root, crashed,
                           overrides=overrides, progress=False)
    assert report.resumed_from == 2 and not train_state_path(crashed).exists()
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(crashed, weights_only=True)
    assert resumed["rsdg"]["selection"] == straight["rsdg"]["selection"]
    assert all(torch.equal(straight["state_dict"][k], resumed["state_dict"][k]) for k in straight["state_dict"])
    # the loss and selection history is the same too: it travels in the resumable state
    from rsdg_bench.train.training_history import history_paths

    straight_history = json.loads(history_paths(tmp_path / "straight.pt")["json"].read_text())
    resumed_history = json.loads(history_paths(crashed)["json"].read_text())
    assert resumed_history == straight_history and len(straight_history["loss"]) == 4
    assert [s["iteration"] for s in straight_history["selection"]] == [2, 4]
    rows = history_paths(crashed)["csv"].read_text().splitlines()
    assert rows[0] == "iteration,loss,selection_miou" and len(rows) == 5 and rows[2].count(",") == 2
    assert history_paths(crashed)["svg"].read_text().lstrip().startswith("<?xml")


def test_model_selection_scores_under_the_tasks_metric_convention(data_root: Path, tmp_path: Path, monkeypatch):
    """The checkpoint is chosen by the metric the task's records report, under the task's convention: here
    smp's, where a class absent from labels and predictions counts as IoU 1 (mmseg leaves it out of the mean)."""
    import numpy as np

    from rsdg_bench.scoring.metrics import scores_from_confusion
    from rsdg_bench.scoring.split_counts import SplitCounts
    from rsdg_bench.train import training
    from rsdg_bench.train.training import build_trainable

    demo = TaskCatalog().task("demo/u2a")
    task = demo.model_copy(update={"metrics": demo.metrics.model_copy(update={"convention": "smp"})})
    matrix = np.diag([50, 30, 20, 10, 0])  # class 4 absent from labels and predictions
    matrix[0, 1] = 25
    counts = SplitCounts.empty(1, 5)
    counts.per_image.put(0, matrix)
    monkeypatch.setattr(training, "evaluate_split_counts", lambda *args, **kwargs: counts)
    # the scores are patched in above: the model's only part is to take a step (a 1×1 convolution, not a U-Net)
    report = train_adapter(build_trainable(trainable_pixel_linear(), task, data_root), task, data_root,
                           tmp_path / "c.pt", overrides=TrainOverrides(iterations=1, batch_size=1), progress=False)
    headline = task.headline_class_indices()
    smp, mmseg = (scores_from_confusion(matrix, headline, convention).miou for convention in ("smp", "mmseg"))
    assert smp != pytest.approx(mmseg)
    assert report.best_selection_value == pytest.approx(smp)


def test_train_saves_safetensors_that_run_reads_with_their_training_record(data_root: Path, tmp_path: Path):
    """`train --out NAME.safetensors` writes the weights as safetensors with the training block in the file's
    metadata: the same tensors a `.pt` from the same seed holds, and `run` reads the block back (the record
    says how the weights were trained), as it does for PyTorch checkpoints."""
    from test_faults import tiny

    from rsdg_bench.cli import main
    from rsdg_bench.models.checkpoints import is_safetensors, read_state_dict
    from rsdg_bench.records.results import ResultStore
    from rsdg_bench.records.training_record import read_training_block

    model = tiny(tmp_path)
    common = ["train", "--task", "demo/u2a", *model, "--iterations", "2", "--val-interval", "2", "--data-root",
              str(data_root), "--device", "cpu", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "tiny.safetensors")]) == 0
    assert main([*common, "--out", str(tmp_path / "tiny.pt")]) == 0
    saved, pickled = tmp_path / "tiny.safetensors", tmp_path / "tiny.pt"
    assert is_safetensors(saved) and saved.read_bytes()[8:9] == b"{"  # the header, not a zip of pickles
    tensors, kind = read_state_dict(saved)
    reference, _ = read_state_dict(pickled)
    assert kind == "safetensors" and tensors.keys() == reference.keys()
    assert all(torch.equal(tensors[key], reference[key]) for key in reference)
    block, pickled_block = read_training_block(saved), read_training_block(pickled)
    assert block["task_hash"] == TaskCatalog().task("demo/u2a").hash
    as_json = json.loads(json.dumps(pickled_block))  # the metadata is JSON: tuples come back as lists
    assert {k: v for k, v in block.items() if k != "date"} == {k: v for k, v in as_json.items() if k != "date"}
    assert main(["run", "--task", "demo/u2a", *model, "--checkpoint", str(saved), "--data-root", str(data_root),
                 "--results", str(tmp_path / "results"), "--device", "cpu", "--quiet"]) == 0
    training = {r.model["training"]["status"] for _, r in ResultStore(tmp_path / "results").load_all()}
    assert training == {"off-protocol"}  # read from the metadata: 2 iterations, not the protocol's


def test_train_under_another_seed_is_the_same_protocol_with_other_draws(data_root: Path, tmp_path: Path):
    """`train --seed N`: its own checkpoint name, the seed in its training block (not a protocol difference),
    and other weights than the protocol's seed gives, from another initialization."""
    from conftest import trainable_pixel_linear

    from rsdg_bench.cli import main
    from rsdg_bench.records.training_record import training_provenance

    trainable_pixel_linear()
    common = ["train", "--task", "demo/u2a", "--model", "pixel-linear-trainable", "--iterations", "1",
              "--batch-size", "2", "--data-root", str(data_root), "--results", str(tmp_path), "--device", "cpu",
              "--quiet"]
    assert main(common) == 0 and main([*common, "--seed", "3"]) == 0
    folder = tmp_path / "checkpoints" / "pixel-linear-trainable"
    default, seeded = (torch.load(folder / f"toyearth_urban{s}.pt", weights_only=True) for s in ("", ".seed3"))
    assert (default["rsdg"]["training"]["seed"], seeded["rsdg"]["training"]["seed"]) == (0, 3)
    key = next(iter(default["state_dict"]))
    assert not torch.equal(default["state_dict"][key], seeded["state_dict"][key])
    task = TaskCatalog().task("demo/u2a")
    verdict = training_provenance(task, seeded["rsdg"], 8)
    assert not any(d.startswith("seed") for d in verdict["differences"]) and verdict["seed"] == 3


def test_train_and_run_over_several_seeds_give_one_board_row_with_their_count(data_root: Path, tmp_path: Path, capsys,
                                                                               monkeypatch):
    """`train --seeds 2` writes one checkpoint per seed (seeds 0 and 1), `run --seeds 2` evaluates each, and the
    suite table shows the model as one row over 2 seeds; a bad --seeds value is refused by the parser."""
    from conftest import trainable_pixel_linear

    from rsdg_bench.cli import main
    from rsdg_bench.cli.options import seed_list
    from rsdg_bench.leaderboards.aggregate import build_board, with_suites
    from rsdg_bench.leaderboards.views import suite_table
    from rsdg_bench.records.results import ResultStore

    assert seed_list("3") == [0, 1, 2] and seed_list("0,1,5") == [0, 1, 5]
    for bad in ("0", "1,1", "-1,2", "a"):
        with pytest.raises(Exception, match="seed|count"):
            seed_list(bad)
    trainable_pixel_linear()
    where = ["--data-root", str(data_root), "--results", str(tmp_path), "--device", "cpu", "--quiet"]
    assert main(["train", "--task", "demo/u2a", "--model", "pixel-linear-trainable", "--iterations", "1",
                 "--batch-size", "2", "--seeds", "2", *where]) == 0
    folder = tmp_path / "checkpoints" / "pixel-linear-trainable"
    assert sorted(p.name for p in folder.glob("*.pt")) == ["toyearth_urban.seed0.pt", "toyearth_urban.seed1.pt"]
    assert main(["run", "--task", "demo/u2a", "--model", "pixel-linear-trainable", "--seeds", "2", *where]) == 0
    assert "seed 1 (2 of 2)" in capsys.readouterr().out
    records = ResultStore(tmp_path).load_all()
    assert sorted({r.model.training["seed"] for _, r in records}) == [0, 1]
    board = with_suites(build_board(records), TaskCatalog())
    table = suite_table(next(s for s in board.suites if any(t.task_id == "demo/u2a" for t in s.tasks)), board)
    [row] = table.rows
    assert row.label == "pixel-linear-trainable" and row.values[table.columns.index("Seeds")] == 2
    assert main(["run", "--task", "demo/u2a", "--model", "pixel-linear-trainable", "--seeds", "3", *where]) == 2
    err = capsys.readouterr().err  # seed 2 was never trained: say how to train it, never "released"
    assert "`rsdg-bench train --task ID --model pixel-linear-trainable --seed 2`" in err and "released" not in err
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: one seed per launch
    assert main(["train", "--task", "demo/u2a", "--model", "pixel-linear-trainable", "--seeds", "2", *where]) == 2
    assert "launch one torchrun per seed with --seed N" in capsys.readouterr().err
