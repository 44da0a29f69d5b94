"""Result records → a plain board structure (no HTML here; rendering reads this and nothing else).

Metrics are recomputed from each record's confusion matrix, never read from the record. Records are
left out, with the reason listed on the page, when they are smoke runs (`--limit`), random-init runs,
evaluated on a split whose size is not the published one (a fake or a partial download), or computed
under an older definition of their task (another task hash than the newest version seen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsdg_bench.metrics import GROUP_METRIC_NAMES, METRIC_NAMES
from rsdg_bench.results import ResultRecord, decode_per_image, metrics_block
from rsdg_bench.task_schema import Task, TaskCatalog

from .reported import ReportedRow
from .uncertainty import target_interval, tie_groups


@dataclass
class SplitScores:
    """One model on one evaluated split."""

    role: str
    metrics: dict[str, float]          # miou, oa, aa, mf1 (NaN when undefined)
    per_class_iou: dict[str, float]
    record: str
    matrix: list[list[int]] = field(default_factory=list)
    per_image: np.ndarray | None = None  # N×K×K, when the record stores it (bootstrap intervals)
    predictions: list[dict[str, str]] = field(default_factory=list)  # sample_id + image/label/prediction PNG paths


@dataclass
class TaskTable:
    task_id: str
    name: str
    gap: str
    version: int
    task_hash: str
    primary: str
    class_names: list[str]
    description: str = ""
    headline: list[int] = field(default_factory=list)
    classes: str = ""  # the class schema id (colours for prediction maps)
    suite: str = ""
    splits: list[tuple[str, str]] = field(default_factory=list)        # (role, slug), source first
    scores: dict[str, dict[str, SplitScores]] = field(default_factory=dict)  # model → slug → scores
    reported: list[ReportedRow] = field(default_factory=list)          # the papers' numbers, shown apart
    _intervals: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    def reported_target(self, row: ReportedRow) -> float:
        """A reported headline that stands for this task's target mean: NaN when it was measured on another
        split than the task's targets (e.g. a contest test server)."""
        targets = [slug for role, slug in self.splits if role == "target"]
        return row.headline if row.split is None or row.split in targets else math.nan

    def target_mean(self, model: str) -> float:
        """Mean primary metric over the target splits this model has (NaN if none)."""
        values = [s.metrics[self.primary] for s in self.scores.get(model, {}).values() if s.role == "target"]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def source_score(self, model: str) -> float:
        for score in self.scores.get(model, {}).values():
            if score.role == "source":
                return score.metrics[self.primary]
        return math.nan

    def drop(self, model: str) -> float:
        """Source → mean-target drop of the primary metric (points of the metric, not relative)."""
        return self.source_score(model) - self.target_mean(model)

    def interval(self, model: str) -> tuple[float, float]:
        """95% bootstrap interval of the model's target mean (mIoU primary only; NaN when the records do not
        hold per-image matrices or the primary metric is not mIoU)."""
        if model not in self._intervals:
            targets = [s.per_image for s in self.scores.get(model, {}).values() if s.role == "target"]
            if self.primary != "miou" or not targets or any(t is None for t in targets):
                self._intervals[model] = (math.nan, math.nan)
            else:
                self._intervals[model] = target_interval(targets, self.headline or list(range(len(self.class_names))))
        return self._intervals[model]

    def tie_groups(self) -> dict[str, int]:
        """Models grouped where their target-mean intervals overlap (see `uncertainty.tie_groups`)."""
        return tie_groups({m: (self.target_mean(m), *self.interval(m)) for m in self.scores})


@dataclass
class SuiteView:
    """A suite as the site shows it: its tasks that have results or reported numbers, in suite order."""

    id: str
    name: str
    description: str
    tasks: list[TaskTable]


@dataclass
class Board:
    tasks: list[TaskTable]
    models: list[str]
    excluded: list[tuple[str, str]]
    suites: list[SuiteView] = field(default_factory=list)

    def model_mean(self, model: str, gap: str | None = None) -> float:
        """Mean over tasks of the model's mean target score; with `gap`, over that domain gap's tasks only."""
        values = [t.target_mean(model) for t in self.tasks if model in t.scores and gap in (None, t.gap)]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    @property
    def gaps(self) -> list[str]:
        """The domain gaps of the tasks shown, each with its own aggregate column."""
        return sorted({t.gap for t in self.tasks})


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _model_labels(records: list[ResultRecord]) -> dict[tuple[str, str | None], str]:
    """Display name per (display name, checkpoint sha); the sha is shown only where names collide."""
    names: dict[str, set[str | None]] = {}
    for record in records:
        names.setdefault(record.model["display_name"], set()).add(record.model["checkpoint"]["sha256"])
    labels = {}
    for name, shas in names.items():
        for sha in shas:
            labels[(name, sha)] = name if len(shas) == 1 else f"{name} @{(sha or 'random')[:8]}"
    return labels


def build_board(records: list[tuple[Path, ResultRecord]], refused: list[tuple[str, str]] = ()) -> Board:
    """`refused`: records that failed their own checks (listed as left out, with the reason)."""
    excluded: list[tuple[str, str]] = list(refused)
    kept: list[tuple[Path, ResultRecord]] = []
    for path, record in records:
        if record.model.get("peeks_at_labels"):
            excluded.append((str(path), "upper bound that chooses with the labels (an oracle), not a method"))
        elif record.smoke is not None:
            excluded.append((str(path), f"smoke run (--limit {record.smoke.get('limit')})"))
        elif record.model["checkpoint"]["random_init"]:
            excluded.append((str(path), "random-init weights"))
        elif record.evaluated.partial_data:
            excluded.append((str(path), f"{record.evaluated.slug} had {record.evaluated.num_samples} samples; "
                                        f"the published split has {record.evaluated.published_samples}"))
        else:
            kept.append((path, record))
    newest: dict[str, tuple[int, str, str]] = {}  # task id → (version, date, hash) of its newest record
    for _, record in kept:
        candidate = (record.task["version"], record.provenance["date"], record.task["hash"])
        if record.task["id"] not in newest or candidate[:2] > newest[record.task["id"]][:2]:
            newest[record.task["id"]] = candidate
    labels = _model_labels([r for _, r in kept])
    tables: dict[str, TaskTable] = {}
    models: list[str] = []
    for path, record in sorted(kept, key=lambda pr: (pr[1].task["id"], pr[1].evaluated.role != "source",
                                                      pr[1].evaluated.slug)):
        task = record.task
        if task["hash"] != newest[task["id"]][2]:
            excluded.append((str(path), f"older definition of {task['id']} (hash {task['hash'][:12]})"))
            continue
        table = tables.setdefault(task["id"], TaskTable(
            task_id=task["id"], name=task["name"], gap=task["gap"], version=task["version"],
            task_hash=task["hash"], primary=task["primary"], class_names=record.class_names,
            description=task.get("resolved", {}).get("description", ""), headline=record.headline_classes,
            classes=task.get("classes", "")))
        model = labels[(record.model["display_name"], record.model["checkpoint"]["sha256"])]
        if model not in models:
            models.append(model)
        slug = record.evaluated.slug
        if (record.evaluated.role, slug) not in table.splits:
            table.splits.append((record.evaluated.role, slug))
        groups = record.groups.get(slug)
        block = metrics_block(record.confusion_matrices[slug], record.class_names, record.headline_classes,
                              record.per_image_matrices.get(slug) if groups is not None else None, groups)
        table.scores.setdefault(model, {})[slug] = SplitScores(
            role=record.evaluated.role,
            metrics={k: _nan(block.get(k)) for k in (*METRIC_NAMES, *GROUP_METRIC_NAMES)},
            per_class_iou={name: _nan(values["iou"]) for name, values in block["per_class"].items()},
            record=str(path), matrix=record.confusion_matrices[slug],
            per_image=(decode_per_image(record.per_image_matrices[slug])  # only the mIoU bootstrap reads them
                       if slug in record.per_image_matrices and task["primary"] == "miou" else None),
            predictions=[{k: v if k == "sample_id" else str(Path(path).parent / v) for k, v in entry.items()}
                         for entry in record.predictions.get(slug, [])],
        )
        table.suite = task.get("suite", "")
    return Board(tasks=[tables[t] for t in sorted(tables)], models=models, excluded=excluded)


def _table_of(task: Task) -> TaskTable:
    """An empty table for a catalog task (one that has reported numbers but no results yet)."""
    return TaskTable(task_id=task.id, name=task.name, gap=task.gap, version=task.version, task_hash=task.hash,
                     primary=task.metrics.primary, class_names=list(task.class_schema.names),
                     headline=task.headline_class_indices(), classes=task.classes,
                     description=task.description, suite=task.suite,
                     splits=[("target", ref.slug) for ref in task.targets])


def with_suites(board: Board, catalog: TaskCatalog, reported: list[ReportedRow] = ()) -> Board:
    """Attach the papers' reported rows to their tasks (adding catalog tasks that have only those) and
    group the tasks by suite, in each suite's own order; tasks of unknown suites form their own group."""
    tables = {t.task_id: t for t in board.tasks}
    for row in reported:
        if row.task not in tables:
            if row.task not in catalog.tasks:
                continue
            tables[row.task] = _table_of(catalog.tasks[row.task])
        tables[row.task].reported.append(row)
    suites = []
    placed: set[str] = set()
    for suite_id, suite in sorted(catalog.suites.items()):
        members = [tables[t] for t in suite.tasks if t in tables]
        placed.update(t.task_id for t in members)
        if members:
            suites.append(SuiteView(suite_id, suite.name, suite.description, members))
    for suite_id in sorted({t.suite for t in tables.values() if t.task_id not in placed}):
        members = [t for t in sorted(tables.values(), key=lambda t: t.task_id)
                   if t.task_id not in placed and t.suite == suite_id]
        suites.append(SuiteView(suite_id or "other", suite_id or "other tasks", "", members))
    return Board(tasks=[tables[t] for t in sorted(tables)], models=board.models, excluded=board.excluded,
                 suites=suites)
