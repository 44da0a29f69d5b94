"""The public Python API: what a notebook or a training script needs, without the CLI.

    import rsdg_bench as rb

    task = rb.load_task("demo/u2a")
    train = rb.open_split(task, "source", data_root=...)          # a torch Dataset of prepared samples
    result = rb.evaluate(model, task, input_contract=..., data_root=...)   # model: Adapter or nn.Module
    result.to_frame(); result.save("rsdg-results")
    frame = rb.load_results("rsdg-results")                        # one row per record × split
    page = rb.build_leaderboard("rsdg-results")

The CLI runs through the same functions (`rsdg-bench leaderboard build` is `build_leaderboard`, `run`
evaluates through `runner.evaluate_task` as `evaluate` does), so a number from either path is the same
number. docs/python-api.md walks through it on the demo data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rsdg_bench.base.errors import RsdgError, SplitAccessError
from rsdg_bench.base.paths import default_data_root, default_results_root
from rsdg_bench.protocol.task_schema import SplitRef, Task, TaskCatalog

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    from rsdg_bench.models.adapters import Adapter, InputContract
    from rsdg_bench.protocol.split_dataset import SplitDataset
    from rsdg_bench.records.results import ResultRecord

__all__ = ["Evaluation", "Leaderboard", "build_leaderboard", "evaluate", "list_tasks", "load_results", "load_task", "open_split"]


def list_tasks(suite: str | None = None) -> list[Task]:
    """Every task (sorted by id, the demo's too), or a suite's tasks in the suite's order (`all`: every
    benchmark task, without the demo)."""
    catalog = TaskCatalog()
    return catalog.suite_tasks(suite) if suite else [catalog.tasks[t] for t in sorted(catalog.tasks)]


def load_task(task_id: str) -> Task:
    """One task by id (`crossearth/pi2v`), resolved and validated."""
    return TaskCatalog().task(task_id)


def _task(task: Task | str) -> Task:
    return load_task(task) if isinstance(task, str) else task


def _split_ref(task: Task, split: str) -> SplitRef:
    """`source`, `select`, `target` (a task's only target) or a split's slug `dataset/domain/split`."""
    if split == "source":
        return task.source
    if split == "select":
        if task.select is None:
            raise RsdgError(f"task {task.id} has no selection split", "open `source` or one of its targets")
        return task.select
    if split == "target":
        if len(task.targets) != 1:
            raise RsdgError(f"task {task.id} has {len(task.targets)} targets",
                            f"name one: {', '.join(t.slug for t in task.targets)}")
        return task.targets[0]
    for ref in task.splits():
        if ref.slug == split:
            return ref
    raise RsdgError(f"task {task.id} reads no split {split!r}",
                    f"use source, select, target or one of: {', '.join(r.slug for r in task.splits())}")


def open_split(task: Task | str, split: str = "source", *, data_root: Path | str | None = None,
               for_training: bool = True, limit: int | None = None) -> SplitDataset:
    """A prepared split as a torch `Dataset` of samples (`image` as stored, with the task's band selection;
    `label` in the task's classes, 255 ignored; `sample_id`; `days` for a time series).

    `split` is `source`, `select`, `target` or a split's slug. With `for_training` (the default) only the
    source and selection splits open, as in `rsdg-bench train`: a target is for evaluation, and asking for
    it raises `SplitAccessError`; pass `for_training=False` to read a target (e.g. to look at it)."""
    from rsdg_bench.protocol.split_dataset import SplitDataset
    from rsdg_bench.protocol.task_data import TaskData

    task = _task(task)
    data = TaskData(Path(data_root) if data_root else default_data_root(), task,
                    phase="train" if for_training else "evaluate")
    ref = _split_ref(task, split)
    if for_training and not data.allowed(ref):
        raise SplitAccessError(f"task {task.id}: {ref.slug} is a target split; training code may not read it",
                               "pass for_training=False to open it for evaluation or inspection")
    return data.open(ref, limit=limit, split_type=SplitDataset)


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` returns: one result record per evaluated split, as `rsdg-bench run` writes them."""

    task: Task
    records: list[ResultRecord]

    @property
    def confusion_matrices(self) -> dict[str, np.ndarray]:
        """split slug → K×K int64 confusion matrix (rows: label, columns: prediction)."""
        import numpy as np

        return {slug: np.asarray(matrix, dtype=np.int64)
                for record in self.records for slug, matrix in record.confusion_matrices.items()}

    def to_frame(self) -> pd.DataFrame:
        """One row per split (see `results_frame`)."""
        from rsdg_bench.records.results_frame import records_frame

        return records_frame([(None, record) for record in self.records])

    def save(self, results_dir: Path | str | None = None) -> list[Path]:
        """Write the records into a results folder (default `$RSDG_RESULTS` or ./rsdg-results), where `run`,
        `results show` and `leaderboard build` find them; return their paths."""
        from rsdg_bench.records.results import ResultStore

        store = ResultStore(Path(results_dir) if results_dir else default_results_root())
        return [store.write(record) for record in self.records]


def evaluate(model: Adapter | nn.Module, task: Task | str, *, input_contract: InputContract | None = None,
             data_root: Path | str | None = None, device: str | torch.device = "auto", limit: int | None = None,
             name: str | None = None, num_workers: int = 0, window_batch: int = 1, batch_size: int = 1,
             precision: str = "fp32", read_threads: int | Literal["auto"] | None = None,
             progress: bool = True) -> Evaluation:
    """Evaluate a model on every evaluation split of `task`, exactly as `rsdg-bench run` does.

    `model` is an `Adapter` (set up for the task here if it is not yet; its weights as they are) or a plain
    `torch.nn.Module` with its `input_contract` (bands and normalization in the prepared data's units): the
    module is called with the normalized batch, `module(x)` (or `module(x, days)` for a time series), and
    must return logits. The weights are identified in the records by the sha256 of the model's state
    dict. `device` "auto" (the default) is where the model's parameters already are when that is a GPU, else
    CUDA when present, else the CPU; the model is moved there. `read_threads` reads ahead without `num_workers`
    (default: two on the CPU; beside a GPU "auto", the count measured on each split's first images). Nothing is
    written: `.save(results_dir)` does that, and the process is left as it was found (no allocator or thread
    settings change).
    """
    from torch import nn

    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.models.module_adapter import ModuleAdapter, state_sha256
    from rsdg_bench.protocol.task_data import TaskData
    from rsdg_bench.run.runner import RunSettings, Weights, evaluate_task

    task = _task(task)
    if isinstance(model, nn.Module):
        adapter: Adapter = ModuleAdapter(model, input_contract, frozenset({task.kind}))
    elif isinstance(model, Adapter):
        adapter = model
    else:
        raise RsdgError(f"evaluate() takes an Adapter or a torch.nn.Module, not {type(model).__name__}",
                        "wrap the model in a torch.nn.Module whose forward returns logits")
    root = Path(data_root) if data_root else default_data_root()
    data = TaskData(root, task, phase="evaluate")
    if adapter.module is None:
        adapter.setup(task, data.band_names(task.source))
    assert adapter.module is not None  # given, or built by `setup`
    weights = Weights(state_sha256(adapter.module), {"status": "unknown", "why": "weights handed in from Python; "
                                                     "nothing records how they were trained"}, in_memory=True)
    settings = RunSettings(data_root=root, results_root=default_results_root(), device=_device(device, adapter),
                           num_workers=num_workers, limit=limit, force=True, progress=progress,
                           window_batch=window_batch, batch_size=batch_size, precision=precision,
                           read_threads=read_threads)
    _, records = evaluate_task(task, adapter, data, weights, name or adapter.name, settings, store=None)
    return Evaluation(task, records)


def _device(device: str | torch.device, adapter: Adapter) -> torch.device:
    """`evaluate`'s device: as given, or for "auto" the model's own accelerator, else CUDA when present, else CPU."""
    import torch

    from rsdg_bench.evaluator.distributed import resolve_device

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        placed = {p.device for p in adapter.module.parameters()} if adapter.module is not None else set()
        if len(placed) == 1 and next(iter(placed)).type != "cpu":
            return next(iter(placed))
    return resolve_device(device)


def load_results(results_dir: Path | str | None = None, *, strict: bool = False) -> pd.DataFrame:
    """The records of a results folder as a DataFrame, one row per record × split (`results_frame`). A record
    that fails its own checks (a matrix that does not add up, a malformed file) is left out with a warning,
    as the leaderboard leaves it out; with `strict` it raises `ResultsError` instead."""
    import logging

    from rsdg_bench.records.results import ResultStore
    from rsdg_bench.records.results_frame import records_frame

    store = ResultStore(Path(results_dir) if results_dir else default_results_root())
    if strict:
        return records_frame(store.load_all())
    valid, refused = store.load_valid()
    for path, why in refused:
        logging.getLogger(__name__).warning("%s left out: %s", path, why)
    return records_frame(valid)


@dataclass(frozen=True)
class Leaderboard:
    """A built leaderboard site: its index page and what went into it."""

    page: Path
    tasks: int
    models: int
    left_out: int
    reported_rows: int
    baseline_found: bool = False  # whether a row bears the `baseline` name asked for


def build_leaderboard(results_dir: Path | str | None = None, out: Path | str | None = None, *,
                      reported: bool = False, only_protocol: bool = False, submissions: Path | str | None = None,
                      data_root: Path | str | None = None, baseline: str | None = None,
                      rank_shared: bool = False, progress: bool = False) -> Leaderboard:
    """Build the static leaderboard site from a results folder into `out` (default `<results>/site`), the
    papers' reported rows beside the harness's with `reported`, only full-protocol weights with
    `only_protocol`, and the verified bundles of a `submissions` folder (checked against the prepared data of
    `data_root`) with their badges; every row's gain over the row named `baseline`, and with `rank_shared` a
    rank of every row on the tasks it has (what `rsdg-bench leaderboard build` runs). `progress`: a bar over
    the records as they are scored (a real board takes minutes)."""
    from rsdg_bench.leaderboards.aggregate import build_board, with_suites
    from rsdg_bench.leaderboards.render import write_site
    from rsdg_bench.leaderboards.reported import reported_rows
    from rsdg_bench.leaderboards.views import SiteOptions
    from rsdg_bench.records.results import ResultStore

    results = Path(results_dir) if results_dir else default_results_root()
    refused_here: list[tuple[str, str]] = []
    records: Iterable[tuple[Path | str, ResultRecord]] = ResultStore(results).iter_valid(refused_here)  # one at a time
    refused: Iterable[tuple[str, str]] = refused_here  # read by build_board once the records are consumed
    badges: dict[str, tuple[str, str]] = {}
    submitted_count = 0
    if submissions is not None:
        from rsdg_bench.submissions.board import submitted_records

        submitted = submitted_records(Path(submissions), Path(data_root) if data_root else default_data_root(),
                                      results)
        records, badges = itertools.chain(records, submitted.records), submitted.badges
        refused = itertools.chain(refused_here, submitted.refused)
        submitted_count = len(submitted.records)
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, total=len(ResultStore(results).paths()) + submitted_count, desc="scoring records",
                       unit="record")
    board = with_suites(build_board(records, refused, only_protocol=only_protocol, verified=badges),
                        TaskCatalog(), reported_rows() if reported else [])
    page = write_site(board, Path(out) if out else results / "site", results_root=results,
                      options=SiteOptions(baseline=baseline, rank_shared=rank_shared))
    labels = set(board.models) | {r.label for t in board.tasks for r in t.reported}
    return Leaderboard(page, len(board.tasks), len(board.models), len(board.excluded),
                       sum(len(t.reported) for t in board.tasks), baseline_found=baseline in labels)
