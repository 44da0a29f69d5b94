"""torchrun evaluation: exact shards, and the same confusion matrices as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rsdg_bench.distributed import ProcessGroup


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
from rsdg_bench.adapters import Adapter, InputContract, Normalization

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
    def predict(self, x):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("rank 1 broke")
        return self.module(x)
"""


def pixels(tmp_path: Path, checkpoint: Path | None, name: str = "Pixels") -> list[str]:
    """`run`'s model flags for the 1×1 convolution `name` on the demo tasks' RGB bands and classes: weights
    from `checkpoint` (conftest's `linear_checkpoint`), or none (`--random-init`) for the one that fails."""
    plugin = tmp_path / "pixels.py"
    plugin.write_text(PIXELS)
    if checkpoint is None:
        return ["--adapter", f"{plugin}:{name}", "--random-init"]
    return ["--adapter", f"{plugin}:{name}", "--checkpoint", str(checkpoint)]


@pytest.mark.slow
def test_three_processes_give_the_single_process_numbers(data_root: Path, linear_checkpoint: Path, tmp_path: Path):
    from rsdg_bench.cli import main

    args = ["run", "--task", "demo/u2a", *pixels(tmp_path, linear_checkpoint), "--data-root", str(data_root),
            "--device", "cpu", "--quiet"]
    assert main([*args, "--results", str(tmp_path / "one")]) == 0  # one process: this one
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port()), "-m", "rsdg_bench.cli"]
    sharded = subprocess.run([*torchrun, *args, "--results", str(tmp_path / "three")],
                             capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one, three = matrices(tmp_path / "one"), matrices(tmp_path / "three")
    assert set(one) == {"toyearth/urban/val", "toyearth/arid/val"} and one == three
    provenance = json.loads(next((tmp_path / "three" / "records").rglob("*.json")).read_text())["provenance"]
    assert provenance["world_size"] == 3
    assert len(list((tmp_path / "three" / "records").rglob("*.json"))) == 2     # rank 0 alone wrote


def test_an_error_on_one_rank_fails_the_task_everywhere_without_hanging(data_root: Path, tmp_path: Path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port()), "-m", "rsdg_bench.cli"]
    result = subprocess.run([*torchrun, "run", "--task", "demo/u2a", *pixels(tmp_path, None, "FailsOnRank1"),
                             "--data-root", str(data_root), "--results", str(tmp_path / "r"),
                             "--device", "cpu", "--quiet"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert "another process of this distributed run failed" in result.stdout
    assert not list((tmp_path / "r").rglob("records/**/*.json"))


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
    from rsdg_bench import launchers
    from rsdg_bench.runner import RunSettings

    seen = []
    monkeypatch.setattr(launchers, "resolve_device", lambda name: seen.append(name) or __import__("torch").device("cpu"))
    monkeypatch.setattr(launchers, "run_tasks", lambda tasks, model, settings: [settings.device])
    out = launchers.run_in_job([], None, RunSettings(data_root, tmp_path), "auto")
    assert seen == ["auto"] and str(out[0]) == "cpu"
