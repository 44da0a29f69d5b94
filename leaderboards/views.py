"""Board → the tables the site shows (as `tables.Table`), with ranks and per-gap means; no HTML here.

Suite table: the headline columns first (Mean, Avg. rank, task count, the mean's interval), then the means
of other metric kinds, of in-domain settings and per gap, then one column per task grouped by domain gap (as
CrossEarth's Table 1 / Fig. 2 group them). A row is a model whose records the harness produced, or a method
the papers report (flagged, never merged with ours). The Mean and the ranks are over the suite's
cross-domain tasks of its most common metric, and only for rows that have all of them (1 = best, ties
share the better rank); rows missing tasks follow, muted, with their count (docs/statistics.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Literal

import numpy as np

from rsdg_bench.protocol.metric_table import HEADLINE_NAMES, METRICS

from .aggregate import Board, SplitScores, SuiteView, TaskTable
from .cards import ModelCard, load_cards
from .reported import ReportedRow
from .tables import Column, Row, Table, table_of
from .uncertainty import interquartile_mean
from .uncertainty import interval as percentile_interval

CASID_ZONES = ("sub", "tem", "tms", "trf")
METRIC_COLUMNS = HEADLINE_NAMES  # the metric table's headlines, in its order, under its labels
METRIC_LABELS = {metric.name: metric.label for metric in METRICS}


def slugify(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-")


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _ranks(values: list[float]) -> list[float]:
    """1 = highest; NaN stays NaN; ties share the better rank."""
    present = sorted((v for v in values if not math.isnan(v)), reverse=True)
    return [math.nan if math.isnan(v) else float(present.index(v) + 1) for v in values]


@dataclass
class _ReportedSuiteRow:
    """One reported method's row of a suite table, gathered over the suite's tasks."""

    method: str
    sources: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)  # task id → reported target value
    spread: dict[str, float] = field(default_factory=dict)  # task id → the paper's ± (runs), where printed
    flags: list[str] = field(default_factory=list)
    decimals: int = 2


def _reported_by_label(tasks: list[TaskTable]) -> dict[str, _ReportedSuiteRow]:
    """label → the reported row over the tasks, for rows that stand for a target (one method's row may gather
    several of a paper's tables)."""
    rows: dict[str, _ReportedSuiteRow] = {}
    for task in tasks:
        for reported in task.reported:
            value = task.reported_target(reported)
            if not math.isnan(value):
                row = rows.setdefault(reported.label, _ReportedSuiteRow(reported.method, decimals=reported.decimals))
                row.values[task.task_id] = value
                row.spread[task.task_id] = reported.headline_std
                row.decimals = min(row.decimals, reported.decimals)
                row.sources.extend(s for s in reported.source.split("; ") if s not in row.sources)
                if reported.flag:
                    row.flags.append(f"{task.name}: {reported.flag}")
    return rows


@dataclass(frozen=True)
class SiteOptions:
    """How the tables are ranked and compared, as `leaderboard build` was asked (`--baseline`, `--rank-shared`)."""

    baseline: str | None = None  # a row's label: every row's gain over it is shown (papers' "+x over Rein")
    rank_shared: bool = False    # also rank every row on the tasks it has (rows missing tasks included)


def _adapter_of(model: str, tasks: list[TaskTable]) -> str | None:
    """The adapter that made a model's records (a model's records all come from one adapter)."""
    return next((t.adapters[model] for t in tasks if model in t.adapters), None)


def card_fields(card: ModelCard | None) -> dict:
    return {} if card is None else {"category": card.category, "params": card.params and f"{card.params} parameters",
                                    "about": card.summary, "links": card.links}


# Settings judged on the domain the model was trained on: shown, averaged apart, never in the headline mean.
IN_DOMAIN_GAPS = frozenset({"in-domain", "in-distribution"})


def headline_tasks(tasks: list[TaskTable]) -> tuple[str, list[TaskTable]]:
    """(metric, tasks) the suite's headline Mean and Avg. rank are over: its cross-domain tasks whose primary
    metric is the suite's most common one (a mean never mixes mIoU with a change F1 or an accuracy)."""
    cross = [t for t in tasks if t.gap not in IN_DOMAIN_GAPS] or list(tasks)
    metrics = [t.primary for t in cross]
    metric = max(dict.fromkeys(metrics), key=metrics.count) if metrics else "miou"
    return metric, [t for t in cross if t.primary == metric]


def _complete_mean(values: dict[str, float], tasks: list[TaskTable]) -> float:
    """The mean over `tasks` when the row has every one of them, else NaN (a mean over fewer tasks is not
    comparable with one over all)."""
    present = [values.get(t.task_id, math.nan) for t in tasks]
    return math.nan if not tasks or any(math.isnan(v) for v in present) else sum(present) / len(present)


def merged_badges(per_task: Iterable[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """A suite row's badges: one per text, its explanations from every task joined (each once), so four tasks
    with four different UNVERIFIED values give one badge that lists them, not four."""
    whys: dict[str, list[str]] = {}
    for badges in per_task:
        for text, why in badges:
            if why not in whys.setdefault(text, []):
                whys[text].append(why)
    return sorted((text, " ".join(explanations)) for text, explanations in whys.items())


def suite_generalization(suite: SuiteView) -> tuple[str, list[tuple[str, float, float]], int]:
    """(metric, points, tasks) of the suite's domain-generalization plot: over the suite's tasks of its most
    common headline metric that score the source split too, each model's mean source score and mean target
    score, for the models that have both on every such task (a mean over different tasks would not compare)."""
    if not suite.tasks:
        return "", [], 0
    metric = Counter(task.primary for task in suite.tasks).most_common(1)[0][0]
    tasks = [t for t in suite.tasks if t.primary == metric and any(s.role == "source" for m in t.scores.values()
                                                                   for s in m.values())]
    models = list(dict.fromkeys(m for t in tasks for m in t.scores))
    points = []
    for model in models:
        pairs = [(t.source_score(model), t.target_mean(model)) for t in tasks]
        if pairs and not any(math.isnan(v) for pair in pairs for v in pair):
            points.append((model, sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)))
    return metric, points, len(tasks)


def task_seed_table(task: TaskTable) -> Table | None:
    """Models trained under several seeds: the mean, sample standard deviation, lowest and highest of their
    target score over the seeds (None when no model has two seed runs on the task)."""
    spread = task.seed_spread()
    if not spread:
        return None
    metric = METRIC_LABELS.get(task.primary, task.primary)
    columns: list[Column[list[float]]] = [
        Column("Seeds", lambda scores: float(len(scores)), percent=False, marked=False),
        Column(f"Mean target {metric}", lambda scores: sum(scores) / len(scores)),
        Column("Std", _sample_std, marked=False),
        Column("Lowest", min, marked=False),
        Column("Highest", max, marked=False),
    ]
    return table_of(columns, [(Row(name, []), scores) for name, scores in sorted(spread.items())],
                    id=f"task-{slugify(task.task_id)}-seeds", title=f"{task.name}: over training seeds", decimals=2)


def _sample_std(scores: list[float]) -> float:
    """The sample standard deviation (n − 1) of two or more scores."""
    mean = sum(scores) / len(scores)
    return math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))


def task_compute(task: TaskTable, profiles: dict) -> list[tuple[str, Any]]:
    """(model, its compute profile) for the task's models that have one (`rsdg-bench profile`), by the
    adapter and options that made their records."""
    from rsdg_bench.evaluator.compute_profile import profile_key

    found = []
    for model in task.scores:
        profile = profiles.get(profile_key(task.adapters.get(model, ""), task.options.get(model, {}), task.task_id))
        if profile is not None:
            found.append((model, profile))
    return found


def suite_compute_points(suite: SuiteView, profiles: dict) -> list[tuple[str, float, float]]:
    """Per model with a profile on its tasks: (model, mean GFLOPs per image, mean target score) over the suite's
    tasks where it has both, for the score-against-compute plot."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for task in suite.tasks:
        for model, profile in task_compute(task, profiles):
            score = task.target_mean(model)
            if not math.isnan(score):
                pairs.setdefault(model, []).append((profile.gflops, score))
    return [(model, sum(c for c, _ in values) / len(values), sum(s for _, s in values) / len(values))
            for model, values in pairs.items()]


def suite_table(suite: SuiteView, board: Board, options: SiteOptions = SiteOptions()) -> Table:
    """Headline columns first (Mean, a gain over the chosen baseline, Avg. rank, Tasks, interval, the mean of a
    row that lacks tasks, the normalized IQM with its interval), then the means of other metric kinds, of the
    in-domain settings and per gap, then one column per task grouped by gap. Mean and Avg. rank rank complete
    rows only (rows with every headline task); a row missing tasks is shown muted after them, with its count
    and the mean over the tasks it has, never ranked above them (with `options.rank_shared`, a further column
    ranks every row on the tasks it has). A model trained under several seeds is one row: per task the mean over
    its seeds with their standard deviation as ±, its Mean ± the deviation of its seed runs' own means, and a
    Seeds column; a row of one training among rows over several seeds says so (a "1 seed" badge)."""
    gaps = _gap_order(suite.tasks)
    tasks = sorted(suite.tasks, key=lambda t: gaps.index(t.gap))  # stable: suite order within a gap
    metric, ranked = headline_tasks(tasks)
    label = METRIC_LABELS.get(metric, metric)
    reported = _reported_by_label(tasks)
    rows = _suite_rows(tasks, ranked, board, reported)
    baseline = next((r.mean for r in rows if r.row.label == options.baseline), None)
    columns = _suite_columns(tasks, ranked, metric, _suite_blocks(tasks, ranked, metric, gaps), options, baseline,
                             seeded=any(r.seeds > 1 for r in rows))
    rows.sort(key=lambda r: (not r.complete, -_or(r.mean, 0.0), -len(r.have), -_or(r.mean_over_its_tasks, 0.0)))
    groups = [("", len(columns) - len(tasks))] + [(g, sum(t.gap == g for t in tasks)) for g in gaps]
    return table_of(columns, [(r.row, r) for r in rows], id=f"suite-{slugify(suite.id)}", groups=groups,
                    decimals=min((r.decimals for r in reported.values()), default=2),
                    title=f"{suite.name}: target {label} per task (Mean and Avg. rank over the {len(ranked)} "
                          f"cross-domain {label} tasks, complete rows only)")


def _suite_blocks(tasks: list[TaskTable], ranked: list[TaskTable], metric: str,
                  gaps: list[str]) -> list[tuple[str, list[TaskTable], Literal["summary", "detail"]]]:
    """The suite table's block means and where the page shows them: each other metric kind's cross-domain tasks
    and the in-domain settings in the summary; with more than one gap, each gap's headline tasks in the detail,
    before its tasks."""
    cross = [t for t in tasks if t.gap not in IN_DOMAIN_GAPS]
    others = sorted({t.primary for t in cross} - {metric})
    in_domain = [t for t in tasks if t.gap in IN_DOMAIN_GAPS and t.primary == metric]
    gap_blocks = [(g, [t for t in ranked if t.gap == g]) for g in gaps if any(t.gap == g for t in ranked)]
    return ([(f"Mean {METRIC_LABELS.get(m, m)}", [t for t in cross if t.primary == m], "summary") for m in others]
            + ([("Mean in-domain", in_domain, "summary")] if in_domain else [])
            + ([(f"Mean: {g}", members, "detail") for g, members in gap_blocks] if len(gap_blocks) > 1 else []))


def _suite_rows(tasks: list[TaskTable], ranked: list[TaskTable], board: Board,
                reported: dict[str, _ReportedSuiteRow]) -> list[_SuiteRow]:
    """One row per model with a score on the suite, then one per reported method, each ranked among the complete
    rows (Avg. rank) and among all rows on the tasks it has."""
    cards = load_cards()
    raw: list[tuple[Row, _SeedRuns]] = []
    for name, members in _seed_groups(tasks, board.models).items():
        runs = _SeedRuns.of(members, tasks, ranked)
        if runs.values:
            raw.append((Row(name, [], badges=merged_badges(t.badges(m) for t in tasks for m in members),
                            **card_fields(cards.for_adapter(_adapter_of(members[0], tasks)))), runs))
    for row_label, summary in reported.items():
        raw.append((Row(row_label, [], reported="; ".join(summary.sources), flag="; ".join(summary.flags) or None,
                        **card_fields(cards.for_method(summary.method))),
                    _SeedRuns(summary.values, summary.spread, seeds=0)))
    complete = [not math.isnan(_complete_mean(runs.values, ranked)) for _, runs in raw]
    ranks = [_ranks([runs.values.get(t.task_id, math.nan) if done else math.nan  # ranked among complete rows only
                     for (_, runs), done in zip(raw, complete, strict=True)]) for t in ranked]
    shared_ranks = [_ranks([runs.values.get(t.task_id, math.nan) for _, runs in raw]) for t in ranked]
    rows = [_SuiteRow(row, runs.values, runs.spread, ranked, done, _mean([r[index] for r in ranks]) if done else math.nan,
                      _mean([r[index] for r in shared_ranks]), runs.seeds, runs.mean_std)
            for index, ((row, runs), done) in enumerate(zip(raw, complete, strict=True))]
    most = max((row.seeds for row in rows), default=0)
    for row in rows:
        if not row.complete:
            row.row.incomplete = (f"has {len(row.have)} of the {len(ranked)} tasks the mean is over: shown, not "
                                  "ranked (its own mean is over the tasks it has)")
        if row.seeds == 1 and most > 1:
            row.row.badges.append(("1 seed", f"a single training, where other rows average up to {most} seeds: its "
                                             "rank may be its training draw's luck"))
    return rows


def _seed_groups(tasks: list[TaskTable], models: list[str]) -> dict[str, list[str]]:
    """Suite row name → the board's models it stands for, among those with a score on `tasks`: a model trained
    under several seeds (`train --seed`) is one row, its name, over its seed runs in seed order; any other model,
    or a seed run alone here, is a row of its own under its own label."""
    runs = {label: run for task in tasks for label, run in task.seeds.items()}
    here = [m for m in models if any(m in task.scores for task in tasks)]  # runs with a score in this suite
    groups: dict[str, list[str]] = {}
    for model in sorted(here, key=lambda m: runs[m][1] if m in runs else 0):
        groups.setdefault(runs[model][0] if model in runs else model, []).append(model)
    ordered = sorted(groups, key=lambda n: models.index(groups[n][0]))
    return {name if len(groups[name]) > 1 else groups[name][0]: groups[name] for name in ordered}  # one run: its label


@dataclass
class _SeedRuns:
    """One suite row's target scores per task: for a model trained under several seeds the mean over its seed
    runs per task, their standard deviation (the ± shown), and the spread of the runs' own suite means."""

    values: dict[str, float]  # task id → target score (the mean over seeds)
    spread: dict[str, float]  # task id → the ± shown: over seeds, or as a paper prints it
    seeds: int = 1  # training runs the row averages (0: a paper's reported row)
    mean_std: float = math.nan  # the standard deviation of the seed runs' suite means (each over every task)

    @classmethod
    def of(cls, members: list[str], tasks: list[TaskTable], ranked: list[TaskTable]) -> _SeedRuns:
        values, spread = {}, {}
        for task in tasks:
            scores = [task.target_mean(m) for m in members if m in task.scores]
            scores = [v for v in scores if not math.isnan(v)]
            if scores:
                values[task.task_id] = _mean(scores)
            if len(scores) > 1:
                spread[task.task_id] = _sample_std(scores)
        means = [_complete_mean({t.task_id: t.target_mean(m) for t in ranked if m in t.scores}, ranked)
                 for m in members]
        complete = [v for v in means if not math.isnan(v)]
        return cls(values, spread, len(members), _sample_std(complete) if len(complete) > 1 else math.nan)


def _suite_columns(tasks: list[TaskTable], ranked: list[TaskTable], metric: str,
                   blocks: list[tuple[str, list[TaskTable], Literal["summary", "detail"]]], options: SiteOptions,
                   baseline: float | None, seeded: bool = False) -> list[Column[_SuiteRow]]:
    """The suite table's columns, in order (see `suite_table`); with `seeded` (a row over several training
    seeds) the count of seeds each row averages."""
    label = METRIC_LABELS.get(metric, metric)
    gain = [Column[_SuiteRow](f"Gain over {options.baseline}", lambda r: r.mean - baseline, signed=True, marked=False)
            ] if baseline is not None else []
    shared = [Column[_SuiteRow]("Avg. rank on its tasks", lambda r: r.shared_rank, percent=False, lower_is_better=True)
              ] if options.rank_shared else []
    return [
        Column(f"Mean {label}", lambda r: r.mean, lambda r: r.mean_std, interval=lambda r: r.interval),
        *gain,
        Column("Avg. rank", lambda r: r.rank, percent=False, lower_is_better=True),
        *shared,
        Column(f"Tasks (of {len(ranked)})", lambda r: float(len(r.have)), percent=False, marked=False),
        *([Column[_SuiteRow]("Seeds", lambda r: float(r.seeds) if r.seeds else math.nan, percent=False,
                             marked=False)] if seeded else []),
        Column("95% CI low", lambda r: r.interval[0], marked=False, shown="export"),
        Column("95% CI high", lambda r: r.interval[1], marked=False, shown="export"),
        Column("Mean over its tasks", lambda r: r.mean_over_its_tasks, marked=False),
        Column("IQM, normalized", lambda r: r.iqm[0], interval=lambda r: (r.iqm[1], r.iqm[2])),
        Column("IQM 95% CI low", lambda r: r.iqm[1], marked=False, shown="export"),
        Column("IQM 95% CI high", lambda r: r.iqm[2], marked=False, shown="export"),
        *(Column(name, partial(_SuiteRow.mean_of, members=members), shown=shown) for name, members, shown in blocks),
        *(Column(t.name if t.primary == metric else f"{t.name} ({METRIC_LABELS.get(t.primary, t.primary)})",
                 partial(_SuiteRow.task_value, task_id=t.task_id), partial(_SuiteRow.task_spread, task_id=t.task_id),
                 shown="detail")
          for t in tasks),
    ]


@dataclass
class _SuiteRow:
    """What a suite table's row is computed from: one model's (or one reported method's) target score per
    task, over the `ranked` headline tasks its mean and ranks are taken on."""

    row: Row
    values: dict[str, float]  # task id → mean target score
    spread: dict[str, float]  # task id → the ± a paper prints
    ranked: list[TaskTable]
    complete: bool  # has every ranked task
    rank: float  # average rank among complete rows
    shared_rank: float  # average rank on the tasks it has
    seeds: int = 1  # training runs averaged (0: a reported row)
    mean_std: float = math.nan  # over those runs, of their means

    @cached_property
    def mean(self) -> float:
        return _complete_mean(self.values, self.ranked)

    @cached_property
    def have(self) -> list[float]:
        return [self.values[t.task_id] for t in self.ranked if not math.isnan(self.values.get(t.task_id, math.nan))]

    @property
    def mean_over_its_tasks(self) -> float:
        return math.nan if self.complete or not self.have else _mean(self.have)

    @cached_property
    def interval(self) -> tuple[float, float]:
        """The scene bootstrap's (NaN for a reported row, and for a row over seeds: its ± is over them)."""
        return suite_mean_interval(self.ranked, self.row.label) if self.seeds == 1 else (math.nan, math.nan)

    @cached_property
    def iqm(self) -> tuple[float, float, float]:
        return suite_iqm(self.ranked, self.row.label) if self.seeds == 1 else (math.nan,) * 3

    def mean_of(self, members: list[TaskTable]) -> float:
        return _complete_mean(self.values, members)

    def task_value(self, task_id: str) -> float:
        return self.values.get(task_id, math.nan)

    def task_spread(self, task_id: str) -> float:
        return self.spread.get(task_id, math.nan)


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def suite_mean_interval(tasks: list[TaskTable], model: str) -> tuple[float, float]:
    """95% interval of the model's mean over the tasks, every task's scenes resampled jointly (the draws are
    shared by split, see `uncertainty`); NaN unless the model has every task with per-image matrices."""
    replicates = [t.replicates(model) if model in t.scores else None for t in tasks]
    present = [r for r in replicates if r is not None]
    if not replicates or len(present) < len(replicates):
        return math.nan, math.nan
    return percentile_interval(np.mean(present, axis=0))


def suite_iqm(tasks: list[TaskTable], model: str) -> tuple[float, float, float]:
    """(IQM, 95% low, 95% high) of the model's normalized target scores over `tasks` (chance 0, perfect 1:
    `TaskTable.normalized_target`), the IQM rliable and GEO-Bench aggregate with (on chance and perfect anchors,
    not GEO-Bench's baseline models), beside the papers' mean. The interval takes the IQM
    of each scene-bootstrap replicate (splits resampled jointly, as for the mean). NaN unless the model has
    every task with a chance level; the interval NaN unless every task keeps per-image matrices."""
    scores = [t.normalized_target(model) if model in t.scores else math.nan for t in tasks]
    if not scores or any(math.isnan(v) for v in scores):
        return math.nan, math.nan, math.nan
    replicates = [t.normalized_replicates(model) for t in tasks]
    present = [r for r in replicates if r is not None]
    low, high = (math.nan, math.nan) if len(present) < len(replicates) else percentile_interval(
        interquartile_mean(np.stack(present, axis=-1)))
    return float(interquartile_mean(np.array(scores))), low, high


def _gap_order(tasks: list[TaskTable]) -> list[str]:
    order: list[str] = []
    for task in tasks:
        if task.gap not in order:
            order.append(task.gap)
    return order


def _decimals(task: TaskTable) -> int:
    """The decimals a task's tables show: as few as its papers print (2 when no paper is cited)."""
    return min((r.decimals for r in task.reported), default=2)


def task_summary_table(task: TaskTable, options: SiteOptions = SiteOptions()) -> Table:
    """Primary metric per evaluated split, the mean over targets (and its gain over the chosen baseline), its
    interval, the difference to the leader and the share of the source score kept on the targets; rows ranked
    by the mean over targets (what the board ranks on), rows without one last."""
    reported_targets = {r.label: task.reported_target(r) for r in task.reported}
    baseline = (task.target_mean(options.baseline) if options.baseline in task.scores
                else reported_targets.get(options.baseline or "", math.nan))
    columns: list[Column[_SummaryRow]] = [
        *(Column(f"{slug} (source)" if role == "source" else slug, partial(_SummaryRow.on, slug=slug),
                 partial(_SummaryRow.spread_on, slug=slug)) for role, slug in task.splits),
        Column("Targets", lambda r: r.target, lambda r: r.target_spread),
        *([Column(f"Gain over {options.baseline}", lambda r: r.target - baseline, signed=True, marked=False)]
          if not math.isnan(baseline) else []),
        Column("95% CI low", lambda r: r.interval[0], marked=False),
        Column("95% CI high", lambda r: r.interval[1], marked=False),
        Column("Δ to leader low", lambda r: r.to_leader[0], marked=False),
        Column("Δ to leader high", lambda r: r.to_leader[1], marked=False),
        Column("Tie group", lambda r: r.tie_group, percent=False, marked=False),
        # not marked best: being equally bad everywhere keeps everything
        Column("Retained", lambda r: r.retained, marked=False),
    ]
    groups, differences = task.tie_groups(), task.differences_to_leader()
    rows: list[tuple[Row, _SummaryRow]] = []
    for model, splits in task.scores.items():
        rows.append((Row(model, [], badges=task.badges(model),
                         **card_fields(load_cards().for_adapter(task.adapters.get(model)))),
                     _SummaryRow({slug: s.metrics[task.primary] for slug, s in splits.items()}, task.target_mean(model),
                                 interval=task.interval(model), to_leader=differences[model],
                                 tie_group=float(groups.get(model, math.nan)), retained=task.retained(model))))
    for reported in task.reported:
        value = task.reported_target(reported)
        if math.isnan(value):
            continue
        on = [slug for _, slug in task.splits if _reported_on(task, reported, slug)]
        rows.append((Row(reported.label, [], reported=reported.source, flag=reported.flag,
                         **card_fields(load_cards().for_method(reported.method))),
                     _SummaryRow(dict.fromkeys(on, value), value, split_spread=dict.fromkeys(on, reported.headline_std),
                                 target_spread=reported.headline_std)))
    rows.sort(key=lambda pair: (math.isnan(pair[1].target), -_or(pair[1].target, 0.0)))
    return table_of(columns, rows, id=f"task-{slugify(task.task_id)}-summary",
                    title=f"{task.name}: {task.primary} per split", decimals=_decimals(task))


@dataclass
class _SummaryRow:
    """What a task summary's row is computed from: a model's (or a reported method's) primary metric per split
    and its target mean, with the board's statistics of it (none for a reported row)."""

    split_values: dict[str, float]  # slug → primary metric
    target: float
    interval: tuple[float, float] = (math.nan, math.nan)
    to_leader: tuple[float, float] = (math.nan, math.nan)
    tie_group: float = math.nan
    retained: float = math.nan
    split_spread: dict[str, float] = field(default_factory=dict)  # slug → the ± a paper prints
    target_spread: float = math.nan

    def on(self, slug: str) -> float:
        return self.split_values.get(slug, math.nan)

    def spread_on(self, slug: str) -> float:
        return self.split_spread.get(slug, math.nan)


def task_convention_table(task: TaskTable) -> Table | None:
    """The headline metrics of each model's targets under the conventions other than the task's own (the
    same matrices, computed as another paper would): None when no record has them."""
    others = sorted({c for splits in task.scores.values() for s in splits.values() for c in s.other_conventions})
    if not others:
        return None
    targets = [slug for role, slug in task.splits if role == "target"]

    def under(convention: str, slug: str, metric: str) -> Callable[[dict[str, SplitScores]], float]:
        return lambda splits: (splits[slug].other_conventions.get(convention, {}).get(metric, math.nan)
                               if slug in splits else math.nan)

    columns = [Column(f"{slug} {METRIC_LABELS[m]} ({c})", under(c, slug, m))
               for c in others for slug in targets for m in METRIC_COLUMNS]
    return table_of(columns, [(Row(model, []), splits) for model, splits in task.scores.items()],
                    id=f"task-{slugify(task.task_id)}-conventions",
                    title=f"{task.name}: targets under the {', '.join(others)} convention")


def task_class_table(task: TaskTable, slug: str) -> Table:
    """Per-class IoU with mIoU, OA, AA, mDice, mFscore on one split (the papers' table layout, their class abbreviations)."""
    from rsdg_bench.datasets.classes import load_class_schema

    schema = load_class_schema(task.classes) if task.classes else None
    columns = [*(Column[_ClassRow](schema.display_name(c) if schema else c, partial(_ClassRow.class_iou, name=c))
                 for c in task.class_names),
               *(Column[_ClassRow](METRIC_LABELS[m], partial(_ClassRow.metric, name=m),
                                   partial(_ClassRow.metric_spread, name=m)) for m in METRIC_COLUMNS)]
    rows = [(Row(model, []), _ClassRow(splits[slug].per_class_iou, splits[slug].metrics))
            for model, splits in task.scores.items() if slug in splits]
    for reported in task.reported:
        if _reported_on(task, reported, slug):
            rows.append((Row(reported.label, [], reported=reported.source, flag=reported.flag),
                         _ClassRow(reported.per_class, {task.primary: reported.headline, **reported.metrics},
                                   {task.primary: reported.headline_std, **reported.metrics_std})))
    return table_of(columns, rows, id=f"task-{slugify(task.task_id)}-{slugify(slug)}",
                    title=f"{task.name}: per-class IoU on {slug}", decimals=_decimals(task))


@dataclass
class _ClassRow:
    """A per-class table's row: IoU per class and the metrics on one split (the headline under the task's
    primary metric for a reported row), with the ± a paper prints."""

    per_class: dict[str, float]
    metrics: dict[str, float]
    spread: dict[str, float] = field(default_factory=dict)

    def class_iou(self, name: str) -> float:
        return self.per_class.get(name, math.nan)

    def metric(self, name: str) -> float:
        return self.metrics.get(name, math.nan)

    def metric_spread(self, name: str) -> float:
        return self.spread.get(name, math.nan)


def _reported_on(task: TaskTable, reported: ReportedRow, slug: str) -> bool:
    """Whether a reported row was measured on split `slug`: named so, or unnamed on a single-target task."""
    targets = [s for role, s in task.splits if role == "target"]
    return reported.split == slug or (reported.split is None and targets == [slug])


def reported_elsewhere(task: TaskTable) -> Table | None:
    """Reported numbers measured on a split that is not one of the task's targets (shown, never averaged):
    each row names its split; the column names the metric as the paper prints it."""
    rows = [r for r in task.reported if math.isnan(task.reported_target(r))]
    if not rows:
        return None
    names = sorted({r.headline_name or METRIC_LABELS.get(task.primary, task.primary) for r in rows})
    column = Column[ReportedRow](" / ".join(names) + " (as printed)", lambda r: r.headline)
    return table_of([column], [(Row(f"{r.label}, on {r.split or 'a split the paper does not name'}", [],
                                    reported=r.source), r) for r in rows],
                    id=f"task-{slugify(task.task_id)}-reported-other", title=f"{task.name}: reported on other splits")


def _target_of(task: TaskTable | None, model: str) -> float:
    return task.target_mean(model) if task is not None and model in task.scores else math.nan


def casid_matrices(suite: SuiteView, board: Board) -> dict[str, tuple[np.ndarray, str | None]]:
    """Per model (or reported method): the 4×4 CASID source × target matrix of target mIoU (NaN if missing)."""
    by_id = {t.task_id: t for t in suite.tasks}
    cells = {(a, b): by_id.get(f"crossearth/{a}2{b}") for a in CASID_ZONES for b in CASID_ZONES}
    if not any(cells.values()):
        return {}
    out: dict[str, tuple[np.ndarray, str | None]] = {}
    for model in board.models:
        matrix = np.array([[_target_of(cells[(a, b)], model) for b in CASID_ZONES] for a in CASID_ZONES])
        if not np.isnan(matrix).all():
            out[model] = (matrix, None)
    reported: dict[str, tuple[np.ndarray, str]] = {}
    for (a, b), task in cells.items():
        if task is None:
            continue
        for row in task.reported:
            value = task.reported_target(row)
            if math.isnan(value):
                continue
            matrix, _ = reported.setdefault(row.label, (np.full((4, 4), math.nan), row.source))
            matrix[CASID_ZONES.index(a), CASID_ZONES.index(b)] = value
    out.update(reported)
    return out
