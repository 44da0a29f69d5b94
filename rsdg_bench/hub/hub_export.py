"""`rsdg-bench results export`: result records as a Hugging Face Hub dataset repository (Parquet + card).

One row per record (a record holds one evaluated split): who (model, adapter, options, code identity,
checkpoint sha256, training status), what (task id, version, hash, kind, metric convention, dataset,
domain, split, manifest sha256), the headline metrics under the task's convention, each class's IoU, the
confusion matrix, and the provenance as JSON. The folder is laid out as a Hub dataset repo (the README's
`configs:` front matter points at `data/*.parquet`), so `datasets.load_dataset(folder)` reads it offline,
and `--push-to-hub ORG/NAME` uploads it through `huggingface_hub` (the optional `[hub]` extra).

Only records that pass their own checks are exported; the ones refused are listed, with the reason, in the
card. Numbers are recomputed from each record's matrix, never copied from its stored metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import atomic_write_bytes, atomic_write_text
from rsdg_bench.records.results import ResultRecord, ResultStore, metrics_block
from rsdg_bench.scoring.metrics import METRIC_NAMES

log = logging.getLogger(__name__)
DATA_FILE = "data/results-00000-of-00001.parquet"

SCHEMA = pa.schema([
    ("record_key", pa.string()), ("model", pa.string()), ("adapter", pa.string()), ("options", pa.string()),
    ("code_sha256", pa.string()), ("checkpoint_sha256", pa.string()), ("training_status", pa.string()),
    ("task_id", pa.string()), ("task_version", pa.int64()), ("task_hash", pa.string()), ("kind", pa.string()),
    ("convention", pa.string()), ("role", pa.string()), ("dataset", pa.string()), ("domain", pa.string()),
    ("split", pa.string()), ("num_samples", pa.int64()), ("manifest_sha256", pa.string()),
    *((name, pa.float64()) for name in METRIC_NAMES),
    ("class_names", pa.list_(pa.string())), ("iou", pa.list_(pa.float64())),
    ("confusion_matrix", pa.list_(pa.list_(pa.int64()))), ("smoke", pa.bool_()), ("random_init", pa.bool_()),
    ("harness_version", pa.string()), ("git_commit", pa.string()), ("date", pa.string()), ("provenance", pa.string()),
])


def record_row(record: ResultRecord) -> dict[str, Any]:
    """The export row of one record, its metrics recomputed from its confusion matrix."""
    [(slug, matrix)] = record.confusion_matrices.items()
    block = metrics_block(matrix, record.class_names, record.headline_classes, convention=record.convention,
                          ignored=record.ignored_predictions.get(slug))
    model, provenance = record.model, record.provenance
    return {
        "record_key": record.key, "model": model.display_name, "adapter": model.adapter,
        "options": json.dumps(model.options, sort_keys=True),
        "code_sha256": (model.code or {}).get("sha256"), "checkpoint_sha256": model.checkpoint.get("sha256"),
        "training_status": (model.training or {}).get("status"),
        "task_id": record.task.id, "task_version": record.task.version, "task_hash": record.task.hash,
        "kind": record.task.kind, "convention": record.convention, "role": record.evaluated.role,
        "dataset": record.evaluated.dataset, "domain": record.evaluated.domain, "split": record.evaluated.split,
        "num_samples": record.evaluated.num_samples, "manifest_sha256": provenance.dataset_manifest_sha256,
        **{name: block[name] for name in METRIC_NAMES},
        "class_names": record.class_names, "iou": [block["per_class"][c]["iou"] for c in record.class_names],
        "confusion_matrix": matrix, "smoke": record.smoke is not None,
        "random_init": bool(model.checkpoint.get("random_init")),
        "harness_version": provenance.harness_version, "git_commit": provenance.git_commit,
        "date": provenance.date, "provenance": json.dumps(provenance.model_dump(mode="json"), sort_keys=True),
    }


def export_results(results_root: Path, out: Path, progress: bool = False) -> tuple[Path, int, list[tuple[str, str]]]:
    """Write the Parquet file and the card into `out`; (folder, rows written, records refused with why).
    `progress`: a bar over the records as they are checked and turned into rows."""
    from tqdm.auto import tqdm

    store = ResultStore(Path(results_root))
    refused: list[tuple[str, str]] = []
    valid = list(tqdm(store.iter_valid(refused), total=len(store.paths()) if progress else None,
                      desc="exporting records", unit="record", disable=not progress))
    if not valid:
        raise RsdgError(f"no valid result records under {Path(results_root) / 'records'}"
                        + (f" ({len(refused)} refused)" if refused else ""),
                        "pass --results the folder `rsdg-bench run` wrote into")
    rows = [record_row(record) for _, record in valid]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    out = Path(out)
    atomic_write_bytes(out / DATA_FILE, sink.getvalue().to_pybytes())
    atomic_write_text(out / "README.md", _card(rows, refused))
    for path, why in refused:
        log.warning("not exported: %s: %s", path, why)
    return out, len(rows), refused


def _card(rows: list[dict[str, Any]], refused: list[tuple[str, str]]) -> str:
    tasks = sorted({r["task_id"] for r in rows})
    models = sorted({r["model"] for r in rows})
    lines = [
        "---", "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: data/*.parquet",
        "tags:", "- remote-sensing", "- domain-generalization", "- rsdg-bench", "---", "",
        "# rsdg-bench results", "",
        f"{len(rows)} result records ({len(models)} models, {len(tasks)} tasks) exported by `rsdg-bench results "
        "export`. One row per evaluated split: the model (adapter, options, code sha256, checkpoint sha256, "
        "training status against the task's protocol), the task (id, version, hash, metric convention), the data "
        "(dataset, domain, split, manifest sha256), mIoU / OA / AA / mDice (`mf1`) / mFscore "
        "(`mfscore`, classes never predicted right left out, as mmseg's) recomputed from the confusion matrix "
        "(fractions), per-class IoU, the matrix itself (rows = ground truth) and the provenance as JSON.", "",
        "```python", "from datasets import load_dataset", "results = load_dataset(\"path/or/org-name\")", "```", "",
        "Tasks: " + ", ".join(f"`{t}`" for t in tasks), "",
    ]
    if refused:
        lines += ["Records refused (not exported):", *[f"- `{p}`: {why}" for p, why in refused], ""]
    return "\n".join(lines)


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload the exported folder as a dataset repo; returns the repo URL. Needs `huggingface_hub` (the
    `[hub]` extra) and a token (`huggingface-cli login` or HF_TOKEN)."""
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise RsdgError("pushing to the Hub needs huggingface_hub", 'pip install "rsdg-bench[hub]"') from exc
    api = HfApi()
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                      commit_message="rsdg-bench results export")
    return str(url)
