"""Figures for the site: heatmaps written directly as inline SVG (no image files, no network, no plotting
library at build time).

A heatmap is a grid of coloured cells with the value written in each, row and column labels, axis titles
and a title. Writing the few dozen SVG elements by hand costs about a millisecond a figure, where a plotting
library's layout engine took over 100 ms, and a board draws one per model and split. Every label is text
from records and is XML-escaped, so names cannot inject markup.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

# The colour ramps (white to the ramp's full colour, linear in each channel): matplotlib's "Blues" and
# "Greens" end points, so figures look as they did.
_RAMPS = {"Blues": ((247, 251, 255), (8, 48, 107)), "Greens": ((247, 252, 245), (0, 68, 27))}
_CELL = 30      # px per cell
_CHAR = 5.6     # px per character of the 9 px font (an estimate for the layout; text never overflows its cell)


def _colour(value: float, vmax: float, ramp: str) -> str:
    low, high = _RAMPS[ramp]
    t = min(max(value / vmax, 0.0), 1.0)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(low, high, strict=True))


def heatmap_svg(values: np.ndarray, row_labels: list[str], col_labels: list[str], *, title: str,
                xlabel: str, ylabel: str, cmap: str = "Blues", fmt: str = "{:.1f}", vmax: float = 100.0) -> str:
    """A labelled heatmap (colour scale 0..vmax, the same for every figure of a kind, so they compare) with
    each cell's value written in it; NaN cells are left blank. `title` may hold line breaks."""
    rows, cols = values.shape
    titles = title.split("\n")
    left = 22 + _CHAR * max((len(label) for label in row_labels), default=1)
    top = 8 + 13 * len(titles)
    below = 30 + 0.72 * _CHAR * max((len(label) for label in col_labels), default=1)  # labels at 45°
    width, height = left + cols * _CELL + 8, top + rows * _CELL + below
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="9" role="img">',
           f"<title>{escape(' '.join(titles))}</title>"]
    for n, line in enumerate(titles):
        out.append(f'<text x="{left + cols * _CELL / 2:.1f}" y="{11 + 13 * n}" text-anchor="middle" '
                   f'font-size="10">{escape(line)}</text>')
    for i in range(rows):
        y = top + i * _CELL
        out.append(f'<text x="{left - 4:.1f}" y="{y + _CELL / 2 + 3:.1f}" text-anchor="end">{escape(row_labels[i])}</text>')
        for j in range(cols):
            x, value = left + j * _CELL, float(values[i, j])
            if math.isnan(value):
                out.append(f'<rect x="{x:.1f}" y="{y}" width="{_CELL}" height="{_CELL}" fill="#ffffff" stroke="#eeeeee"/>')
                continue
            ink = "#ffffff" if value > 0.6 * vmax else "#000000"
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{_CELL}" height="{_CELL}" fill="{_colour(value, vmax, cmap)}"/>'
                       f'<text x="{x + _CELL / 2:.1f}" y="{y + _CELL / 2 + 3:.1f}" text-anchor="middle" font-size="7" '
                       f'fill="{ink}">{escape(fmt.format(value))}</text>')
    base = top + rows * _CELL
    for j, label in enumerate(col_labels):
        x = left + j * _CELL + _CELL / 2
        out.append(f'<text x="{x:.1f}" y="{base + 10}" text-anchor="end" transform="rotate(-45 {x:.1f} {base + 10})">'
                   f"{escape(label)}</text>")
    out.append(f'<text x="{left + cols * _CELL / 2:.1f}" y="{height - 3:.0f}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text x="9" y="{top + rows * _CELL / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 9 {top + rows * _CELL / 2:.1f})">{escape(ylabel)}</text>')
    out.append("</svg>")
    return "".join(out)


def confusion_svg(matrix: list[list[int]], class_names: list[str], title: str) -> str:
    """Row-normalized confusion matrix (each row: where that class's pixels went, in %)."""
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(totals > 0, 100 * counts / totals, np.nan)
    return heatmap_svg(recall, class_names, class_names, title=title, xlabel="predicted", ylabel="ground truth")


def casid_svg(matrix: np.ndarray, zones: list[str], title: str) -> str:
    """Source zone × target zone target mIoU (%); the diagonal is in-domain."""
    return heatmap_svg(100 * matrix, zones, zones, title=title, xlabel="target", ylabel="source", cmap="Greens")


_PLOT = 300     # px of a scatter or interval plot's drawing area
_MARGIN = 44    # px left and below it for ticks and axis titles


def _axis_ticks(low: float, high: float) -> list[float]:
    """Five or six round tick values spanning [low, high] (percent)."""
    step = next(s for s in (1, 2, 5, 10, 20, 25) if (high - low) / s <= 6)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


def _percent_range(values: list[float]) -> tuple[float, float]:
    """An axis in % over `values`: their span widened to whole tens inside 0..100, at least ten wide."""
    values = values or [0.0, 100.0]
    low = max(0.0, math.floor(min(values) / 10) * 10)
    high = min(100.0, math.ceil(max(values) / 10) * 10)
    if high - low < 10:
        low, high = max(0.0, high - 10), max(high, low + 10)
    return low, high


def generalization_svg(points: list[tuple[str, float, float]], *, title: str, metric: str) -> str:
    """Domain generalization at a glance: each model's source score (x) against its mean target score (y), in %,
    with the diagonal on which a model would lose nothing to the domain shift. A point far below the diagonal
    is a model that does well where it was trained and poorly elsewhere; a point near the origin does poorly
    everywhere. Points without both scores are left out; labels are the models' names."""
    shown = [(label, x, y) for label, x, y in points if not (math.isnan(x) or math.isnan(y))]
    width, height = _MARGIN + _PLOT + 150, 22 + _PLOT + _MARGIN
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="10" role="img" data-plot="generalization"><title>{escape(title)}</title>',
           f'<text x="{_MARGIN + _PLOT / 2}" y="13" text-anchor="middle" font-size="11">{escape(title)}</text>']
    low, high = _percent_range([100 * v for _, x, y in shown for v in (x, y)])

    def px(value: float, vertical: bool) -> float:
        t = (100 * value - low) / (high - low)
        return 22 + _PLOT * (1 - t) if vertical else _MARGIN + _PLOT * t

    out.append(f'<rect x="{_MARGIN}" y="22" width="{_PLOT}" height="{_PLOT}" fill="none" stroke="#999"/>')
    for tick in _axis_ticks(low, high):
        x, y = px(tick / 100, False), px(tick / 100, True)
        out.append(f'<line x1="{x:.1f}" y1="{22 + _PLOT}" x2="{x:.1f}" y2="{26 + _PLOT}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{37 + _PLOT}" text-anchor="middle">{tick:g}</text>'
                   f'<line x1="{_MARGIN - 4}" y1="{y:.1f}" x2="{_MARGIN}" y2="{y:.1f}" stroke="#999"/>'
                   f'<text x="{_MARGIN - 6}" y="{y + 3:.1f}" text-anchor="end">{tick:g}</text>')
    out.append(f'<line x1="{px(low / 100, False):.1f}" y1="{px(low / 100, True):.1f}" x2="{px(high / 100, False):.1f}" '
               f'y2="{px(high / 100, True):.1f}" stroke="#bbb" stroke-dasharray="4 3"><title>target = source: '
               f'nothing lost to the domain shift</title></line>')
    for label, x, y in shown:
        cx, cy = px(x, False), px(y, True)
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#1f77b4"><title>{escape(label)}: source '
                   f'{100 * x:.1f}, target {100 * y:.1f}</title></circle>'
                   f'<text x="{cx + 6:.1f}" y="{cy + 3:.1f}">{escape(label)}</text>')
    out.append(f'<text x="{_MARGIN + _PLOT / 2}" y="{height - 4}" text-anchor="middle">source {escape(metric)} (%)'
               f'</text><text x="11" y="{22 + _PLOT / 2}" text-anchor="middle" transform="rotate(-90 11 '
               f'{22 + _PLOT / 2})">mean target {escape(metric)} (%)</text></svg>')
    return "".join(out)


def interval_svg(rows: list[tuple[str, float, float, float]], *, title: str, metric: str) -> str:
    """Each model's mean target score (dot) with its 95% scene-bootstrap interval (bar), best first, in %: where
    two bars overlap a lot, the ranking between them is not settled. Rows without a score are left out; a
    row without an interval (no per-image matrices) shows its dot alone."""
    shown = sorted((r for r in rows if not math.isnan(r[1])), key=lambda r: -r[1])
    left = 12 + _CHAR * max((len(label) for label, *_ in shown), default=4)
    row_height = 18
    width, height = left + _PLOT + 16, 22 + row_height * max(len(shown), 1) + _MARGIN
    low, high = _percent_range([100 * v for _, mean, lo, hi in shown for v in (mean, lo, hi) if not math.isnan(v)])

    def px(value: float) -> float:
        return left + _PLOT * (100 * value - low) / (high - low)

    bottom = 22 + row_height * max(len(shown), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
           f'viewBox="0 0 {width:.0f} {height}" font-family="sans-serif" font-size="10" role="img" '
           f'data-plot="interval"><title>{escape(title)}</title>',
           f'<text x="{left + _PLOT / 2:.1f}" y="13" text-anchor="middle" font-size="11">{escape(title)}</text>',
           f'<line x1="{left:.1f}" y1="{bottom}" x2="{left + _PLOT:.1f}" y2="{bottom}" stroke="#999"/>']
    for tick in _axis_ticks(low, high):
        x = px(tick / 100)
        out.append(f'<line x1="{x:.1f}" y1="22" x2="{x:.1f}" y2="{bottom}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="middle">{tick:g}</text>')
    for i, (label, mean, lo, hi) in enumerate(shown):
        y = 22 + row_height * i + row_height / 2
        interval = "" if math.isnan(lo) else f", 95% interval {100 * lo:.1f}–{100 * hi:.1f}"
        out.append(f'<text x="{left - 6:.1f}" y="{y + 3:.1f}" text-anchor="end">{escape(label)}</text>')
        if not math.isnan(lo):
            out.append(f'<line x1="{px(lo):.1f}" y1="{y:.1f}" x2="{px(hi):.1f}" y2="{y:.1f}" stroke="#1f77b4" '
                       f'stroke-width="2"/>')
        out.append(f'<circle cx="{px(mean):.1f}" cy="{y:.1f}" r="3.5" fill="#1f77b4"><title>{escape(label)}: '
                   f'{100 * mean:.1f}{interval}</title></circle>')
    out.append(f'<text x="{left + _PLOT / 2:.1f}" y="{height - 4}" text-anchor="middle">mean target '
               f'{escape(metric)} (%)</text></svg>')
    return "".join(out)


def pareto_svg(points: list[tuple[str, float, float]], *, title: str, metric: str) -> str:
    """Score against cost: each model's GFLOPs per image (x, logarithmic) against its mean target score (y,
    %), the models no other model beats on both (as good or better for no more GFLOPs) joined by a step line,
    the Pareto front. Points without both numbers are left out."""
    shown = [(label, cost, score) for label, cost, score in points
             if math.isfinite(cost) and math.isfinite(score) and cost > 0]
    width, height = _MARGIN + _PLOT + 150, 22 + _PLOT + _MARGIN
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="10" role="img" data-plot="pareto"><title>{escape(title)}</title>',
           f'<text x="{_MARGIN + _PLOT / 2}" y="13" text-anchor="middle" font-size="11">{escape(title)}</text>',
           f'<rect x="{_MARGIN}" y="22" width="{_PLOT}" height="{_PLOT}" fill="none" stroke="#999"/>']
    costs = [cost for _, cost, _ in shown] or [1.0]
    low_cost, high_cost = 10 ** math.floor(math.log10(min(costs))), 10 ** math.ceil(math.log10(max(costs)))
    if high_cost == low_cost:
        high_cost *= 10
    low, high = _percent_range([100 * score for _, _, score in shown])

    def x_of(cost: float) -> float:
        return _MARGIN + _PLOT * (math.log10(cost) - math.log10(low_cost)) / (math.log10(high_cost) - math.log10(low_cost))

    def y_of(score: float) -> float:
        return 22 + _PLOT * (1 - (100 * score - low) / (high - low))

    decade = low_cost
    while decade <= high_cost:
        x = x_of(decade)
        out.append(f'<line x1="{x:.1f}" y1="{22 + _PLOT}" x2="{x:.1f}" y2="{26 + _PLOT}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{37 + _PLOT}" text-anchor="middle">{decade:g}</text>')
        decade *= 10
    for tick in _axis_ticks(low, high):
        y = y_of(tick / 100)
        out.append(f'<line x1="{_MARGIN - 4}" y1="{y:.1f}" x2="{_MARGIN}" y2="{y:.1f}" stroke="#999"/>'
                   f'<text x="{_MARGIN - 6}" y="{y + 3:.1f}" text-anchor="end">{tick:g}</text>')
    front = pareto_front([(cost, score) for _, cost, score in shown])
    if len(front) > 1:
        steps = []
        for (cost, score), (next_cost, _) in zip(front, front[1:], strict=False):
            steps += [f"{x_of(cost):.1f},{y_of(score):.1f}", f"{x_of(next_cost):.1f},{y_of(score):.1f}"]
        steps.append(f"{x_of(front[-1][0]):.1f},{y_of(front[-1][1]):.1f}")
        out.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="#d62728" stroke-dasharray="3 2">'
                   f'<title>Pareto front: no model is better for less compute</title></polyline>')
    for label, cost, score in shown:
        colour = "#d62728" if (cost, score) in front else "#1f77b4"
        out.append(f'<circle cx="{x_of(cost):.1f}" cy="{y_of(score):.1f}" r="4" fill="{colour}"><title>'
                   f'{escape(label)}: {cost:.3g} GFLOPs, {100 * score:.1f}</title></circle>'
                   f'<text x="{x_of(cost) + 6:.1f}" y="{y_of(score) + 3:.1f}">{escape(label)}</text>')
    out.append(f'<text x="{_MARGIN + _PLOT / 2}" y="{height - 4}" text-anchor="middle">GFLOPs per image (log)</text>'
               f'<text x="11" y="{22 + _PLOT / 2}" text-anchor="middle" transform="rotate(-90 11 {22 + _PLOT / 2})">'
               f'mean target {escape(metric)} (%)</text></svg>')
    return "".join(out)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, score) points no other point dominates (as high a score for no more cost, better in one),
    by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or score > front[-1][1]:
            front.append((cost, score))
    return front
