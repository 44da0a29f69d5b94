"""Which model a command means, and building it for a task: the adapter by name with its options, where its
weights are looked for, and what is missing when they are not there. Shared by `run`, `train` and `predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.registry import resolve_adapter

if TYPE_CHECKING:
    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.protocol.task_data import TaskData
    from rsdg_bench.protocol.task_schema import Task


@dataclass(frozen=True)
class ModelSpec:
    """Which model to evaluate: adapter, its options, and where its weights come from."""

    adapter: str
    options: dict[str, str] = field(default_factory=dict)
    checkpoint: Path | None = None          # one file for every task
    checkpoint_dir: Path | None = None      # <dir>/<a name from adapter.checkpoint_names(task)>
    backbone_checkpoint: Path | None = None  # frozen backbone weights kept apart from the checkpoint
    random_init: bool = False               # explicit opt-in; such records never reach a leaderboard
    display_name: str | None = None
    seed: int | None = None                 # the weights `train --seed N` made: <checkpoint_key>.seed<N>.pt

    def instantiate(self) -> Adapter:
        return resolve_adapter(self.adapter)(**self.options)


@dataclass(frozen=True)
class MissingWeights:
    """No checkpoint for a task in its folder: where it was looked for, and what can be done about it."""

    task_id: str
    folder: Path
    looked_for: list[str]
    released: list[str]  # the authors' own file names among them (none: nothing was released for this task)
    trainable: bool

    def error(self, model: ModelSpec) -> AdapterError:
        seed = "" if model.seed is None else f" --seed {model.seed}"
        train = f"train one with `rsdg-bench train --task {self.task_id} {model_flag(model.adapter)}{seed}`, or "
        if self.released:
            fix = (f"put the released {self.released[0]} in {self.folder} (docs/models.md says where it is published), "
                   f"or {train if self.trainable else ''}")
        elif self.trainable:
            fix = train
        else:
            fix = (f"{model.adapter!r} evaluates released weights only (it is not trainable here) and none were "
                   f"released for {self.task_id}: leave the task out, or if you have weights of your own ")
        return AdapterError(f"no checkpoint for task {self.task_id} in {self.folder} (looked for "
                            f"{', '.join(self.looked_for)})", fix + "pass --checkpoint FILE or --checkpoint-dir DIR")


def find_checkpoint(model: ModelSpec, task: Task, results_root: Path, adapter: Adapter) -> Path | None | MissingWeights:
    """The checkpoint file a task uses, None for an explicit random-init run, or what is missing."""
    if model.random_init:
        return None
    if model.checkpoint is not None:
        if not model.checkpoint.is_file():
            raise AdapterError(f"checkpoint {model.checkpoint} not found", "check the --checkpoint path")
        return model.checkpoint
    folder = model.checkpoint_dir or default_checkpoint_dir(results_root, adapter.name)
    names = ([seed_checkpoint_name(adapter.checkpoint_stem(task), model.seed)] if model.seed is not None
             else adapter.checkpoint_names(task))
    for name in names:
        if (folder / name).is_file():
            return folder / name
    own = f"{adapter.checkpoint_stem(task)}.pt"  # what `train` writes; a seed's file is never a released one
    return MissingWeights(task.id, folder, names, [n for n in names if model.seed is None and n != own],
                          adapter.trainable)


def checkpoint_path_for(model: ModelSpec, task: Task, results_root: Path, adapter: Adapter) -> Path | None:
    """The checkpoint file a task uses, or None for an explicit random-init run; raises when there is none."""
    found = find_checkpoint(model, task, results_root, adapter)
    if isinstance(found, MissingWeights):
        raise found.error(model)
    return found


def model_flag(spec: str) -> str:
    """The flag that names this adapter on the command line: `--adapter` for a `file.py:Class`, else `--model`."""
    return f"--adapter {spec}" if ".py" in spec else f"--model {spec}"


def seed_checkpoint_name(stem: str, seed: int | None) -> str:
    """The file `train` writes under another seed (`--seed`/`--seeds`), else under the protocol's, from the
    adapter's `checkpoint_stem` for the task."""
    return f"{stem}{'' if seed is None else f'.seed{seed}'}.pt"


def default_checkpoint_dir(results_root: Path, adapter_name: str) -> Path:
    return Path(results_root) / "checkpoints" / adapter_name


def build_for_task(model: ModelSpec, task: Task, data: TaskData) -> Adapter:
    """An adapter set up for the task's classes and its source domain's bands."""
    adapter = model.instantiate()
    source_bands = data.band_names(task.source)
    adapter.setup(task, source_bands)
    return adapter


