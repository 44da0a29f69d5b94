"""Running tasks: build the adapter, load its checkpoint, evaluate every split, write one record each.

A suite run goes task by task. A record whose resume key already exists is skipped (unless `force`);
a task that fails is reported with its error and the run goes on with the next one. Each run also
leaves a summary in `<results>/runs/<timestamp>.json`.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .adapters import Adapter
from .data import TaskData
from .distributed import ProcessGroup
from .errors import AdapterError, RsdgError, TaskError
from .evaluation import evaluate_split_counts
from .io import atomic_write_json, sha256_file
from .predictions import PredictionSaver
from .registry import resolve_adapter
from .results import (SCHEMA_VERSION, EvaluatedSplit, ResultRecord, ResultStore, SampleIndex, encode_per_image,
                      metrics_block, provenance, resume_key)
from .task_schema import Task
from .training_record import read_training_block, training_provenance

log = logging.getLogger(__name__)


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

    def instantiate(self) -> Adapter:
        return resolve_adapter(self.adapter)(**self.options)


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
    save_predictions: int = 0  # keep image / ground truth / prediction PNGs of the first K samples per split


@dataclass
class TaskOutcome:
    task_id: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None


def checkpoint_path_for(model: ModelSpec, task: Task, results_root: Path, adapter: Adapter) -> Path | None:
    """The checkpoint file a task uses, or None for an explicit random-init run."""
    if model.random_init:
        return None
    if model.checkpoint is not None:
        if not model.checkpoint.is_file():
            raise AdapterError(f"checkpoint {model.checkpoint} not found", "check the --checkpoint path")
        return model.checkpoint
    folder = model.checkpoint_dir or default_checkpoint_dir(results_root, adapter.name)
    names = adapter.checkpoint_names(task)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise AdapterError(f"no checkpoint for task {task.id} in {folder} (looked for {', '.join(names)})",
                       f"train one with `rsdg-bench train --task {task.id} --model {model.adapter}`, "
                       "or pass --checkpoint FILE / --checkpoints DIR")


def default_checkpoint_dir(results_root: Path, adapter_name: str) -> Path:
    return Path(results_root) / "checkpoints" / adapter_name


def build_for_task(model: ModelSpec, task: Task, data: TaskData) -> Adapter:
    """An adapter set up for the task's classes and its source domain's bands."""
    adapter = model.instantiate()
    source_bands = data.band_names(task.source)
    adapter.setup(task, source_bands)
    return adapter


# Kinds the evaluator scores (`evaluation.sample_scorer`). A change-detection sample is the bi-temporal pair
# stacked as bands (`t1_*`, `t2_*`), scored like segmentation with the change class as the headline.
EVALUATED_KINDS = ("segmentation", "change_detection", "temporal_segmentation", "classification")
# Kinds whose predictions `--save-predictions` can paint (one 2-D map per sample).
_PAINTABLE_KINDS = ("segmentation", "change_detection")


def require_kind(task: Task, adapter: Adapter | type[Adapter] | None = None) -> None:
    """Refuse a task kind this version cannot score, and a task the adapter (instance or class) does not
    declare it can do."""
    if task.kind not in EVALUATED_KINDS:
        raise TaskError(f"task {task.id} is of kind {task.kind!r}, which this version cannot evaluate yet",
                        f"the kinds that run now are {', '.join(EVALUATED_KINDS)}")
    if adapter is not None and task.kind not in adapter.kinds:
        raise AdapterError(f"adapter {adapter.name!r} does not do {task.kind} (it declares {', '.join(sorted(adapter.kinds))})",
                           "pick an adapter that declares this kind (`kinds` in its class), e.g. smp for change detection")


def run_task(task: Task, model: ModelSpec, settings: RunSettings, store: ResultStore) -> TaskOutcome:
    require_kind(task, resolve_adapter(model.adapter))  # before any data is opened
    outcome = TaskOutcome(task.id)
    data = TaskData(settings.data_root, task, phase="evaluate")
    adapter = build_for_task(model, task, data)
    checkpoint = checkpoint_path_for(model, task, settings.results_root, adapter)
    checkpoint_sha = sha256_file(checkpoint) if checkpoint is not None else None
    log.info("%s: adapter %s, checkpoint %s", task.id, adapter.name, checkpoint or "none (random init)")
    if model.backbone_checkpoint is not None:
        adapter.use_backbone_checkpoint(model.backbone_checkpoint)
    if checkpoint is not None:
        adapter.load(checkpoint)
    adapter.to(settings.device)
    contract = adapter.input_contract()
    source_card = data.prepared(task.source.dataset).card
    training = ({"status": "random-init"} if checkpoint is None else
                training_provenance(task, read_training_block(checkpoint),
                                    source_card.split_counts.get(task.source.domain, {}).get(task.source.split, 0)))
    class_names = task.class_schema.names
    headline = task.headline_class_indices()
    for role, ref in task.evaluation_splits():
        prepared = data.prepared(ref.dataset)
        key = resume_key(task_hash=task.hash, adapter_identity=adapter.identity(), checkpoint_sha256=checkpoint_sha,
                         inference=task.inference.model_dump(mode="json"), manifest_sha256=prepared.manifest_sha256,
                         split_slug=ref.slug, role=role, limit=settings.limit)
        if settings.group.any(store.exists(task.id, key) and not settings.force):
            log.info("%s %s: record %s exists (same task, adapter code and options, checkpoint, data): skipped",
                     task.id, ref.slug, key)
            outcome.skipped.append(str(store.path_for(task.id, key)))
            continue
        log.info("%s %s: evaluating (%s)", task.id, ref.slug, "forced" if settings.force else "no record yet")
        split = data.open(ref, limit=settings.limit)
        started = time.perf_counter()
        saver = (PredictionSaver(settings.results_root, task.id, key, task.class_schema, settings.save_predictions,
                                 store.path_for(task.id, key).parent)
                 if settings.save_predictions and task.kind in _PAINTABLE_KINDS else None)
        counts = evaluate_split_counts(adapter, split, task, settings.device, settings.num_workers,
                                       settings.progress, settings.group, settings.window_batch, saver)
        elapsed = time.perf_counter() - started
        if not settings.group.is_main:
            continue
        matrix_list = counts.per_image.sum(0).tolist()
        counts_ignored = task.metrics.ignored_pixels == "error"
        ignored = counts.ignored.sum(0).tolist() if counts_ignored else None
        encoded = encode_per_image(counts.per_image, counts.ignored if counts_ignored else None)
        groups = split.groups(task.metrics.groups) if task.kind == "classification" else None
        scenes, scene_unit = split.scenes()
        record = ResultRecord(
            schema_version=SCHEMA_VERSION, key=key,
            task={"id": task.id, "name": task.name, "version": task.version, "hash": task.hash, "suite": task.suite,
                  "gap": task.gap, "kind": task.kind, "classes": task.classes, "class_names": class_names,
                  "headline_classes": headline, "primary": task.metrics.primary,
                  "resolved": task.model_dump(mode="json")},
            model={**adapter.identity(), "display_name": model.display_name or _default_name(adapter),
                   **({"peeks_at_labels": True} if adapter.peeks_at_labels else {}),
                   "checkpoint": {"path": str(checkpoint) if checkpoint else None, "sha256": checkpoint_sha,
                                  "random_init": checkpoint is None},
                   "training": training},
            evaluated=EvaluatedSplit(role=role, dataset=ref.dataset, domain=ref.domain, split=ref.split,
                                     num_samples=len(split),
                                     published_samples=prepared.card.published_counts.get(ref.domain, {}).get(ref.split),
                                     accepted_samples=prepared.card.accepted_counts(ref.domain, ref.split)[1:]),
            metrics={ref.slug: metrics_block(matrix_list, class_names, headline, encoded, groups,
                                             task.metrics.convention, ignored)},
            confusion_matrices={ref.slug: matrix_list}, per_image_matrices={ref.slug: encoded},
            groups={ref.slug: groups} if groups is not None else {},
            samples={ref.slug: SampleIndex(ids=[str(i) for i in split.rows["sample_id"]], scenes=scenes,
                                           scene_unit=scene_unit)},
            ignored_predictions={ref.slug: ignored} if ignored is not None else {},
            predictions={ref.slug: saver.saved} if saver else {},
            inference=task.inference.model_dump(mode="json"),
            normalization=contract.record(),
            smoke={"limit": settings.limit} if settings.limit is not None else None,
            provenance=provenance(task_hash=task.hash, manifest_sha256=prepared.manifest_sha256,
                                  checkpoint_sha256=checkpoint_sha, device=settings.device,
                                  world_size=settings.group.world_size, wall_time_s=elapsed,
                                  date=datetime.now(UTC).isoformat(timespec="seconds")),
        )
        outcome.written.append(str(store.write(record)))
        log.info("%s %s: wrote %s (%.1f s)", task.id, ref.slug, outcome.written[-1], elapsed)
    return outcome


def _default_name(adapter: Adapter) -> str:
    details = "-".join(str(v) for _, v in sorted(adapter.options.items()) if v)
    return f"{adapter.name}({details})" if details else adapter.name


def run_tasks(tasks: list[Task], model: ModelSpec, settings: RunSettings) -> list[TaskOutcome]:
    """Run every task; failures are caught, reported and summarised, never fatal to the rest.

    Under torchrun every rank runs this; only rank 0 writes records and the run summary.
    """
    store = ResultStore(settings.results_root)
    outcomes = []
    quiet = not (settings.progress and settings.group.is_main) or len(tasks) < 2
    for task in tqdm(tasks, desc="tasks", unit="task", disable=quiet):
        try:
            outcome = run_task(task, model, settings, store)
        except RsdgError as exc:
            log.info("%s failed: %s", task.id, exc)  # the run's summary reports it
            outcome = TaskOutcome(task.id, error=str(exc))
        except Exception as exc:  # a broken adapter must not stop the suite; keep the trace for the report
            log.info("%s failed: %s: %s", task.id, type(exc).__name__, exc)
            outcome = TaskOutcome(task.id, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        outcomes.append(outcome)
    if not settings.group.is_main:
        return outcomes
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    atomic_write_json(Path(settings.results_root) / "runs" / f"{stamp}.json", {
        "model": {"adapter": model.adapter, "options": model.options,
                  "checkpoint": str(model.checkpoint) if model.checkpoint else None},
        "limit": settings.limit, "world_size": settings.group.world_size, "outcomes": [vars(o) for o in outcomes]})
    return outcomes
