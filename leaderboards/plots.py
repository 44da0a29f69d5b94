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
