"""Result records → a plain board structure (no HTML here; rendering reads this and nothing else).

Metrics are recomputed from each record's confusion matrix, never read from the record. Records are
left out, with the reason listed on the page, when they are smoke runs (`--limit`), random-init runs,
evaluated on a split whose size is not the published one (a fake or a partial download), or computed
under an older definition of their task (another task hash than the newest version seen).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rsdg_bench.protocol.task_schema import Task, TaskCatalog
from rsdg_bench.records.results import ResultRecord, metrics_block
from rsdg_bench.records.training_record import badge
from rsdg_bench.scoring.metrics import GROUP_METRIC_NAMES, METRIC_NAMES, scores_from_confusion, uniform_chance_matrix

from .reported import ReportedRow
from .uncertainty import SplitEvidence, metric_replicates, normalized_score, paired_difference, paired_tie_groups
from .uncertainty import interval as percentile_interval

log = logging.getLogger(__name__)


@dataclass
class SplitScores:
    """One model on one evaluated split."""

    role: str
    metrics: dict[str, float]          # miou, oa, aa, mf1 (NaN when undefined)
    per_class_iou: dict[str, float]
    record: str
    matrix: list[list[int]] = field(default_factory=list)
    # A target's bootstrap replicates of the task's primary metric and (scenes, what a scene is), when the
    # record stores per-image matrices: all the board keeps of them, so no record is held whole (`build_board`)
    replicates: np.ndarray | None = field(default=None, repr=False)
    resampling: tuple[int, str] | None = None
    other_conventions: dict[str, dict[str, float]] = field(default_factory=dict)  # convention → headline metrics
    training: dict | None = None  # the record's `model.training` (how its weights were trained vs the protocol)
    checkpoint: str | None = None  # the record's checkpoint path (its training history lies beside it)
    predictions: list[dict[str, str]] = field(default_factory=list)  # sample_id + image/label/prediction PNG paths
    verified: tuple[str, str] | None = None  # (badge, explanation) of a verified submission's record


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
    convention: str = "mmseg"  # the metric convention of the task's paper (`metrics.convention`)
    adapters: dict[str, str] = field(default_factory=dict)  # model → the adapter that made its records
    options: dict[str, dict] = field(default_factory=dict)  # model → its adapter's options (joins compute profiles)
    # Where the task's protocol knowingly differs from its paper's, and what the paper leaves open (the records'
    # task definition's `reference.differences` / `.unverified`): listed on the task's page, marked beside rows
    paper_differences: list[str] = field(default_factory=list)
    training_differences: list[str] = field(default_factory=list)  # only rows whose weights the harness trained
    unverified: list[str] = field(default_factory=list)
    seeds: dict[str, tuple[str, int]] = field(default_factory=dict)  # label of a seed run → (model name, seed)

    def seed_spread(self) -> dict[str, list[float]]:
        """Per model trained under several seeds (`train --seed`), the mean target score of each seed run
        here, in seed order: a model's spread over its training, which the bootstrap (test scenes) does not
        cover."""
        runs: dict[str, list[tuple[int, float]]] = {}
        for label, (name, seed) in self.seeds.items():
            if label in self.scores and not math.isnan(self.target_mean(label)):
                runs.setdefault(name, []).append((seed, self.target_mean(label)))
        return {name: [score for _, score in sorted(values)] for name, values in runs.items() if len(values) > 1}

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

    def retained(self, model: str) -> float:
        """The share of its source score a model keeps on the unseen targets (mean target / source; NaN without
        a source score). Shown beside the target score, never ranked on its own: a model that is equally bad
        everywhere keeps all of its (small) score, as a small drop would reward it."""
        source = self.source_score(model)
        return self.target_mean(model) / source if source > 0 else math.nan

    def replicates(self, model: str) -> np.ndarray | None:
        """Bootstrap replicates of the model's target mean (see `uncertainty`): None when a target's record
        holds no per-image matrices or the primary metric is a per-place accuracy."""
        targets = [s.replicates for s in self.scores.get(model, {}).values() if s.role == "target"]
        present = [r for r in targets if r is not None]
        if self.primary not in METRIC_NAMES or not targets or len(present) != len(targets):
            return None
        return np.mean(present, axis=0)

    def interval(self, model: str) -> tuple[float, float]:
        """95% scene-bootstrap interval of the model's target mean (NaN without per-image matrices)."""
        return percentile_interval(self.replicates(model))

    def leader(self) -> str | None:
        """The model with the best target mean (None when no model has one)."""
        ranked = [m for m in self.scores if not math.isnan(self.target_mean(m))]
        return max(ranked, key=self.target_mean) if ranked else None

    def differences_to_leader(self) -> dict[str, tuple[float, float]]:
        """Per model, the paired 95% interval of (leader − model) on the same resampled scenes; (0, 0) for the
        leader. The leader is found once for all models (once per model made a board quadratic in models)."""
        leader = self.leader()
        if leader is None:
            return {model: (math.nan, math.nan) for model in self.scores}
        best = self.replicates(leader)
        return {model: paired_difference(best, self.replicates(model)) for model in self.scores}

    def tie_groups(self) -> dict[str, int]:
        """Models grouped until a paired difference excludes 0 (see `uncertainty.paired_tie_groups`)."""
        return paired_tie_groups({m: self.target_mean(m) for m in self.scores},
                                 {m: self.replicates(m) for m in self.scores})

    def chance_mean(self, model: str) -> float:
        """The mean over this model's targets of the primary metric chance scores on the same labels (each class
        predicted with probability 1/K: `metrics.uniform_chance_matrix`), under the task's headline classes and
        convention; NaN for a per-place accuracy or where no target keeps its matrix."""
        if self.primary not in METRIC_NAMES:
            return math.nan
        values = [getattr(scores_from_confusion(uniform_chance_matrix(s.matrix), self.headline or None,
                                                self.convention), self.primary)
                  for s in self.scores.get(model, {}).values() if s.role == "target" and s.matrix]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def normalized_target(self, model: str) -> float:
        """The target mean from chance (0) to perfect (1) (`uncertainty.normalized_score`), chance being
        `chance_mean`: what the suite's IQM pools across tasks."""
        return float(normalized_score(self.target_mean(model), self.chance_mean(model)))

    def normalized_replicates(self, model: str) -> np.ndarray | None:
        """`replicates` on the normalized scale. The anchors stay those of the whole test set: the interval
        covers the resampling of the score, not of its chance level."""
        replicates = self.replicates(model)
        return None if replicates is None else normalized_score(replicates, self.chance_mean(model))

    def at_chance(self, model: str) -> tuple[str, str] | None:
        """A badge for a model whose mean target score is not above chance on the same labels, else None."""
        target, chance = self.target_mean(model), self.chance_mean(model)
        if math.isnan(target) or math.isnan(chance) or target > chance:
            return None
        return ("at chance level", f"its mean target {self.primary} ({100 * target:.1f}) is not above what "
                                   f"predicting each class at random gives on the same labels ({100 * chance:.1f})")

    def badges(self, model: str) -> list[tuple[str, str]]:
        """(text, explanation) of every badge the model's rows here carry: training (off-protocol, unknown),
        verification, chance level, and the task's known differences from its paper (those of its training only
        where the harness trained the weights: released weights were trained by their authors)."""
        found = {badge(s.training) for s in self.scores.get(model, {}).values()}
        found |= {s.verified for s in self.scores.get(model, {}).values()}
        found.add(self.at_chance(model))
        trained_here = any((s.training or {}).get("status") in ("protocol", "off-protocol")
                           for s in self.scores.get(model, {}).values())
        differences = [*self.paper_differences, *(self.training_differences if trained_here else [])]
        if differences:
            found.add(("differs from paper", " ".join(differences)))
        if self.unverified:
            found.add(("UNVERIFIED protocol", " ".join(self.unverified)))
        return sorted(b for b in found if b is not None)

    def resampling_units(self) -> list[tuple[str, int, str]]:
        """(target slug, number of scenes, what a scene is) of each target, as the bootstrap saw them."""
        units: dict[str, tuple[int, str]] = {}
        for splits in self.scores.values():
            for slug, score in splits.items():
                if score.role == "target" and score.resampling is not None:
                    units.setdefault(slug, score.resampling)
        return [(slug, count, unit) for slug, (count, unit) in sorted(units.items())]


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

    @property
    def gaps(self) -> list[str]:
        """The domain gaps of the tasks shown, each with its own aggregate column."""
        return sorted({t.gap for t in self.tasks})


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _model_labels(records: list[ResultRecord]) -> tuple[dict[tuple[str, str | None], str], dict[str, tuple[str, int]]]:
    """Display name per (display name, checkpoint sha), and (display name, seed) per label of a seed run.

    Names collide only within a task: a model trained once per task (each source gives its own checkpoint) is one
    row under its name. Where one task holds several checkpoints of a name, and on every task those carry distinct
    seeds (`train --seed`/`--seeds`), each is labelled by its seed, the same seed across tasks making one row;
    otherwise by as many of its sha's digits (8 or more) as make every label distinct: two models are never merged
    into one row by a shared prefix."""
    per_task: dict[str, dict[str, dict[str | None, int | None]]] = {}  # name → task id → sha → seed
    for record in records:
        training = record.model.training or {}
        seed = training.get("seed") if training.get("status") in ("protocol", "off-protocol") else None
        name = _task_facts(record).display_name
        per_task.setdefault(name, {}).setdefault(record.task.id, {})[record.model.checkpoint["sha256"]] = \
            seed if isinstance(seed, int) else None
    labels: dict[tuple[str, str | None], str] = {}
    seeds: dict[str, tuple[str, int]] = {}
    for name, tasks in per_task.items():
        by_sha = {sha: seed for shas in tasks.values() for sha, seed in shas.items()}
        if all(len(shas) == 1 for shas in tasks.values()):
            labels.update({(name, sha): name for sha in by_sha})
            continue
        seeded = all(None not in shas.values() and len(set(shas.values())) == len(shas) for shas in tasks.values())
        shown = [sha or "random" for sha in by_sha]
        digits = next(n for n in range(8, 65) if len({sha[:n] for sha in shown}) == len(shown))  # never merge two
        for sha, seed in by_sha.items():
            if seeded and seed is not None:
                labels[(name, sha)] = f"{name} · seed {seed}"
                seeds[labels[(name, sha)]] = (name, seed)
            else:
                labels[(name, sha)] = f"{name} @{(sha or 'random')[:digits]}"
    return labels, seeds


def _one_data_version_per_split(records: list[tuple[Path | str, ResultRecord]]
                                ) -> tuple[list[tuple[Path | str, ResultRecord]], list[tuple[str, str]]]:
    """Keep, per task and evaluated split, only records made on the newest data version (the manifest sha256
    of the split's most recent record), and per model (display name and weights) only its most recent
    record there: a row never mixes data versions, and which record counts does not depend on file names."""
    def when(pr: tuple[Path | str, ResultRecord]) -> tuple[str, str]:
        return pr[1].provenance.date or "", str(pr[0])

    current: dict[tuple[str, str], str | None] = {}
    chosen: dict[tuple[str, str, str | None, str | None], tuple[Path | str, ResultRecord]] = {}
    left_out: list[tuple[str, str]] = []
    for path, record in sorted(records, key=when, reverse=True):
        split = (record.task.id, record.evaluated.slug)
        manifest = record.provenance.dataset_manifest_sha256
        current.setdefault(split, manifest)
        if manifest != current[split]:
            left_out.append((str(path), f"made on another version of {record.evaluated.slug} (data manifest "
                                        f"{(manifest or 'unknown')[:12]}; the newest records use "
                                        f"{(current[split] or 'unknown')[:12]}): re-run it on the current data"))
            continue
        model = (*split, record.model.display_name, record.model.checkpoint.get("sha256"))
        if model in chosen:
            left_out.append((str(path), f"superseded by a newer record of the same model on {record.evaluated.slug} "
                                        f"({Path(str(chosen[model][0])).name})"))  # a bundle's record is named by a str
            continue
        chosen[model] = (path, record)
    keep = {id(record) for _, record in chosen.values()}
    return [pr for pr in records if id(pr[1]) in keep], left_out


def build_board(records: Iterable[tuple[Path | str, ResultRecord]], refused: Iterable[tuple[str, str]] = (),
                only_protocol: bool = False, verified: dict[str, tuple[str, str]] | None = None) -> Board:
    """`records` may be a stream: each record is scored as it comes (metrics, and a target's bootstrap
    replicates) and only what the board shows is kept of it, so memory grows with the number of rows, not
    with the records' per-image matrices. `refused`: records that failed their own checks (listed as left
    out, with the reason; read once the records are consumed, so a loader can fill it as it streams). With
    `only_protocol`, records whose weights were not trained by the task's full protocol (off-protocol or
    unknown training) are left out too; otherwise they are shown with a badge. `verified`: record path →
    the badge of the verified submission it came from."""
    filtered: list[tuple[str, str]] = []
    kept: list[tuple[Path | str, ResultRecord]] = []
    scored: dict[int, SplitScores] = {}  # id(kept record) → its split's scores
    for path, record in records:
        why = _left_out(record, only_protocol)
        if why is not None:
            filtered.append((str(path), why))
            continue
        light = _without_per_image(record)
        scored[id(light)] = _split_scores(path, record, verified)
        kept.append((path, light))
    excluded = [*refused, *filtered]
    kept, superseded = _one_data_version_per_split(kept)
    excluded += superseded
    newest: dict[str, tuple[int, str, str]] = {}  # task id → (version, date, hash) of its newest record
    for _, record in kept:
        facts = _task_facts(record)
        candidate = (facts.version, record.provenance.date or "", facts.hash)
        if record.task.id not in newest or candidate[:2] > newest[record.task.id][:2]:
            newest[record.task.id] = candidate
    labels, seeds = _model_labels([r for _, r in kept])
    tables: dict[str, TaskTable] = {}
    models: list[str] = []
    for path, record in sorted(kept, key=lambda pr: (pr[1].task.id, pr[1].evaluated.role != "source",
                                                      pr[1].evaluated.slug)):
        task, facts = record.task, _task_facts(record)
        if facts.hash != newest[task.id][2]:
            excluded.append((str(path), f"older definition of {task.id} (hash {facts.hash[:12]})"))
            continue
        table = tables.setdefault(task.id, TaskTable(
            task_id=task.id, name=facts.name, gap=facts.gap, version=facts.version,
            task_hash=facts.hash, primary=facts.primary, class_names=record.class_names,
            description=task.resolved.get("description", ""), headline=record.headline_classes,
            classes=task.classes or "", paper_differences=_reference_list(task.resolved, "differences"),
            training_differences=_reference_list(task.resolved, "training_differences"),
            unverified=_reference_list(task.resolved, "unverified"), seeds=seeds))
        model = labels[(facts.display_name, record.model.checkpoint["sha256"])]
        if model not in models:
            models.append(model)
        slug = record.evaluated.slug
        if (record.evaluated.role, slug) not in table.splits:
            table.splits.append((record.evaluated.role, slug))
        table.convention = record.convention
        table.adapters[model] = record.model.get("adapter") or ""
        options = record.model.get("options")
        table.options[model] = options if isinstance(options, dict) else {}
        table.scores.setdefault(model, {})[slug] = scored[id(record)]
        table.suite = task.suite or ""
    for where, why in excluded:
        log.info("left out %s: %s", where, why)
    return Board(tasks=[tables[t] for t in sorted(tables)], models=models, excluded=excluded)


def _reference_list(resolved: dict, key: str) -> list[str]:
    """The `reference.<key>` sentences of a record's resolved task (none when it names no paper or none)."""
    reference = resolved.get("reference")
    sentences = reference.get(key) if isinstance(reference, dict) else None
    return [str(text) for text in sentences] if isinstance(sentences, list) else []


class _TaskFacts(NamedTuple):
    """What a board row needs of a record's task and model blocks, which the record schema leaves optional."""

    name: str
    gap: str
    version: int
    hash: str
    primary: str
    display_name: str


def _missing_facts(record: ResultRecord) -> list[str]:
    return [f"{block}.{name}" for block, name in (("task", "name"), ("task", "gap"), ("task", "version"),
                                                  ("task", "hash"), ("task", "primary"), ("model", "display_name"))
            if getattr(getattr(record, block), name) is None]


def _task_facts(record: ResultRecord) -> _TaskFacts:
    """The record's facts, for a record `_left_out` let through (it leaves out those that lack one)."""
    task, name = record.task, record.model.display_name
    if task.name is None or task.gap is None or task.version is None or task.hash is None or task.primary is None \
            or name is None:
        raise ValueError(f"record of {task.id} lacks {', '.join(_missing_facts(record))}")
    return _TaskFacts(task.name, task.gap, task.version, task.hash, task.primary, name)


def _left_out(record: ResultRecord, only_protocol: bool) -> str | None:
    """Why a record is not a row of any board (it lacks the task or model facts a row shows; smoke,
    random-init, partial data, an oracle; off-protocol weights with `only_protocol`), or None."""
    missing = _missing_facts(record)
    if missing:
        return (f"its record lacks {', '.join(missing)}: not made by this harness's record constructor "
                "(re-run the task to make a complete one)")
    training_badge = badge(record.model.training)
    if only_protocol and training_badge is not None and not record.model.checkpoint["random_init"]:
        return f"{training_badge[0]}: {training_badge[1]}"
    if record.model.peeks_at_labels:
        return "upper bound that chooses with the labels (an oracle), not a method"
    if record.smoke is not None:
        return f"smoke run (--limit {record.smoke.get('limit')})"
    if record.model.checkpoint["random_init"]:
        return "random-init weights"
    if record.evaluated.partial_data:
        return (f"{record.evaluated.slug} had {record.evaluated.num_samples} samples; the published split has "
                f"{record.evaluated.published_samples}")
    return None


def _without_per_image(record: ResultRecord) -> ResultRecord:
    """A shallow copy of the record without what only scoring reads (per-image matrices, sample ids and
    scenes, the confusion matrices and predictions, now in its `SplitScores`): what choosing between
    records needs, at a few kilobytes each. The caller's record is left whole."""
    return record.model_copy(update={"per_image_matrices": {}, "samples": {}, "confusion_matrices": {},
                                     "predictions": {}, "ignored_predictions": {}})


def _split_scores(path: Path | str, record: ResultRecord, verified: dict[str, tuple[str, str]] | None) -> SplitScores:
    """The record's split as the board shows it: metrics recomputed from its confusion matrix, and for a
    target split the bootstrap replicates of the task's primary metric (see `uncertainty`)."""
    slug = record.evaluated.slug
    groups = record.groups.get(slug)
    block = metrics_block(record.confusion_matrices[slug], record.class_names, record.headline_classes,
                          record.per_image_matrices.get(slug) if groups is not None else None, groups,
                          record.convention, record.ignored_predictions.get(slug))
    evidence = _evidence(record, slug) if record.evaluated.role == "target" else None
    replicates = None
    if evidence is not None and record.task.primary in METRIC_NAMES:
        headline = record.headline_classes or list(range(len(record.class_names)))
        replicates = metric_replicates(slug, evidence, record.task.primary, headline, record.convention)
    return SplitScores(
        role=record.evaluated.role,
        metrics={k: _nan(block.get(k)) for k in (*METRIC_NAMES, *GROUP_METRIC_NAMES)},
        per_class_iou={name: _nan(values["iou"]) for name, values in block["per_class"].items()},
        record=str(path), matrix=record.confusion_matrices[slug], replicates=replicates,
        resampling=(evidence.num_scenes, evidence.scene_unit) if evidence is not None else None,
        training=record.model.training, checkpoint=record.model.checkpoint.get("path"),
        other_conventions={name: {k: _nan(v) for k, v in values.items()}
                           for name, values in block["other_conventions"].items()},
        predictions=[{k: v if k == "sample_id" else str(Path(path).parent / v) for k, v in entry.items()}
                     for entry in record.predictions.get(slug, [])],
        verified=(verified or {}).get(str(path)) or _scored_from_maps(record),
    )


def _scored_from_maps(record: ResultRecord) -> tuple[str, str] | None:
    """The badge of a record scored from submitted prediction maps (`rsdg-bench score`), else None."""
    if record.model.get("scored_from") is None:
        return None
    return ("scored from maps", "the model's prediction maps were scored here against the prepared labels; the "
                                "model itself was not run here")


def _evidence(record: ResultRecord, slug: str) -> SplitEvidence | None:
    """The bootstrap's view of a record's split. Records made before scenes were kept resample images, and
    say so in their unit."""
    per_image = record.per_image_matrices.get(slug)
    if per_image is None:
        return None
    samples = record.samples.get(slug)
    if samples is None:
        return SplitEvidence(per_image, [str(i) for i in range(per_image["images"])],
                             "image (the record keeps no scenes)")
    return SplitEvidence(per_image, samples.scenes, samples.scene_unit)


def _table_of(task: Task) -> TaskTable:
    """An empty table for a catalog task (one that has reported numbers but no results yet)."""
    return TaskTable(task_id=task.id, name=task.name, gap=task.gap, version=task.version, task_hash=task.hash,
                     primary=task.metrics.primary, class_names=list(task.class_schema.names),
                     headline=task.headline_class_indices(), classes=task.classes,
                     description=task.description, suite=task.suite, convention=task.metrics.convention,
                     splits=[("target", ref.slug) for ref in task.targets])


def with_suites(board: Board, catalog: TaskCatalog, reported: Sequence[ReportedRow] = ()) -> Board:
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
