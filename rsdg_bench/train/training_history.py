"""The loss and selection history of a `train` run, written beside its checkpoint.

`<checkpoint>.history.json` (everything), `<checkpoint>.history.csv` (one row per iteration: loss, and the
selection metric where it was measured) and `<checkpoint>.history.svg` (a small matplotlib plot, which the
leaderboard's task page shows). The history travels in the resumable training state, so a resumed run
writes the same history as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rsdg_bench.base.io import atomic_write_bytes, atomic_write_text

SUFFIXES = (".history.json", ".history.csv", ".history.svg")


@dataclass
class TrainingHistory:
    """Loss per iteration and the selection metric at each selection point."""

    task_id: str
    metric: str
    loss: list[float] = field(default_factory=list)  # loss[i] is iteration i + 1
    selection: list[dict[str, float]] = field(default_factory=list)  # {"iteration", "value"}
    selected_iteration: int | None = None

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict, iterations: int) -> TrainingHistory:
        """The history saved in a training state, cut to the iterations that state had done."""
        history = cls(**state)
        history.loss = history.loss[:iterations]
        history.selection = [s for s in history.selection if s["iteration"] <= iterations]
        return history


def history_paths(checkpoint: Path) -> dict[str, Path]:
    return {suffix.rsplit(".", 1)[1]: checkpoint.with_name(checkpoint.name + suffix) for suffix in SUFFIXES}


def write_history(history: TrainingHistory, checkpoint: Path) -> dict[str, Path]:
    """Write the JSON, CSV and SVG beside `checkpoint`; return their paths by format."""
    paths = history_paths(checkpoint)
    atomic_write_text(paths["json"], json.dumps(history.to_state(), indent=1) + "\n")
    by_iteration = {int(s["iteration"]): s["value"] for s in history.selection}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["iteration", "loss", f"selection_{history.metric}"])
    for index, loss in enumerate(history.loss, start=1):
        value = by_iteration.get(index)
        writer.writerow([index, repr(loss), "" if value is None else repr(value)])
    atomic_write_text(paths["csv"], out.getvalue())
    atomic_write_bytes(paths["svg"], _plot(history))
    return paths


def _plot(history: TrainingHistory) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(5, 2.6), dpi=100)
    try:
        loss_axis.plot(range(1, len(history.loss) + 1), history.loss, color="#4c72b0", linewidth=1, label="loss")
        loss_axis.set_xlabel("iteration")
        loss_axis.set_ylabel("loss", color="#4c72b0")
        if history.selection:
            select_axis = loss_axis.twinx()
            select_axis.plot([s["iteration"] for s in history.selection], [s["value"] for s in history.selection],
                             "o-", color="#dd8452", markersize=3, linewidth=1)
            select_axis.set_ylabel(f"selection {history.metric}", color="#dd8452")
        if history.selected_iteration is not None:
            loss_axis.axvline(history.selected_iteration, color="#999999", linestyle=":", linewidth=1)
        loss_axis.set_title(history.task_id, fontsize=9)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg")
        return buffer.getvalue()
    finally:
        plt.close(figure)
