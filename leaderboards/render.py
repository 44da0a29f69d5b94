"""Board → files: a static, offline `index.html` (no CDN, all text escaped) and CSV exports."""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, UTC
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from rsdg_bench import __version__
from rsdg_bench.io import atomic_write_text

from .aggregate import Board


def _percent(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("rsdg_bench.leaderboards", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = _percent
    return env


def render_html(board: Board) -> str:
    template = _environment().get_template("index.html.j2")
    return template.render(board=board, version=__version__,
                           generated=datetime.now(UTC).isoformat(timespec="seconds"))


def render_scores_csv(board: Board) -> str:
    """One row per (task, model, evaluated split): headline metrics in [0, 1], empty when undefined."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task_id", "task", "gap", "task_version", "task_hash", "model", "role", "split",
                     "miou", "oa", "aa", "mf1", "record"])
    for table in board.tasks:
        for model, splits in table.scores.items():
            for role, slug in table.splits:
                if slug in splits:
                    s = splits[slug]
                    writer.writerow([table.task_id, table.name, table.gap, table.version, table.task_hash, model,
                                     role, slug, *(_plain(s.metrics[m]) for m in ("miou", "oa", "aa", "mf1")),
                                     s.record])
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
                        writer.writerow([table.task_id, model, role, slug, name,
                                         _plain(splits[slug].per_class_iou[name])])
    return out.getvalue()


def _plain(value: float) -> str:
    return "" if math.isnan(value) else repr(round(value, 10))


def write_site(board: Board, out_dir: Path) -> Path:
    """Write index.html, scores.csv and per_class.csv; return the page's path."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "scores.csv", render_scores_csv(board))
    atomic_write_text(out_dir / "per_class.csv", render_per_class_csv(board))
    page = out_dir / "index.html"
    atomic_write_text(page, render_html(board))
    return page
