"""`predict`: a model's prediction maps for every sample a task evaluates, written in the format of
`prediction_maps.py` (the same scorer `run` counts with makes them), reading inputs only.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdg_bench import __version__
from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.folder_swap import swap_in
from rsdg_bench.base.io import atomic_write_bytes, atomic_write_json, sha256_bytes
from rsdg_bench.datasets.data_lock import reading
from rsdg_bench.datasets.read_ahead import ReadThreads
from rsdg_bench.evaluator.evaluation import evaluate_split_counts
from rsdg_bench.models.graph_compile import compile_module
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.models.registry import require_adapter_kind
from rsdg_bench.protocol.task_data import SegmentationSplit, TaskData
from rsdg_bench.protocol.task_schema import Role, Task
from rsdg_bench.records.results import ModelBlock, git_commit
from rsdg_bench.run.runner import check_precision, default_name, display_name_at, load_for_task, model_block, precision_block
from rsdg_bench.submissions.prediction_maps import (
    CLASS_TABLE,
    FORMAT_VERSION,
    PREDICTIONS_FILE,
    PredictedFile,
    PredictionSet,
    SplitPredictions,
    check_sample_id,
    inputs_sha256,
    split_form,
)


def encode_map(planes: np.ndarray, georef: tuple[str, Any] | None) -> tuple[bytes, str]:
    """P×H×W uint8 class indices → (file bytes, suffix): PNG for one plane without georeferencing, else a
    GeoTIFF (deflate) carrying the CRS and transform when given."""
    from rasterio.io import MemoryFile

    from rsdg_bench.datasets.prepared import quiet_georef

    png = georef is None and planes.shape[0] == 1
    profile = {"driver": "PNG" if png else "GTiff", "count": planes.shape[0], "height": planes.shape[1],
               "width": planes.shape[2], "dtype": "uint8", **({} if png else {"compress": "deflate"})}
    if georef is not None:
        profile.update(crs=georef[0], transform=georef[1])
    with quiet_georef(), MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(planes)
        return memory.read(), ".png" if png else ".tif"


class _SplitWriter:
    """The `on_prediction` callback of one split: each prediction written as it is made."""

    def __init__(self, folder: Path, root: Path, split: SegmentationSplit) -> None:
        self.folder, self.root, self.split = folder, root, split
        self.rows = {str(row["sample_id"]): row for row in split.rows.to_dict("records")}
        self.form = split_form(split)
        self.files: dict[str, PredictedFile] = {}
        self.classes: dict[str, int] = {}

    def __call__(self, sample: dict, prediction: torch.Tensor) -> None:
        sample_id = check_sample_id(str(sample["sample_id"]), self.split.ref.slug)
        if self.form == "class":
            self.classes[sample_id] = int(prediction.reshape(-1)[0])
            return
        array = prediction.numpy().astype(np.uint8, copy=False)
        planes = array[None] if array.ndim == 2 else array
        data, suffix = encode_map(planes, self.split.prepared.georeference(self.rows[sample_id]))
        path = self.folder / f"{sample_id}{suffix}"
        atomic_write_bytes(path, data)
        self.files[sample_id] = PredictedFile(path=path.relative_to(self.root).as_posix(), sha256=sha256_bytes(data))

    def result(self, role: Role, manifest_sha256: str) -> SplitPredictions:
        ids = [str(i) for i in self.split.rows["sample_id"]]
        if self.form == "class":
            buffer = io.StringIO()
            table = csv.writer(buffer, lineterminator="\n")
            table.writerow(["sample_id", "class_index"])
            table.writerows([i, self.classes[i]] for i in ids)
            path = self.folder / CLASS_TABLE
            data = buffer.getvalue().encode()
            atomic_write_bytes(path, data)
            files = [PredictedFile(path=path.relative_to(self.root).as_posix(), sha256=sha256_bytes(data))]
        else:
            files = [self.files[i] for i in ids]
        ref = self.split.ref
        return SplitPredictions(role=role, dataset=ref.dataset, domain=ref.domain, split=ref.split, form=self.form,
                                inputs_sha256=inputs_sha256(self.split), manifest_sha256=manifest_sha256,
                                sample_ids=ids, files=files)


def predict_task(task: Task, model: ModelSpec, data_root: Path, results_root: Path, out: Path,
                 device: torch.device = torch.device("cpu"), num_workers: int = 0, progress: bool = True,
                 window_batch: int = 1, batch_size: int = 1, precision: str = "fp32",
                 compile_backend: str | None = None, read_threads: ReadThreads | None = None) -> Path:
    """Write the predictions folder `out` for every split `run` would evaluate (targets, and the source split
    where the task reports it), reading inputs only. The folder is built beside `out` and swapped in whole;
    `out` must be absent, empty or an earlier predictions folder (`output_owner.claim_folder`).

    `window_batch`, `batch_size`, `precision`, `compile_backend` and `read_threads` are `run`'s: the first two and
    the last change speed only; a precision other than fp32 is named in the model block, so records scored from
    these maps say so as `run`'s records do; compiling changes speed, and may flip a pixel at a class boundary
    (`graph_compile`)."""
    from rsdg_bench.base.allocator import keep_freed_blocks
    from rsdg_bench.base.output_owner import claim_folder
    from rsdg_bench.models.registry import resolve_adapter

    keep_freed_blocks()  # a command's own process: freed large buffers stay in the heap (see `allocator`)

    out = claim_folder(Path(out), PREDICTIONS_FILE, "an rsdg-bench predictions folder")  # before any work
    require_adapter_kind(task, resolve_adapter(model.adapter))
    data = TaskData(Path(data_root), task, phase="evaluate")
    adapter, weights = load_for_task(model, task, data, Path(results_root))
    if adapter.peeks_at_labels:
        raise AdapterError(f"adapter {adapter.name} chooses with the labels (an oracle): it has no predictions of "
                           "its own to submit", "predict with a model that reads the inputs only")
    check_precision(adapter, precision, device)
    adapter.to(device)
    if compile_backend is not None:
        compile_module(adapter, compile_backend)
    staging = out.parent / f".{out.name}.partial"
    _clear(staging)
    splits = []
    for role, ref in task.evaluation_splits():
        prepared = data.prepared(ref.dataset)
        with reading(data.data_root, ref.dataset):
            split = data.open(ref, labelled=False)
            writer = _SplitWriter(staging.joinpath(*ref.slug.split("/")), staging, split)
            evaluate_split_counts(adapter, split, task, device, num_workers=num_workers, progress=progress,
                                  window_batch=window_batch, on_prediction=writer, batch_size=batch_size,
                                  precision=precision, read_threads=read_threads)
        splits.append(writer.result(role, prepared.manifest_sha256))
    display = display_name_at(model.display_name or default_name(adapter), precision)
    atomic_write_json(staging / PREDICTIONS_FILE, PredictionSet(
        format_version=FORMAT_VERSION,
        task={"id": task.id, "version": task.version, "hash": task.hash, "resolved": task.model_dump(mode="json")},
        model=ModelBlock.model_validate(model_block(adapter, weights, display) | precision_block(precision)),
        normalization=adapter.input_contract().record(),
        splits=splits, harness_version=__version__, git_commit=git_commit(),
        date=datetime.now(UTC).isoformat(timespec="seconds")).model_dump(mode="json"))
    swap_in(staging, out)
    return out


def _clear(folder: Path) -> None:
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
