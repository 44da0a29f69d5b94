"""torchrun evaluation: exact shards, and the same confusion matrices as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rsdg_bench.evaluator.distributed import ProcessGroup


@pytest.mark.parametrize("count,world", [(4, 3), (10, 4), (2, 3), (7, 1)])
def test_shards_cover_every_sample_exactly_once(count, world):
    shards = [list(ProcessGroup(rank, world).shard(count)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(count))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matrices(results: Path) -> dict[str, list]:
    found = {}
    for path in (results / "records").rglob("*.json"):
        record = json.loads(path.read_text())
        found.update(record["confusion_matrices"])
        assert record["evaluated"]["num_samples"] == 4
    return found


# The model is not what these tests are about (sharding, gathering, jobs): a 1×1 convolution from a file
# (`--adapter`, so that torchrun's and submitit's processes find it too) with weights from a checkpoint.
# Its random init differs from process to process, so the numbers agree only where every process loaded the
# checkpoint. (The trained U-Net cost each process seconds of imports and forward passes.)
PIXELS = """
import os
import torch
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization

class Pixels(Adapter):
    def setup(self, task, band_names):
        self.module = torch.nn.Conv2d(len(band_names), task.class_schema.num_classes, 1)
        n = len(band_names)
        self._contract = InputContract(n, Normalization((127.5,) * n, (64.0,) * n))

    def input_contract(self):
        return self._contract

    def predict(self, x):
        return self.module(x)

class FailsOnRank1(Pixels):
    # on rank 1 only: raises while predicting demo/u2coarse, and while being set up for demo/rgb2irrg
    def setup(self, task, band_names):
        if task.id == "demo/rgb2irrg" and os.environ.get("RANK") == "1":
            raise RuntimeError("rank 1 cannot set up")
        super().setup(task, band_names)
        self.breaks = task.id == "demo/u2coarse"

    def predict(self, x):
        if self.breaks and os.environ.get("RANK") == "1":
            raise RuntimeError("rank 1 broke")
        return self.module(x)
"""


def pixels(tmp_path: Path, checkpoint: Path, name: str = "Pixels") -> list[str]:
    """`run`'s model flags for the 1×1 convolution `name` on the demo tasks' RGB bands and classes, with weights
    from `checkpoint` (conftest's `linear_checkpoint`)."""
    plugin = tmp_path / "pixels.py"
    plugin.write_text(PIXELS)
    return ["--adapter", f"{plugin}:{name}", "--checkpoint", str(checkpoint)]


@pytest.mark.slow
def test_three_processes_give_the_single_process_numbers_and_an_error_on_one_rank_fails_its_task_everywhere(
        data_root: Path, linear_checkpoint: Path, tmp_path: Path):
    """One torchrun of 3 processes over three tasks (each split's 4 samples shard 2, 1, 1). On rank 1 only, the
    adapter raises while predicting demo/u2coarse, and while being set up for demo/rgb2irrg: each task fails
    on every rank without hanging, with no record of it; rank 1 prints its own errors and the others point to
    them; the run exits non-zero. demo/u2a, after them: the matrices one process counts, written by rank 0
    alone (every rank went on in step: none ran ahead into the next task's collectives)."""
    from rsdg_bench.cli import main

    model = [*pixels(tmp_path, linear_checkpoint, "FailsOnRank1"), "--data-root", str(data_root), "--device", "cpu",
             "--quiet"]
    assert main(["run", "--task", "demo/u2a", *model, "--results", str(tmp_path / "one")]) == 0  # this process
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port()), "-m", "rsdg_bench.cli"]
    sharded = subprocess.run([*torchrun, "run", "--task", "demo/u2coarse", "--task", "demo/rgb2irrg", "--task",
                              "demo/u2a", *model, "--results", str(tmp_path / "three")],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert sharded.returncode != 0, sharded.stdout[-3000:]
    assert "rank 1: demo/u2coarse FAILED" in sharded.stderr and "RuntimeError: rank 1 broke" in sharded.stderr
    assert "rank 1: demo/rgb2irrg FAILED" in sharded.stderr and "RuntimeError: rank 1 cannot set up" in sharded.stderr
    assert "another process of this distributed run failed on toyearth/" in sharded.stdout
    assert "another process of this distributed run failed while setting up demo/rgb2irrg" in sharded.stdout
    assert "demo/u2a               2 written" in sharded.stdout
    one, three = matrices(tmp_path / "one"), matrices(tmp_path / "three")
    assert set(one) == {"toyearth/urban/val", "toyearth/arid/val"} and one == three
    records = list((tmp_path / "three" / "records").rglob("*.json"))
    assert len(records) == 2  # rank 0 alone wrote, and nothing of the failed tasks
    assert {json.loads(r.read_text())["task"]["id"] for r in records} == {"demo/u2a"}
    assert json.loads(records[0].read_text())["provenance"]["world_size"] == 3


@pytest.mark.slow
def test_local_launcher_runs_each_task_as_a_job_with_the_same_numbers(data_root: Path, linear_checkpoint: Path,
                                                                        tmp_path: Path, capsys):
    from rsdg_bench.cli import main

    common = ["--task", "demo/u2a", "--task", "demo/u2coarse", *pixels(tmp_path, linear_checkpoint),
              "--data-root", str(data_root), "--device", "cpu", "--quiet"]
    assert main(["run", *common, "--results", str(tmp_path / "here")]) == 0
    code = main(["run", *common, "--results", str(tmp_path / "jobs"), "--launcher", "local", "--job-gpus", "0",
                 "--job-cpus", "1", "--wait"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count(" job ") == 2 and "demo/u2coarse          2 written" in out
    here, jobs = matrices(tmp_path / "here"), matrices(tmp_path / "jobs")
    assert len(here) == 3 and here == jobs


def test_a_job_resolves_its_device_on_its_own_node(monkeypatch, data_root: Path, tmp_path: Path):
    from rsdg_bench.run import launchers
    from rsdg_bench.run.runner import RunSettings

    seen = []
    monkeypatch.setattr(launchers, "resolve_device", lambda name: seen.append(name) or __import__("torch").device("cpu"))
    monkeypatch.setattr(launchers, "run_tasks", lambda tasks, model, settings: [settings.device])
    out = launchers.run_in_job([], None, RunSettings(data_root, tmp_path), "auto")
    assert seen == ["auto"] and str(out[0]) == "cpu"


@pytest.mark.parametrize("batch,world", [(4, 2), (6, 3), (8, 1)])
def test_training_shards_take_exactly_one_processs_draws(batch: int, world: int):
    from rsdg_bench.train.training import rank_draws

    iterations = range(2, 5)  # a resumed run: from iteration 2 on
    shards = [rank_draws(iterations, batch, ProcessGroup(rank, world)) for rank in range(world)]
    assert sorted(d for shard in shards for d in shard) == list(range(2 * batch, 5 * batch))
    assert all(len(shard) == len(iterations) * batch // world for shard in shards)
    # each global batch is the same draws as one process's batch: process r's b-th local batch lies in it
    local = batch // world
    for rank, shard in enumerate(shards):
        for step, it in enumerate(iterations):
            assert shard[step * local:(step + 1) * local] == [it * batch + rank * local + j for j in range(local)]


NORMED = """
class TrainableNormed(Pixels):
    trainable = True

    def setup(self, task, band_names):
        super().setup(task, band_names)
        torch.manual_seed(0)
        # no bias before BatchNorm (as in ResNets): its gradient is 0 up to float noise, which Adam would amplify
        self.module = torch.nn.Sequential(torch.nn.Conv2d(len(band_names), 8, 3, padding=1, bias=False),
                                          torch.nn.BatchNorm2d(8),
                                          torch.nn.ReLU(), torch.nn.Conv2d(8, task.class_schema.num_classes, 1))
"""


def test_two_processes_train_the_weights_one_process_trains(data_root: Path, tmp_path: Path):
    """torchrun with 2 processes on the CPU (gloo), each taking half of the protocol's global batch, the gradients
    averaged and BatchNorm's statistics taken over the global batch (`synced_batchnorm`): the loss curve, the
    running statistics and the checkpoint's weights are those of one process training the same steps, to 1e-5
    relative (the order of float sums); rank 0 alone writes."""
    import torch

    from rsdg_bench.train.training_history import history_paths

    plugin = tmp_path / "pixels.py"
    plugin.write_text(PIXELS + NORMED)
    args = ["train", "--task", "demo/u2a", "--adapter", f"{plugin}:TrainableNormed", "--iterations", "3", "--batch-size", "4",
            "--val-interval", "3", "--data-root", str(data_root), "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from rsdg_bench.cli import main

    assert main([*args, "--out", str(tmp_path / "one.pt")]) == 0  # one process: this one
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port()), "-m", "rsdg_bench.cli"]
    two = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two.pt")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("checkpoint ->") == 1  # rank 0 alone reports (and writes)
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=1e-5, atol=1e-6)
    assert (a["rsdg"]["processes"], b["rsdg"]["processes"]) == (1, 2)
    assert {k for k in a["state_dict"] if "running_var" in k}  # BatchNorm's statistics are among those compared
    one, two = (json.loads(history_paths(tmp_path / f"{n}.pt")["json"].read_text())["loss"] for n in ("one", "two"))
    assert len(one) == 3 and two == pytest.approx(one, rel=1e-5)  # the same loss curve
    # selection scored in shards over both processes: the same split, nearly the same weights (a pixel may flip)
    assert b["rsdg"]["selection"]["iteration"] == a["rsdg"]["selection"]["iteration"] == 3
    assert b["rsdg"]["selection"]["value"] == pytest.approx(a["rsdg"]["selection"]["value"], rel=1e-3)


def test_shard_losses_average_to_the_whole_batch_gradient_with_ignored_pixels():
    """Each process's cross-entropy over its shard, divided by the labelled pixels of all shards: averaging the
    shards' gradients (what the all-reduce does) gives the whole batch's, however unevenly the ignored pixels
    fall, and a shard with no labelled pixel gives 0, not NaN."""
    import torch

    from rsdg_bench.datasets.classes import IGNORE_INDEX
    from rsdg_bench.train.training import shard_cross_entropy

    generator = torch.Generator().manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 1)
    images = torch.randn(4, 3, 6, 6, generator=generator)
    labels = torch.randint(0, 4, (4, 6, 6), generator=generator)
    labels[:2, :, :4] = IGNORE_INDEX  # the first shard is two-thirds ignored
    labels[1] = IGNORE_INDEX          # and one of its images wholly

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        net.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in net.parameters()]

    whole = grads(torch.nn.functional.cross_entropy(net(images), labels, ignore_index=IGNORE_INDEX))
    labelled = (labels != IGNORE_INDEX).sum().reshape(1).double()
    shards = [grads(shard_cross_entropy(net(images[i:i + 2]), labels[i:i + 2], labelled, 2)) for i in (0, 2)]
    for full, first, second in zip(whole, *shards, strict=True):
        torch.testing.assert_close((first + second) / 2, full)
    empty = shard_cross_entropy(net(images[1:2]), labels[1:2], torch.zeros(1, dtype=torch.float64), 2)
    assert float(empty) == 0.0


def test_a_whole_batch_loss_and_an_uneven_batch_are_refused_over_several_processes(data_root: Path, tmp_path: Path):
    from conftest import trainable_pixel_linear

    from rsdg_bench.base.errors import TaskError
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    task = TaskCatalog().task("demo/u2a")
    dice = task.model_copy(update={"training": task.training.model_copy(update={"loss": "ce+dice"})})
    adapter = build_trainable(trainable_pixel_linear(), task, data_root)
    with pytest.raises(TaskError, match="computed over the whole batch"):  # refused before any collective
        train_adapter(adapter, dice, data_root, tmp_path / "x.pt", group=ProcessGroup(0, 2), progress=False)
    with pytest.raises(TaskError, match="does not split evenly over 2 processes"):
        train_adapter(adapter, task, data_root, tmp_path / "x.pt", group=ProcessGroup(0, 2), progress=False,
                      overrides=TrainOverrides(iterations=1, batch_size=3))
    assert not (tmp_path / "x.pt").exists()


def test_a_training_submitted_as_a_two_process_job_trains_what_one_process_trains(data_root: Path, tmp_path: Path,
                                                                                     capsys):
    """`train --launcher local --job-processes 2`: submitit starts the job's two processes, which form the
    process group from the variables submitit exports (as a Slurm job's would) and share each step; the
    checkpoint is the one this process trains alone (up to the order of float sums), written by rank 0."""
    import torch

    from rsdg_bench.cli import main

    plugin = tmp_path / "pixels.py"
    plugin.write_text(PIXELS + "\nclass TrainablePixels(Pixels):\n    trainable = True\n")
    args = ["train", "--task", "demo/u2a", "--adapter", f"{plugin}:TrainablePixels", "--iterations", "2",
            "--batch-size", "4", "--val-interval", "2", "--data-root", str(data_root), "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "here.pt")]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "job.pt"), "--results", str(tmp_path / "results"), "--launcher",
                 "local", "--job-gpus", "0", "--job-cpus", "1", "--job-processes", "2", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "job " in out and "(2 processes)" in out and f"checkpoint -> {tmp_path / 'job.pt'}" in out
    here, job = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("here", "job"))
    assert (here["rsdg"]["processes"], job["rsdg"]["processes"]) == (1, 2)
    for key, value in here["state_dict"].items():
        torch.testing.assert_close(job["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    assert list((tmp_path / "results" / "jobs").iterdir())  # the job's logs, under the results folder


def test_synced_batch_norm_keeps_the_parameters_buffers_and_their_names():
    """The swap for cross-process BatchNorm keeps the state dict's keys and the very parameter and buffer objects
    (an optimizer built before or after sees the same tensors), reaches nested BatchNorms of every dimension, and
    does nothing in one process; in evaluation mode it is plain BatchNorm."""
    import torch

    from rsdg_bench.evaluator.distributed import ProcessGroup
    from rsdg_bench.train.synced_batchnorm import SyncedBatchNorm, synchronize_batch_norm

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                              torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(16)))
    keys, tensors = list(net.state_dict()), [id(t) for t in [*net.parameters(), *net.buffers()]]
    assert synchronize_batch_norm(net, ProcessGroup()) == 0 and not any(isinstance(m, SyncedBatchNorm) for m in net.modules())
    assert synchronize_batch_norm(net, ProcessGroup(rank=0, world_size=2)) == 2
    assert isinstance(net[1], SyncedBatchNorm) and isinstance(net[2][1], SyncedBatchNorm)
    assert list(net.state_dict()) == keys and [id(t) for t in [*net.parameters(), *net.buffers()]] == tensors
    net.eval()
    x = torch.randn(2, 3, 2, 2)
    plain = torch.nn.functional.batch_norm(net[0](x), net[1].running_mean, net[1].running_var, net[1].weight,
                                           net[1].bias, False, 0.1, net[1].eps)
    assert torch.equal(net[1](net[0](x)), plain)


def test_synced_batch_norm_matches_batch_norm_forward_and_backward_and_allows_in_place_after(monkeypatch):
    """In one process (a gloo group of one, so the all-reduces return the local sums) `SyncedBatchNorm` forced
    into its cross-process path gives BatchNorm's outputs, input and parameter gradients and running statistics;
    without affine parameters an in-place ReLU may follow it (the saved tensor is not handed out)."""
    import torch
    import torch.distributed as dist

    from rsdg_bench.evaluator.distributed import ProcessGroup
    from rsdg_bench.train.synced_batchnorm import SyncedBatchNorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        for affine in (True, False):
            torch.manual_seed(0)
            plain = torch.nn.BatchNorm2d(3, affine=affine).double()
            if affine:
                with torch.no_grad():
                    plain.weight.uniform_(0.5, 2.0)
                    plain.bias.uniform_(-1.0, 1.0)
            synced = SyncedBatchNorm(torch.nn.BatchNorm2d(3, affine=affine).double(), ProcessGroup(0, 2))
            synced.load_state_dict(plain.state_dict())
            x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
            xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
            outs = [torch.relu_(module(xi)) for module, xi in zip((plain, synced), xs, strict=True)]
            weights = torch.randn_like(outs[0])
            for out in outs:
                (out * weights).sum().backward()
            torch.testing.assert_close(outs[1], outs[0])
            torch.testing.assert_close(xs[1].grad, xs[0].grad)
            for key, value in plain.state_dict().items():
                torch.testing.assert_close(synced.state_dict()[key], value)
            if affine:
                torch.testing.assert_close(synced.weight.grad, plain.weight.grad)
                torch.testing.assert_close(synced.bias.grad, plain.bias.grad)
    finally:
        dist.destroy_process_group()
