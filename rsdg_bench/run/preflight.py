"""Before `run` evaluates anything: can each selected task run? One list of what to prepare and which
weights are missing (and whether any were released), instead of one near-identical failure per task.

A task is ready when the adapter does its kind, every dataset it reads (source and evaluated splits) is
prepared, and its weights are found. Nothing is loaded: datasets are opened (card and manifest), checkpoint
folders looked into, and the adapter class constructed without being set up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rsdg_bench.base.errors import DataError, RsdgError
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.models.model_spec import MissingWeights, ModelSpec, find_checkpoint, model_flag
from rsdg_bench.models.registry import adapters_doing, require_adapter_kind, resolve_adapter
from rsdg_bench.protocol.task_schema import Task


@dataclass
class Readiness:
    """The selection split into the tasks that can run and, for the others, why not."""

    ready: list[Task] = field(default_factory=list)
    unprepared: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # dataset → task ids
    missing: list[MissingWeights] = field(default_factory=list)
    wrong_kind: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # kind → task ids

    @property
    def blocked(self) -> int:
        ids = {t for tasks in self.unprepared.values() for t in tasks} | {m.task_id for m in self.missing}
        return len(ids | {t for tasks in self.wrong_kind.values() for t in tasks})

    def report(self, model: ModelSpec, total: int) -> str:
        """What stands in the way, grouped by what to do about it (one line per group)."""
        lines = [f"{self.blocked} of {total} tasks cannot run yet:"]
        if self.unprepared:
            datasets = ", ".join(f"{name} ({len(tasks)} task{'s' * (len(tasks) > 1)})"
                                 for name, tasks in sorted(self.unprepared.items()))
            lines.append(f"  not prepared: {datasets}: `rsdg-bench prepare NAME --raw <download>` for each")
        seed = "" if model.seed is None else f" --seed {model.seed}"
        train = f"`rsdg-bench train --task ID {model_flag(model.adapter)}{seed}` for each"
        released = [m for m in self.missing if m.released]
        trainable = [m.task_id for m in self.missing if m.trainable and not m.released]
        none = [m.task_id for m in self.missing if not m.trainable and not m.released]
        if released:
            lines.append(f"  released weights not found in {released[0].folder}: "
                         + ", ".join(f"{m.task_id} ({m.released[0]})" for m in released)
                         + ": download them (docs/models.md says where)"
                         + (f", or train them: {train}" if all(m.trainable for m in released) else ""))
        if trainable:
            lines.append(f"  no trained weights: {', '.join(trainable)}: {train}")
        if none:
            lines.append(f"  no weights were released for {', '.join(none)}, and {model.adapter!r} cannot be trained "
                         "here: these have no result of this model to evaluate")
        for kind, tasks in sorted(self.wrong_kind.items()):
            doers = ", ".join(adapters_doing(kind)) or "none installed"
            lines.append(f"  {kind}, which {model.adapter!r} does not do: {', '.join(tasks)} (adapters that do: "
                         f"{doers})")
        return "\n".join(lines)


def check_selection(tasks: list[Task], model: ModelSpec, data_root: Path, results_root: Path) -> Readiness:
    """Which of `tasks` can run with `model` on the data in `data_root`, and why the others cannot."""
    adapter_class = resolve_adapter(model.adapter)
    adapter = model.instantiate()
    readiness = Readiness()
    prepared: dict[str, bool] = {}
    for task in tasks:
        try:
            require_adapter_kind(task, adapter_class)
        except RsdgError:
            readiness.wrong_kind[task.kind].append(task.id)
            continue
        datasets = sorted({task.source.dataset, *(ref.dataset for _, ref in task.evaluation_splits())})
        unprepared = [name for name in datasets if not prepared.setdefault(name, _is_prepared(data_root, name))]
        for name in unprepared:
            readiness.unprepared[name].append(task.id)
        weights = find_checkpoint(model, task, results_root, adapter)
        if isinstance(weights, MissingWeights):
            readiness.missing.append(weights)
        elif not unprepared:
            readiness.ready.append(task)
    return readiness


def _is_prepared(data_root: Path, name: str) -> bool:
    try:
        PreparedDataset.open(data_root, name)
    except DataError:
        return False
    return True
