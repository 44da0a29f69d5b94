"""Figures for the site, drawn by matplotlib and embedded as inline SVG (no image files, no network).

Text drawn into the SVG is kept as SVG text elements only for numbers; labels pass through matplotlib,
which escapes them as XML, so names from records cannot inject markup.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

# Labels are names from records: drawn as plain text, never parsed as mathtext (`$\frac{1}{$` would raise).
plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "text.parse_math": False})


def _svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML


def heatmap_svg(values: np.ndarray, row_labels: list[str], col_labels: list[str], *, title: str,
                xlabel: str, ylabel: str, cmap: str = "Blues", fmt: str = "{:.1f}", vmax: float = 100.0) -> str:
    """A labelled heatmap (colour scale 0..vmax, the same for every figure of a kind, so they compare) with
    each cell's value written in it; NaN cells are left blank."""
    rows, cols = values.shape
    figure, axes = plt.subplots(figsize=(1.2 + 0.55 * cols, 0.9 + 0.45 * rows))
    masked = np.ma.masked_invalid(values)
    axes.imshow(masked, cmap=cmap, vmin=0, vmax=vmax)
    axes.set_xticks(range(cols), labels=col_labels, rotation=45, ha="right")
    axes.set_yticks(range(rows), labels=row_labels)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    for i in range(rows):
        for j in range(cols):
            if not math.isnan(values[i, j]):
                axes.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if values[i, j] > 0.6 * vmax else "black")
    return _svg(figure)


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
