"""Board → a static, offline site: index, one page per suite and per task, exports and the aggregated JSON.

Jinja2 with autoescape renders every page; figures are matplotlib SVG inlined; the only script is the
inline sorter in `base.html.j2`; nothing is loaded from the network. Layout of the output folder:
`index.html`, `suites/<suite>.html`, `tasks/<task>.html`, `exports/<table>.{csv,md,tex}`, `board.json`,
`scores.csv`, `per_class.csv`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from rsdg_bench import __version__
from rsdg_bench.base.folder_swap import recover_swap, swap_in
from rsdg_bench.base.io import atomic_write_bytes, atomic_write_text
from rsdg_bench.evaluator.compute_profile import by_key, load_all
from rsdg_bench.train.training_history import history_paths

from .aggregate import Board, SuiteView, TaskTable
from .plots import casid_svg, confusion_svg, generalization_svg, interval_svg, pareto_svg
from .tables import Table, csv_text, plain_number, summary_and_detail, to_csv, to_latex, to_markdown
from .views import (
    CASID_ZONES,
    METRIC_COLUMNS,
    METRIC_LABELS,
    SiteOptions,
    casid_matrices,
    reported_elsewhere,
    slugify,
    suite_compute_points,
    suite_generalization,
    suite_table,
    task_class_table,
    task_compute,
    task_convention_table,
    task_seed_table,
    task_summary_table,
)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("rsdg_bench.leaderboards", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["slug"] = slugify
    env.filters["raw"] = plain_number
    return env


class SiteWriter:
    """Renders pages and collects every table shown, so each gets its CSV / Markdown / LaTeX export."""

    def __init__(self, board: Board, results_root: Path | None, options: SiteOptions = SiteOptions()) -> None:
        self.board = board
        self.options = options
        self.results_root = results_root
        self.env = _environment()
        self.generated = datetime.now(UTC).isoformat(timespec="seconds")
        self.tables: list[Table] = []
        self.extra_pages: dict[str, str] = {}  # site-relative path → page: a long task's confusion pages
        # compute profiles (`rsdg-bench profile`) under the results folder, joined to rows by adapter and options
        self.profiles = by_key(load_all(results_root)) if results_root is not None else {}

    def _page(self, template: str, root: str, **context: object) -> str:
        return self.env.get_template(template).render(board=self.board, root=root, version=__version__,
                                                      generated=self.generated, **context)

    def index(self) -> str:
        """Suites with their three best rows by mean target score (ours or reported, marked)."""
        leaders = {}
        for suite in self.board.suites:
            table = suite_table(suite, self.board, self.options)
            leaders[suite.id] = [(row.label, row.values[0], row.reported) for row in table.rows[:3]
                                 if row.incomplete is None]
        return self._page("index.html.j2", "", leaders=leaders,
                          results=str(self.results_root or "(records given directly)"))

    def suite(self, suite: SuiteView) -> str:
        full = suite_table(suite, self.board, self.options)
        self.tables.append(full)  # exported whole; the page shows its summary, the per-task columns behind a toggle
        table, detail = summary_and_detail(full)
        casid = {label: (casid_svg(matrix, list(CASID_ZONES), label), source)
                 for label, (matrix, source) in casid_matrices(suite, self.board).items()}
        units = [(task.name, slug, count, unit) for task in suite.tasks for slug, count, unit in task.resampling_units()]
        metric, points, task_count = suite_generalization(suite)
        generalization = (generalization_svg(points, title=f"{suite.name}: source against target",
                                             metric=METRIC_LABELS.get(metric, metric)), task_count) if points else None
        compute = suite_compute_points(suite, self.profiles)
        pareto = pareto_svg(compute, title=f"{suite.name}: score against compute", metric=METRIC_LABELS.get(
            metric or "miou", metric)) if compute else None
        return self._page("suite.html.j2", "../", suite=suite, table=table, detail=detail, casid=casid, units=units,
                          generalization=generalization, pareto=pareto)

    def task(self, task: TaskTable, page_dir: Path) -> str:
        summary = task_summary_table(task, self.options)
        class_tables = [(slug, task_class_table(task, slug)) for _, slug in task.splits]
        elsewhere = reported_elsewhere(task)
        conventions = task_convention_table(task)
        seeds = task_seed_table(task)
        self.tables += [summary, *(t for _, t in class_tables), *(t for t in (elsewhere, conventions, seeds) if t)]
        figures = [(model, slug, s.matrix) for model, splits in task.scores.items() for slug, s in splits.items()
                   if s.matrix]
        confusions, confusion_pages = self._confusions(task, figures)
        records = [(model, slug, self._record_name(s.record))
                   for model, splits in task.scores.items() for slug, s in splits.items()]
        samples = [(model, slug, self._copy_predictions(task, model, slug, s.predictions, page_dir))
                   for model, splits in task.scores.items() for slug, s in splits.items() if s.predictions]
        histories = [(model, link) for model, splits in task.scores.items()
                     if (link := self._copy_history(task, model, splits, page_dir)) is not None]
        notes = list(dict.fromkeys((r.source, r.note) for r in task.reported if r.note))
        return self._page("task.html.j2", "../", task=task, summary=summary, class_tables=class_tables, notes=notes,
                          elsewhere=elsewhere, conventions=conventions, units=task.resampling_units(),
                          plots=self._task_plots(task), compute=task_compute(task, self.profiles), seeds=seeds,
                          confusions=confusions, confusion_pages=confusion_pages, records=records, samples=samples,
                          histories=histories,
                          class_colours=_class_colours(task.classes) if samples else [])

    @staticmethod
    def _task_plots(task: TaskTable) -> list[str]:
        """The task's interval plot (target score and 95% interval per model, best first) and, when models have
        a source score, its domain-generalization plot (source against target, the diagonal drawn)."""
        metric = METRIC_LABELS.get(task.primary, task.primary)
        models = [m for m in task.scores if not math.isnan(task.target_mean(m))]
        plots = [interval_svg([(m, task.target_mean(m), *task.interval(m)) for m in models],
                              title=f"{task.name}: target score", metric=metric)] if models else []
        points = [(m, task.source_score(m), task.target_mean(m)) for m in models]
        if any(not math.isnan(source) for _, source, _ in points):
            plots.append(generalization_svg(points, title=f"{task.name}: source against target", metric=metric))
        return plots

    def _confusions(self, task: TaskTable, figures: list[tuple[str, str, list]]
                    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """The confusion heatmaps inline when there are few; else none inline and pages of
        `CONFUSIONS_PER_PAGE` each (`tasks/<task>-confusions-<n>.html`), returned as (link, models on it), so
        a task with hundreds of models keeps a page that loads quickly."""
        def svg(model: str, slug: str, matrix: list) -> tuple[str, str, str]:
            return model, slug, confusion_svg(matrix, task.class_names, f"{model}\n{slug}")

        if len(figures) <= CONFUSIONS_PER_PAGE:
            return [svg(*f) for f in figures], []
        pages = []
        for number, start in enumerate(range(0, len(figures), CONFUSIONS_PER_PAGE), 1):
            chunk = figures[start:start + CONFUSIONS_PER_PAGE]
            name = f"{slugify(task.task_id)}-confusions-{number}.html"
            self.extra_pages[f"tasks/{name}"] = self._page("confusions.html.j2", "../", task=task, number=number,
                                                           confusions=[svg(*f) for f in chunk])
            pages.append((name, f"{chunk[0][0]} … {chunk[-1][0]}"))
        return [], pages

    def _copy_history(self, task: TaskTable, model: str, splits: dict, page_dir: Path) -> str | None:
        """Copy the training-history plot `train` left beside the model's checkpoint into the site; its link
        relative to the page. Only a plot inside the results folder is taken (a record names the path)."""
        if self.results_root is None:
            return None
        root = Path(self.results_root).resolve()
        for score in splits.values():
            if not score.checkpoint:
                continue
            plot = history_paths(Path(score.checkpoint))["svg"].resolve()
            if plot.is_relative_to(root) and plot.is_file():
                target = page_dir.parent / "training" / slugify(task.task_id) / f"{slugify(model)}.svg"
                atomic_write_bytes(target, plot.read_bytes())
                return os.path.relpath(target, page_dir)
        return None

    def _record_name(self, record: str) -> str:
        """A record's path as text, relative to the results folder when it lies inside it: the site links
        only to its own files, so it stays whole wherever it is copied (records are not copied into it)."""
        if self.results_root is not None:
            root, path = Path(self.results_root).resolve(), Path(record).resolve()
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return Path(record).name

    def _copy_predictions(self, task: TaskTable, model: str, slug: str, saved: list[dict[str, str]],
                          page_dir: Path) -> list[dict[str, str]]:
        """Copy a run's saved PNGs into the site (it must stand alone); their paths relative to the page."""
        folder = page_dir.parent / "predictions" / slugify(task.task_id) / slugify(model) / slugify(slug)
        root = Path(self.results_root).resolve() if self.results_root is not None else None
        copied = []
        for entry in saved:
            item = {"sample_id": entry["sample_id"]}
            for kind in ("image", "label", "prediction"):
                source = Path(entry[kind]).resolve()
                if (root is not None and not source.is_relative_to(root)) or not source.is_file():
                    break  # only a run's own files go into the site (`ResultStore` checks this on load too)
                target = folder / source.name
                atomic_write_bytes(target, source.read_bytes())
                item[kind] = os.path.relpath(target, page_dir)
            else:
                copied.append(item)
        return copied


CONFUSIONS_PER_PAGE = 24  # heatmaps inline on a task page; more go to pages of their own


def _class_colours(schema_id: str) -> list:
    from rsdg_bench.base.errors import RsdgError
    from rsdg_bench.datasets.classes import load_class_schema

    try:
        return list(load_class_schema(schema_id).classes)
    except RsdgError:  # a task of a user's own, whose schema is not installed here
        return []


def render_scores_csv(board: Board) -> str:
    """One row per (task, model, evaluated split): headline metrics in [0, 1], empty when undefined."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task_id", "task", "gap", "task_version", "task_hash", "model", "role", "split",
                     *METRIC_COLUMNS, "record"])
    for table in board.tasks:
        for model, splits in table.scores.items():
            for role, slug in table.splits:
                if slug in splits:
                    s = splits[slug]
                    writer.writerow([*map(csv_text, (table.task_id, table.name, table.gap)), table.version,
                                     table.task_hash, csv_text(model), role, slug,
                                     *(plain_number(s.metrics[m]) for m in METRIC_COLUMNS),
                                     csv_text(s.record)])
    return out.getvalue()


def render_per_class_csv(board: Board) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task_id", "model", "role", "split", "class", "iou"])
    for table in board.tasks:
        for model, splits in table.scores.items():
            for role, slug in table.splits:
                if slug in splits:
                    for name in table.class_names:
                        writer.writerow([csv_text(table.task_id), csv_text(model), role, slug, csv_text(name),
                                         plain_number(splits[slug].per_class_iou[name])])
    return out.getvalue()


def board_json(board: Board) -> str:
    """Everything aggregated, numbers as fractions (null when undefined)."""
    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 10)

    tasks = []
    for task in board.tasks:
        groups, differences = task.tie_groups(), task.differences_to_leader()
        tasks.append({
            "id": task.task_id, "name": task.name, "gap": task.gap, "version": task.version, "hash": task.task_hash,
            "suite": task.suite, "primary": task.primary, "convention": task.convention, "classes": task.class_names,
            "splits": [{"role": role, "slug": slug} for role, slug in task.splits],
            "resampled": [{"slug": slug, "scenes": count, "unit": unit}
                          for slug, count, unit in task.resampling_units()],
            "results": {model: {"target_mean": number(task.target_mean(model)), "drop": number(task.drop(model)),
                                "retained": number(task.retained(model)),
                                "interval_95": [number(v) for v in task.interval(model)],
                                "difference_to_leader_95": [number(v) for v in differences[model]],
                                "tie_group": groups.get(model),
                                "splits": {slug: {"metrics": {k: number(v) for k, v in s.metrics.items()},
                                                  "other_conventions": {c: {k: number(v) for k, v in m.items()}
                                                                        for c, m in s.other_conventions.items()},
                                                  "per_class_iou": {k: number(v) for k, v in s.per_class_iou.items()},
                                                  "record": s.record} for slug, s in splits.items()}}
                        for model, splits in task.scores.items()},
            "reported": [{"method": r.method, "backbone": r.backbone, "split": r.split, "headline": number(r.headline),
                          "per_class": {k: number(v) for k, v in r.per_class.items()},
                          "metrics": {k: number(v) for k, v in r.metrics.items()}, "source": r.source,
                          "convention": r.convention, "flag": r.flag}
                         for r in task.reported],
        })
    return json.dumps({"harness_version": __version__, "models": board.models,
                       "suites": [{"id": s.id, "name": s.name, "tasks": [t.task_id for t in s.tasks]} for s in board.suites],
                       "tasks": tasks, "excluded": [{"record": p, "why": w} for p, w in board.excluded]}, indent=1)


SITE_MARKER = ".rsdg-site"  # marks a folder as a site this harness built (so a rebuild may replace it)


def write_site(board: Board, out_dir: Path, results_root: Path | None = None,
               options: SiteOptions = SiteOptions()) -> Path:
    """Build the whole site beside `out_dir` and swap it in (`folder_swap`): a reader, or a crash mid-build,
    never sees old and new pages mixed. `out_dir` must be new, empty, or a site built before (its marker file;
    `output_owner`): a file or someone else's folder is refused untouched. Builds into one folder take turns
    (an exclusive flock on the folder's parent directory, which also holds the `.building` staging folder),
    so two at once never publish a half-built site. Returns the index page's path."""
    from rsdg_bench.base.output_owner import claim_folder
    from rsdg_bench.datasets.data_lock import held_exclusively

    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with held_exclusively(out_dir.parent, f"waiting for another leaderboard build beside {out_dir} to finish"):
        recover_swap(out_dir)
        claim_folder(out_dir, SITE_MARKER, "an rsdg-bench leaderboard site")
        staging = out_dir.with_name(f".{out_dir.name}.building")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _write_pages(board, staging, results_root, options)
            atomic_write_text(staging / SITE_MARKER,
                              "built by rsdg-bench; `leaderboard build` replaces this folder whole\n")
            swap_in(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "index.html"


def _write_pages(board: Board, out_dir: Path, results_root: Path | None, options: SiteOptions) -> None:
    site = SiteWriter(board, results_root, options)
    for suite in board.suites:
        atomic_write_text(out_dir / "suites" / f"{slugify(suite.id)}.html", site.suite(suite))
    for task in board.tasks:
        atomic_write_text(out_dir / "tasks" / f"{slugify(task.task_id)}.html", site.task(task, out_dir / "tasks"))
    for relative, page in site.extra_pages.items():
        atomic_write_text(out_dir / relative, page)
    for table in site.tables:
        for suffix, export in ((".csv", to_csv), (".md", to_markdown), (".tex", to_latex)):
            atomic_write_text(out_dir / "exports" / f"{table.id}{suffix}", export(table))
    atomic_write_text(out_dir / "board.json", board_json(board))
    atomic_write_text(out_dir / "scores.csv", render_scores_csv(board))
    atomic_write_text(out_dir / "per_class.csv", render_per_class_csv(board))
    atomic_write_text(out_dir / "index.html", site.index())
