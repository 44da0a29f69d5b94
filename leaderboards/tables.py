"""One table model for every leaderboard table, and its exports (CSV, Markdown, LaTeX booktabs).

A table is built from a list of `Column` specs (HELM's way: a column is an object that names itself, says how
it is shown and computes its value from a row's context), so a table's headers and its values cannot drift
apart. A `Table` has column headers and rows of numbers (fractions in [0, 1] shown as percentages, or plain
numbers such as ranks); rows copied from papers are flagged `reported` so every format marks them. The
best and second-best value per column are marked as the papers do (bold, underline), over the rows that
are ranked: by default the higher the better; columns listed in `lower_is_better` (ranks, drops) the
other way.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

Context = TypeVar("Context")


@dataclass
class Row:
    label: str
    values: list[float]            # NaN when missing
    reported: str | None = None    # the source ("CrossEarth Table 2") when copied from a paper
    link: str | None = None        # a page for the row's model, if any
    flag: str | None = None        # why a reported row's numbers are shown with a warning
    badges: list[tuple[str, str]] = field(default_factory=list)  # (text, explanation): e.g. off-protocol training
    incomplete: str | None = None  # why the row is not ranked (it lacks tasks the ranking is over): shown muted
    spread: list[float] | None = None  # per column, the ± standard deviation a paper prints (NaN where none)
    intervals: list[tuple[float, float]] | None = None  # per column, a 95% interval shown under the value (NaN: none)
    category: str | None = None    # the method's category from its model card (filterable on the page)
    params: str | None = None      # its parameter count as the card gives it ("3.1M (...)")
    about: str | None = None       # the model card's facts, one line, with their source
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, https URL) from the model card

    def spread_at(self, column: int) -> float:
        return math.nan if self.spread is None else self.spread[column]


@dataclass
class Table:
    id: str
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    percent: list[bool] | None = None          # per column: show ×100 (default: every column)
    lower_is_better: set[int] = field(default_factory=set)
    unmarked: set[int] = field(default_factory=set)  # columns without best / second marks (counts)
    groups: list[tuple[str, int]] = field(default_factory=list)  # (header, column span) above the columns
    decimals: int = 2  # of a percentage, as the cited papers print theirs (`ReportedTable.decimals`)
    signed: set[int] = field(default_factory=set)  # columns of differences, shown with their sign (+1.2)
    detail: set[int] = field(default_factory=set)  # columns a page shows behind a toggle, not in its summary
    export_only: set[int] = field(default_factory=set)  # columns only the exports have (shown in others' cells)
    export_id: str | None = None  # the table whose exports a view of it links to (default: its own id)

    @property
    def categories(self) -> list[str]:
        """The rows' model-card categories, once each, sorted (the page's category filter)."""
        return sorted({row.category for row in self.rows if row.category})

    @property
    def reported_sources(self) -> list[str]:
        """Every paper table the reported rows cite, once each, in order of appearance (a row that gathers
        several tables cites each, joined by "; ")."""
        found: list[str] = []
        for row in self.rows:
            found += [s for s in (row.reported or "").split("; ") if s and s not in found]
        return found

    def is_percent(self, column: int) -> bool:
        return True if self.percent is None else self.percent[column]

    def marks(self) -> dict[tuple[int, int], str]:
        """(row, column) → "best" | "second" for each column's top two distinct values (columns with values in
        fewer than two rows are not marked)."""
        marks: dict[tuple[int, int], str] = {}
        for column in range(len(self.columns)):
            if column in self.unmarked:
                continue
            present = [r.values[column] for r in self.rows if not math.isnan(r.values[column])]
            if len(present) < 2:  # a value alone in its column is not "best"
                continue
            values = sorted({round(v, 6) for v in present}, reverse=column not in self.lower_is_better)
            for rank, value in zip(("best", "second"), values[:2], strict=False):
                for index, row in enumerate(self.rows):
                    if not math.isnan(row.values[column]) and round(row.values[column], 6) == value:
                        marks[(index, column)] = rank
        return marks

    def formatted(self, row: int, column: int) -> str:
        value = self.rows[row].values[column]
        if math.isnan(value):
            return "–"
        sign = "+" if column in self.signed else ""
        if not self.is_percent(column):
            return f"{value:{sign}.0f}" if column in self.unmarked else f"{value:{sign}.2f}"
        return f"{100 * value:{sign}.{self.decimals}f}"

    def spread_text(self, row: int, column: int) -> str:
        """"±0.27" where the row's paper prints a standard deviation for the cell, else ""."""
        spread = self.rows[row].spread_at(column)
        return "" if math.isnan(spread) else f"±{100 * spread:.{self.decimals}f}"

    def interval_text(self, row: int, column: int) -> str:
        """"[55.1, 58.0]" where the row has an interval for the cell, else ""."""
        intervals = self.rows[row].intervals
        low, high = intervals[column] if intervals is not None else (math.nan, math.nan)
        if math.isnan(low) or math.isnan(high):
            return ""
        scale, decimals = (100, self.decimals) if self.is_percent(column) else (1, 2)
        return f"[{scale * low:.{decimals}f}, {scale * high:.{decimals}f}]"

    def cell_text(self, row: int, column: int) -> str:
        """The cell as the exports print it: the value, and its ± where the paper gives one."""
        spread = self.spread_text(row, column)
        return f"{self.formatted(row, column)} {spread}" if spread else self.formatted(row, column)


def plain_number(value: float | None) -> str:
    """A stored fraction for machine-readable exports: full precision (10 decimals), empty when missing."""
    return "" if value is None or math.isnan(value) else repr(round(float(value), 10))


# Badges that every row of a task carries alike (`TaskTable.badges`): their sentences are on the task's page, and
# an export's label keeps just their name, so the model column stays short and the same for every such row
TASK_BADGES = frozenset({"differs from paper", "UNVERIFIED protocol"})


def _label(row: Row) -> str:
    label = f"{row.label} (reported: {row.reported})" if row.reported else row.label
    label += "".join(f" [{text}]" if text in TASK_BADGES else f" [{text}: {why}]" for text, why in row.badges)
    return f"{label} [flagged: {row.flag}]" if row.flag else label


def to_csv(table: Table) -> str:
    """Numbers as stored (fractions, not percentages), empty when missing; a `reported` column (and a `flag`
    column when a reported row is flagged, a `category` column when rows have model cards, a `± <column>`
    column for each column where a paper prints standard deviations)."""
    out = io.StringIO()
    writer = csv.writer(out)
    flagged = any(row.flag for row in table.rows)  # the `flag` column only where a row has one
    spread = [j for j in range(len(table.columns)) if any(not math.isnan(r.spread_at(j)) for r in table.rows)]
    categories = bool(table.categories)
    writer.writerow([csv_text(c) for c in ["model", *(["category"] if categories else []), *table.columns,
                                           *(f"± {table.columns[j]}" for j in spread), "reported",
                                           *(["flag"] if flagged else [])]])
    for row in table.rows:
        writer.writerow([csv_text(_label(row) if row.badges else row.label),
                         *([csv_text(row.category or "")] if categories else []),
                         *(plain_number(v) for v in row.values), *(plain_number(row.spread_at(j)) for j in spread),
                         csv_text(row.reported or ""), *([csv_text(row.flag or "")] if flagged else [])])
    return out.getvalue()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula (`=`, `+`, `-`, `@`, tab, CR) gets
    a leading apostrophe (OWASP's advice against CSV injection). Numbers are written apart, unchanged."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def to_markdown(table: Table) -> str:
    marks = table.marks()
    lines = ["| Model | " + " | ".join(_md_escape(c) for c in table.columns) + " |",
             "|---|" + "---:|" * len(table.columns)]
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            text = table.cell_text(i, j)
            cells.append(f"**{text}**" if marks.get((i, j)) == "best" else
                         f"<u>{text}</u>" if marks.get((i, j)) == "second" else text)
        lines.append(f"| {_md_escape(_label(row))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    """Table-cell safe (no `|`, no line break), and inert where a Markdown renderer passes HTML through."""
    return " ".join(html.escape(text, quote=False).replace("|", "\\|").splitlines())


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular; best in bold, second underlined, reported rows marked with a dagger."""
    marks = table.marks()
    lines = [f"% {latex_escape(table.title)} (rsdg-bench); requires \\usepackage{{booktabs}}",
             "\\begin{tabular}{l" + "r" * len(table.columns) + "}", "\\toprule"]
    if table.groups:
        lines.append(" & " + " & ".join(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(name)}}}"
                                        for name, span in table.groups) + " \\\\")
    lines += ["Model & " + " & ".join(latex_escape(c) for c in table.columns) + " \\\\", "\\midrule"]
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            text = table.cell_text(i, j).replace("–", "--").replace("±", "$\\pm$")
            cells.append(f"\\textbf{{{text}}}" if marks.get((i, j)) == "best" else
                         f"\\underline{{{text}}}" if marks.get((i, j)) == "second" else text)
        label = latex_escape(row.label) + ("$^\\dagger$" if row.reported else "")
        lines.append(f"{label} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if any(r.reported for r in table.rows):
        lines.append("% $^\\dagger$ reported in the cited paper, not produced by rsdg-bench")
    return "\n".join(lines) + "\n"


def _missing(_: object) -> float:
    return math.nan


@dataclass(frozen=True)
class Column(Generic[Context]):
    """One column: its header, its value (and the ± a paper prints, if any) from a row's context, and how it is
    shown: as a percentage, with its sign, marked best / second, and which way is better."""

    name: str
    value: Callable[[Context], float]
    spread: Callable[[Context], float] = _missing
    percent: bool = True
    lower_is_better: bool = False
    marked: bool = True
    signed: bool = False
    # Where a page shows it: in the ranked summary, in the detail behind a toggle (one column per task), or only
    # in the exports (an interval's bounds, which the page shows under the value they belong to).
    shown: Literal["summary", "detail", "export"] = "summary"
    interval: Callable[[Context], tuple[float, float]] | None = None  # a 95% interval shown under the value


def table_of(columns: Sequence[Column[Context]], rows: Sequence[tuple[Row, Context]], **fields) -> Table:
    """The table of `rows` (each a `Row` with its label and badges, and the context its values come from) under
    `columns`, in the given row order."""
    for row, context in rows:
        row.values = [column.value(context) for column in columns]
        row.spread = [column.spread(context) for column in columns]
        row.intervals = [column.interval(context) if column.interval else (math.nan, math.nan) for column in columns]
    return Table(columns=[c.name for c in columns], rows=[row for row, _ in rows],
                 percent=[c.percent for c in columns],
                 lower_is_better={i for i, c in enumerate(columns) if c.lower_is_better},
                 unmarked={i for i, c in enumerate(columns) if not c.marked},
                 signed={i for i, c in enumerate(columns) if c.signed},
                 detail={i for i, c in enumerate(columns) if c.shown == "detail"},
                 export_only={i for i, c in enumerate(columns) if c.shown == "export"}, **fields)


def column_view(table: Table, keep: Sequence[int], id: str) -> Table:
    """The table with only the columns `keep` (in that order), the same rows in the same order: what a page
    shows of a wide table (its summary, or its detail behind a toggle), its exports still the whole table's."""
    def picked(indices: set[int]) -> set[int]:
        return {new for new, old in enumerate(keep) if old in indices}

    owner = [name for name, span in table.groups for _ in range(span)]
    groups: list[tuple[str, int]] = []
    for old in keep if owner else ():
        if groups and groups[-1][0] == owner[old]:
            groups[-1] = (owner[old], groups[-1][1] + 1)
        else:
            groups.append((owner[old], 1))
    if all(name == "" for name, _ in groups):
        groups = []  # one blank header above every column says nothing
    rows = [replace(row, values=[row.values[i] for i in keep],
                    spread=None if row.spread is None else [row.spread[i] for i in keep],
                    intervals=None if row.intervals is None else [row.intervals[i] for i in keep])
            for row in table.rows]
    return replace(table, id=id, columns=[table.columns[i] for i in keep], rows=rows,
                   percent=None if table.percent is None else [table.percent[i] for i in keep],
                   lower_is_better=picked(table.lower_is_better), unmarked=picked(table.unmarked),
                   groups=groups, signed=picked(table.signed), detail=set(), export_only=set(),
                   export_id=table.export_id or table.id)


def summary_and_detail(table: Table) -> tuple[Table, Table | None]:
    """A wide table split for its page: the summary (the columns shown in it) under the table's own id, and the
    detail (the headline column, then the detail columns) under `<id>-detail`, or None without any. Columns only
    the exports have are in neither."""
    summary = [i for i in range(len(table.columns)) if i not in table.detail | table.export_only]
    if not table.detail:
        return column_view(table, summary, table.id), None
    return (column_view(table, summary, table.id),
            column_view(table, [0, *sorted(table.detail)], f"{table.id}-detail"))
