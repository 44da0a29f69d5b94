"""Running tasks: build the adapter, load its checkpoint, evaluate every split, write one record each.

A suite run goes task by task. A record whose resume key already exists is skipped (unless `force`);
a task that fails is reported with its error and the run goes on with the next one. Each run also
leaves a summary in `<results>/runs/<timestamp>.json`.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import torch
from tqdm.auto import tqdm

from rsdg_bench.base.allocator import keep_freed_blocks
from rsdg_bench.base.errors import AdapterError, DataError, RsdgError, disk_error, is_storage_error
from rsdg_bench.base.io import atomic_write_json, sha256_file
from rsdg_bench.datasets.data_lock import reading
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.datasets.read_ahead import ReadThreads
from rsdg_bench.evaluator.distributed import ProcessGroup
from rsdg_bench.evaluator.evaluation import evaluate_split_counts
from rsdg_bench.evaluator.predictions import PredictionSaver
from rsdg_bench.models.adapters import Adapter
from rsdg_bench.models.graph_compile import compile_module
from rsdg_bench.models.model_spec import ModelSpec, build_for_task, checkpoint_path_for
from rsdg_bench.models.registry import require_adapter_kind, resolve_adapter
from rsdg_bench.protocol.kind import get_kind
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.records.record_building import RunContext, record_from_evaluation
from rsdg_bench.records.results import ResultRecord, ResultStore, resume_key
from rsdg_bench.records.training_record import read_training_block, training_provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    data_root: Path
    results_root: Path
    device: torch.device = torch.device("cpu")
    num_workers: int = 0
    limit: int | None = None
    force: bool = False
    progress: bool = True
    group: ProcessGroup = field(default_factory=ProcessGroup)
    window_batch: int = 1  # sliding windows per forward pass: speed only, never a number
    batch_size: int = 1  # samples per loader batch; equal-size images share a forward pass (speed only)
    precision: str = "fp32"  # fp32 | tf32 (CUDA) | bf16 | fp16 (autocast); not fp32 is another result, named so
    save_predictions: int = 0  # keep image / ground truth / prediction PNGs of the first K samples per split
    read_threads: ReadThreads | None = None  # threads reading ahead without workers, or auto (measured); None:
    # default_read_threads(device), two on the CPU and auto beside an accelerator
    compile: str | None = None  # a torch.compile backend for the module (`graph_compile`): speed, recorded


@dataclass
class TaskOutcome:
    task_id: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Weights:
    """Where the evaluated weights come from, for the record: a checkpoint file (`path`), a module's
    in-memory state (`in_memory`, its sha256 over the serialized state dict), or none (random init)."""

    sha256: str | None
    training: dict[str, Any]
    path: Path | None = None
    in_memory: bool = False

    @classmethod
    def of_checkpoint(cls, checkpoint: Path | None, task: Task, data: TaskData, adapter: Adapter) -> Weights:
        """The checkpoint's sha256 and its training judged against the protocol the adapter trains under on the
        task (`Adapter.training_protocol`: the task's own, or a preset protocol's values over it)."""
        if checkpoint is None:
            return cls(None, {"status": "random-init"})
        card = data.prepared(task.source.dataset).card
        source_samples = card.split_counts.get(task.source.domain, {}).get(task.source.split, 0)
        protocol = adapter.training_protocol(task.training) if task.training is not None else None
        return cls(sha256_file(checkpoint), training_provenance(task, read_training_block(checkpoint), source_samples,
                                                                protocol), path=checkpoint)

    def block(self) -> dict[str, Any]:
        """The record's `model.checkpoint`."""
        return {"path": str(self.path) if self.path else None, "sha256": self.sha256,
                "random_init": self.sha256 is None, **({"in_memory": True} if self.in_memory else {})}


def run_task(task: Task, model: ModelSpec, settings: RunSettings, store: ResultStore) -> TaskOutcome:
    with settings.group.failing_together(f"while setting up {task.id}"):
        require_adapter_kind(task, resolve_adapter(model.adapter))  # before any data is opened
        data = TaskData(settings.data_root, task, phase="evaluate")
        adapter, weights = load_for_task(model, task, data, settings.results_root)
    outcome, _ = evaluate_task(task, adapter, data, weights, model.display_name or default_name(adapter), settings,
                               store)
    return outcome


def load_for_task(model: ModelSpec, task: Task, data: TaskData, results_root: Path) -> tuple[Adapter, Weights]:
    """The adapter set up for `task` with its weights loaded, and what those weights are."""
    adapter = build_for_task(model, task, data)
    checkpoint = checkpoint_path_for(model, task, results_root, adapter)
    log.info("%s: adapter %s, checkpoint %s", task.id, adapter.name, checkpoint or "none (random init)")
    if model.backbone_checkpoint is not None:
        adapter.use_backbone_checkpoint(model.backbone_checkpoint)
    if checkpoint is not None:
        adapter.load(checkpoint)
    return adapter, Weights.of_checkpoint(checkpoint, task, data, adapter)


def evaluate_task(task: Task, adapter: Adapter, data: TaskData, weights: Weights, display_name: str,
                  settings: RunSettings, store: ResultStore | None) -> tuple[TaskOutcome, list[ResultRecord]]:
    """Evaluate an adapter that is set up and loaded on every evaluation split of `task`: one record per
    split, written to `store` (a split whose resume key it holds is skipped unless `settings.force`), or
    only returned when `store` is None (the Python API)."""
    with settings.group.failing_together(f"while setting up {task.id}"):
        require_adapter_kind(task, adapter)
        check_precision(adapter, settings.precision, settings.device)
        kind = get_kind(task.kind)
        adapter.to(settings.device)
        if settings.compile is not None:
            compile_module(adapter, settings.compile)
        display_name = display_name_at(display_name, settings.precision)
        # every split opens before any is scored: a task that cannot run writes nothing
        splits = {ref.slug: data.open(ref, limit=settings.limit) for _, ref in task.evaluation_splits()}
    outcome, records = TaskOutcome(task.id), []
    for role, ref in task.evaluation_splits():
        prepared = data.prepared(ref.dataset)
        key = resume_key(task_hash=task.hash, adapter_identity=adapter.identity(), checkpoint_sha256=weights.sha256,
                         inference=task.inference.model_dump(mode="json") | precision_block(settings.precision),
                         manifest_sha256=prepared.manifest_sha256,
                         split_slug=ref.slug, role=role, limit=settings.limit)
        if store is not None and settings.group.any(store.exists(task.id, key) and not settings.force):
            log.info("%s %s: record %s exists (same task, adapter code and options, checkpoint, data): skipped",
                     task.id, ref.slug, key)
            outcome.skipped.append(str(store.path_for(task.id, key)))
            continue
        log.info("%s %s: evaluating (%s)", task.id, ref.slug, "forced" if settings.force else "no record yet")
        with reading(data.data_root, ref.dataset):  # a prepare of it waits for this split to be read
            _same_version(data, ref.dataset, prepared.manifest_sha256, f"{task.id} was set up")
            split = splits[ref.slug]
            started = time.perf_counter()
            saver = (PredictionSaver(settings.results_root, task.id, key, task.class_schema,
                                     settings.save_predictions, store.path_for(task.id, key).parent)
                     if store is not None and settings.save_predictions and kind.per_pixel_map else None)
            counts = evaluate_split_counts(adapter, split, task, settings.device, num_workers=settings.num_workers,
                                           progress=settings.progress, group=settings.group,
                                           window_batch=settings.window_batch, on_prediction=saver,
                                           batch_size=settings.batch_size, precision=settings.precision,
                                           read_threads=settings.read_threads)
            elapsed = time.perf_counter() - started
            if settings.compile is not None:
                counts = replace(counts, execution={**(counts.execution or {}), "compile": settings.compile})
            _same_version(data, ref.dataset, prepared.manifest_sha256, f"{task.id} evaluated {ref.slug}")
        if not settings.group.is_main:
            continue
        record = record_from_evaluation(
            key=key, task=task, model=model_block(adapter, weights, display_name) | precision_block(settings.precision),
            normalization=adapter.input_contract().record(), role=role, split=split,
            card=prepared.card, manifest_sha256=prepared.manifest_sha256, counts=counts,
            predictions=saver.saved if saver else None, context=run_context(settings), wall_time_s=elapsed)
        records.append(record)
        if store is not None:
            outcome.written.append(str(store.write(record)))
            log.info("%s %s: wrote %s (%.1f s)", task.id, ref.slug, outcome.written[-1], elapsed)
    return outcome, records


def _same_version(data: TaskData, dataset: str, manifest_sha256: str, since: str) -> None:
    """Raise if `dataset` on disk is no longer the version (manifest) that was opened: a split's counts
    must never mix two versions of its data. Checked at the start and the end of every split."""
    now = PreparedDataset.open(data.data_root, dataset).manifest_sha256
    if now != manifest_sha256:
        raise DataError(f"{dataset} was prepared again since {since} (manifest {manifest_sha256[:12]} then "
                        f"{now[:12]}); nothing was written for it", "run again: it will read the new version")


def precision_block(precision: str) -> dict[str, str]:
    """What a record and its resume key say of a precision other than fp32 (nothing for fp32, so records made
    before `--precision` existed keep their keys)."""
    return {} if precision == "fp32" else {"precision": precision}


def display_name_at(display_name: str, precision: str) -> str:
    """A model's name on the board at `precision`: another precision gives other numbers, so its own row."""
    return display_name if precision == "fp32" else f"{display_name} [{precision}]"


def check_precision(adapter: Adapter, precision: str, device: torch.device) -> None:
    """Refuse a precision the adapter does not declare, or fp16 / tf32 off CUDA (CPU autocast is bf16 only;
    TF32 is an NVIDIA GPU's)."""
    if precision not in adapter.precisions:
        raise AdapterError(f"adapter {adapter.name} is not declared for --precision {precision} "
                           f"(it declares {', '.join(sorted(adapter.precisions))})",
                           "run it at --precision fp32, or declare `precisions` in the adapter once its numbers "
                           "are checked at that precision")
    if precision in ("fp16", "tf32") and device.type != "cuda":
        raise AdapterError(f"--precision {precision} needs a CUDA device, not {device}",
                           "use --device cuda, or --precision bf16 on CPU")


def model_block(adapter: Adapter, weights: Weights, display_name: str) -> dict[str, Any]:
    """A record's `model`: the adapter's identity, the name shown, and the weights with their training."""
    return {**adapter.identity(), "display_name": display_name,
            **({"peeks_at_labels": True} if adapter.peeks_at_labels else {}),
            "checkpoint": weights.block(), "training": weights.training}


def run_context(settings: RunSettings) -> RunContext:
    """The provenance of counts this process's model made under `settings`."""
    return RunContext(device=str(settings.device), world_size=settings.group.world_size,
                      torch_version=torch.__version__, limit=settings.limit)


def default_name(adapter: Adapter) -> str:
    return adapter.display_name()


def _results_disk_failed(exc: BaseException, results_root: Path) -> TypeGuard[OSError]:
    """Whether `exc` is a write into the results folder that its disk refused for lack of space or as
    read-only: every later record would fail the same way. A disk error elsewhere (an adapter's own cache)
    fails its task alone, as any adapter error does."""
    if not is_storage_error(exc) or not getattr(exc, "filename", None):
        return False
    return Path(os.path.abspath(exc.filename)).is_relative_to(os.path.abspath(results_root))


def _stopped_by_disk(exc: OSError, task: Task, outcomes: list[TaskOutcome]) -> RsdgError:
    """The error that stops a run at a results disk that refused a record: the file, the space left, the
    fix, and what the tasks before it did (their failures are otherwise only in the log)."""
    error = disk_error(exc, "--results")
    failed = [o.task_id for o in outcomes if o.error]
    done = f"{len(outcomes) - len(failed)} task(s) finished before {task.id}" + (
        f"; {len(failed)} failed before it: {', '.join(failed)} (re-run to see why)" if failed else "")
    return RsdgError(f"{error.problem}; the run stopped there ({done})", error.fix)


def run_tasks(tasks: list[Task], model: ModelSpec, settings: RunSettings) -> list[TaskOutcome]:
    """Run every task; failures are caught, reported and summarised, never fatal to the rest, with one
    exception: a results folder that fills or turns read-only stops the run (`_results_disk_failed`).

    Under torchrun every rank runs this; only rank 0 writes records and the run summary. Freed large buffers
    stay in this process's heap from here on (`allocator`): a run owns its process, a Python caller of
    `rsdg_bench.evaluate` keeps its own allocator settings.
    """
    keep_freed_blocks()
    store = ResultStore(settings.results_root)
    outcomes: list[TaskOutcome] = []
    quiet = not (settings.progress and settings.group.is_main) or len(tasks) < 2
    for task in tqdm(tasks, desc="tasks", unit="task", disable=quiet):
        try:
            outcome = run_task(task, model, settings, store)
        except RsdgError as exc:
            log.info("%s failed: %s", task.id, exc)  # the run's summary reports it
            outcome = TaskOutcome(task.id, error=str(exc))
        except Exception as exc:  # a broken adapter must not stop the suite; keep the trace for the report
            if _results_disk_failed(exc, settings.results_root):
                raise _stopped_by_disk(exc, task, outcomes) from exc
            log.info("%s failed: %s: %s", task.id, type(exc).__name__, exc)
            outcome = TaskOutcome(task.id, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        except SystemExit as exc:  # an adapter that calls sys.exit() while being set up or loaded
            log.info("%s failed: the adapter exited (SystemExit %r)", task.id, exc.code)
            outcome = TaskOutcome(task.id, error=f"the adapter exited (SystemExit {exc.code!r}) instead of raising "
                                                 "an exception; nothing was written for this task")
        outcomes.append(outcome)
    if not settings.group.is_main:
        return outcomes
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    atomic_write_json(Path(settings.results_root) / "runs" / f"{stamp}.json", {
        "model": {"adapter": model.adapter, "options": model.options,
                  "checkpoint": str(model.checkpoint) if model.checkpoint else None},
        "limit": settings.limit, "world_size": settings.group.world_size, "outcomes": [vars(o) for o in outcomes]})
    return outcomes
