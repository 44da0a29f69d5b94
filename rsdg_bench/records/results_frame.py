"""Result records as a pandas DataFrame: one row per record × evaluated split, for notebooks and scripts.

Columns: what was evaluated (task id, version and hash, kind, split, data manifest), by what (model
name, adapter, options, code and weights sha256, training verdict), the headline metrics under the task's
convention (`mf1` is mmseg's mDice, `mfscore` its mFscore), and `iou/<class>`, `f1/<class>` and
`recall/<class>` (the class's accuracy) per class of the task's schema. Metrics are recomputed from each
record's confusion matrix, as every reader of records does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rsdg_bench.records.results import ResultRecord, metrics_block
from rsdg_bench.scoring.metrics import METRIC_NAMES

PER_CLASS = ("iou", "f1", "recall")


def record_rows(record: ResultRecord, path: Path | None = None) -> list[dict[str, Any]]:
    """The rows of one record (one per split it evaluated)."""
    rows = []
    model, provenance = record.model, record.provenance
    for slug, matrix in record.confusion_matrices.items():
        block = metrics_block(matrix, record.class_names, record.headline_classes, convention=record.convention,
                              ignored=record.ignored_predictions.get(slug))
        row: dict[str, Any] = {
            "task_id": record.task.id, "task_version": record.task.version, "task_hash": record.task.hash,
            "kind": record.task.kind, "suite": record.task.suite, "role": record.evaluated.role,
            "split": slug, "num_samples": record.evaluated.num_samples,
            "manifest_sha256": provenance.dataset_manifest_sha256,
            "model": model.display_name, "adapter": model.adapter,
            "options": json.dumps(model.options, sort_keys=True),
            "code_sha256": (model.code or {}).get("sha256"),
            "weights_sha256": model.checkpoint.get("sha256"),
            "training_status": (model.training or {}).get("status"),
            "convention": record.convention, "smoke": record.smoke is not None,
            **{name: block[name] for name in METRIC_NAMES},
        }
        for measure in PER_CLASS:
            for name, values in block["per_class"].items():
                row[f"{measure}/{name}"] = values.get(measure)
        row.update(record_key=record.key, path=str(path) if path is not None else None)
        rows.append(row)
    return rows


def records_frame(records: Sequence[tuple[Path | None, ResultRecord]]) -> pd.DataFrame:
    """All rows of `records` ((path or None, record) pairs) in one frame, sorted by task, model and split."""
    rows = [row for path, record in records for row in record_rows(record, path)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["task_id", "model", "split"], kind="stable").reset_index(drop=True)
