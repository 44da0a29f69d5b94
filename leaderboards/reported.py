"""The papers' reported numbers (`leaderboards/reported/*.yaml`), checked, for showing beside our results.

Each file transcribes one table of one paper:

```yaml
source: {paper: "CrossEarth (Gong et al., 2025)", table: "2"}
note: how the table was read, what could not be
entries:
  - {method: DAFormer, backbone: MiT-B5, task: crossearth/pi2v, headline: 54.4,
     per_class: {impervious_surface: 73.8, building: 82.9, ...}}
```

Values are percentages as printed; `headline` is the task's primary metric (mIoU for most, the change F1 for
codex/oscd). `split` names the evaluated split when it is not the task's (single)
target, e.g. a contest's test server; such rows are shown on the task page only, never averaged with our
targets. A cell that could not be read is `null`, never guessed. `check` verifies that every row's
per-class mean reproduces its headline within the rounding of the printed digits, so an OCR slip in a
transcription fails a test instead of reaching a page. `decimals` is how many the paper prints (no value
may have more; the pages show that many); `headline_std` / `metrics_std` hold the ± over runs a paper
prints beside its means (CromSS). `convention` (default mmseg) is how the paper
computed its numbers; it must be its tasks' `metrics.convention`, and rows show it. A printed headline whose
cells do not average to it is still kept as printed, with `flag:` saying why (its cells left missing): the
page shows it flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rsdg_bench.base.errors import ResultsError
from rsdg_bench.base.yaml_load import load_yaml
from rsdg_bench.protocol.task_schema import TaskCatalog

REPORTED_DIR = Path(__file__).parent / "reported"


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paper: str
    table: str


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str
    backbone: str | None = None
    task: str
    split: str | None = None
    headline: float | None = Field(default=None, ge=0, le=100)
    per_class: dict[str, float | None] = {}
    metrics: dict[str, float | None] = {}  # other reported metrics (oa, aa, mf1, ...), percentages
    flag: str | None = None  # why this printed headline is shown flagged (e.g. its cells do not average to it)
    # The ± standard deviation the paper prints beside a mean over runs (CromSS: three runs), percentages.
    headline_std: float | None = Field(default=None, ge=0)
    metrics_std: dict[str, float | None] = {}


class ReportedTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Source
    note: str = ""
    convention: Literal["mmseg", "smp", "codex"] = "mmseg"  # how the paper computed its metrics (`metrics.convention`)
    decimals: int = Field(default=2, ge=0, le=4)  # as the paper prints its numbers; the pages show as many
    # The name the paper prints for its headline metric, per task id, where it is not the task's primary
    # metric's usual name (CoDEX's FMoW column: "Avg. Acc.").
    headline_names: dict[str, str] = {}
    entries: list[Entry]


@dataclass(frozen=True)
class ReportedRow:
    """One reported result, values as fractions (NaN when missing), ready for a board."""

    method: str
    backbone: str | None
    task: str
    split: str | None
    headline: float
    per_class: dict[str, float]
    metrics: dict[str, float]
    source: str
    flag: str | None = None
    convention: str = "mmseg"
    headline_name: str | None = None  # what the paper calls its headline metric here, if not the task's primary
    note: str = ""  # the transcribed table's note (why a printed cell is missing, which split, caveats)
    decimals: int = 2  # how many decimals the paper prints (of a percentage)
    headline_std: float = math.nan  # the paper's ± over runs, as a fraction (NaN when it gives none)
    metrics_std: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method} ({self.backbone})" if self.backbone else self.method


def _fraction(value: float | None) -> float:
    return math.nan if value is None else value / 100


def load_tables(folder: Path = REPORTED_DIR) -> dict[Path, ReportedTable]:
    tables = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            tables[path] = ReportedTable.model_validate(load_yaml(path.read_text()))
        except (ValidationError, yaml.YAMLError) as exc:
            raise ResultsError(f"{path} is not a valid reported-results file: {exc}",
                               "see leaderboards/reported.py for the format") from exc
    return tables


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


def check(tables: dict[Path, ReportedTable], catalog: TaskCatalog) -> list[str]:
    """Problems: unknown tasks or classes, and rows whose per-class mean misses the headline."""
    problems = []
    for path, table in tables.items():
        for entry in table.entries:
            where = f"{path.name}: {entry.method} on {entry.task}"
            printed = [entry.headline, entry.headline_std, *entry.per_class.values(), *entry.metrics.values(),
                       *entry.metrics_std.values()]
            finer = [v for v in printed if v is not None and _decimals(v) > table.decimals]
            if finer:
                problems.append(f"{where}: {finer[0]} has more decimals than the {table.decimals} the paper prints")
            if set(entry.metrics_std) - set(entry.metrics):
                problems.append(f"{where}: a ± for a metric the row does not give: "
                                f"{sorted(set(entry.metrics_std) - set(entry.metrics))}")
            if entry.task not in catalog.tasks:
                problems.append(f"{where}: unknown task")
                continue
            task = catalog.tasks[entry.task]
            if table.convention != task.metrics.convention:
                problems.append(f"{where}: the paper's {table.convention} convention is not the task's "
                                f"{task.metrics.convention}; its numbers would not compare")
            unknown = set(entry.per_class) - set(task.class_schema.names)
            if unknown:
                problems.append(f"{where}: unknown classes {sorted(unknown)}")
                continue
            if entry.flag is not None:
                if entry.headline is None or any(v is not None for v in entry.per_class.values()):
                    problems.append(f"{where}: a flagged row keeps its printed headline and no per-class cells")
                continue
            headline_classes = [task.class_schema.names[i] for i in task.headline_class_indices()]
            values = [v for c in headline_classes if (v := entry.per_class.get(c)) is not None]
            if entry.headline is None or not entry.per_class or len(values) != len(headline_classes):
                continue
            mean = sum(values) / len(values)
            tolerance = 0.5 * 10 ** -min(_decimals(v) for v in values) + 0.5 * 10 ** -_decimals(entry.headline)
            if abs(mean - entry.headline) > tolerance + 1e-9:
                problems.append(f"{where}: per-class mean {mean:.3f} vs headline {entry.headline} "
                                f"(tolerance {tolerance:.3f})")
    return problems


def reported_rows(folder: Path = REPORTED_DIR) -> list[ReportedRow]:
    """Every entry as a row. One method's result on one split given by two tables of the same paper with the
    same headline (CrossEarth's Table 6 and its per-class Table 14) becomes one row citing both; different
    headlines stay two rows, so the disagreement shows."""
    rows: dict[tuple, ReportedRow] = {}
    for table in load_tables(folder).values():
        source = f"{table.source.paper}, Table {table.source.table}"
        if table.convention != "mmseg":
            source += f" ({table.convention} metric convention)"
        for entry in table.entries:
            row = ReportedRow(
                method=entry.method, backbone=entry.backbone, task=entry.task, split=entry.split,
                headline=_fraction(entry.headline), per_class={k: _fraction(v) for k, v in entry.per_class.items()},
                metrics={k: _fraction(v) for k, v in entry.metrics.items()}, source=source, flag=entry.flag,
                convention=table.convention, headline_name=table.headline_names.get(entry.task), note=table.note,
                decimals=table.decimals, headline_std=_fraction(entry.headline_std),
                metrics_std={k: _fraction(v) for k, v in entry.metrics_std.items()})
            key = (row.method, row.backbone, row.task, row.split, table.source.paper, row.headline)
            if key in rows and not math.isnan(row.headline):
                rows[key] = _merged(rows[key], row)
            else:
                rows[key if not math.isnan(row.headline) else (*key, id(row))] = row
    return list(rows.values())


def _merged(first: ReportedRow, second: ReportedRow) -> ReportedRow:
    def pick(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b.get(k, math.nan) if math.isnan(a.get(k, math.nan)) else a[k] for k in {**a, **b}}

    table = second.source.rsplit("Table ", 1)[-1]
    return ReportedRow(method=first.method, backbone=first.backbone, task=first.task, split=first.split,
                       headline=first.headline, per_class=pick(first.per_class, second.per_class),
                       metrics=pick(first.metrics, second.metrics), source=f"{first.source} + Table {table}",
                       flag=first.flag or second.flag, convention=first.convention,
                       headline_name=first.headline_name, decimals=min(first.decimals, second.decimals),
                       headline_std=first.headline_std, metrics_std=pick(first.metrics_std, second.metrics_std),
                       note=" ".join(n for n in dict.fromkeys((first.note, second.note)) if n))
