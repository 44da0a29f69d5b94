"""`score`: prediction maps (the format of `prediction_maps.py`) checked against the prepared labels and
counted into the same records `run` writes. Imports no torch and loads no model: the maps are data, read as
PNG or GeoTIFF only (`untrusted_raster`), with bounds.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from rsdg_bench.base.errors import RsdgError, SubmissionError
from rsdg_bench.base.io import sha256_bytes
from rsdg_bench.base.paths import confined
from rsdg_bench.datasets.data_lock import reading
from rsdg_bench.protocol.task_data import SegmentationSplit, TaskData
from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.records.record_building import RunContext, record_from_evaluation
from rsdg_bench.records.results import ResultRecord, ResultStore, resume_key
from rsdg_bench.scoring.metrics import confusion_counts
from rsdg_bench.scoring.split_counts import SplitCounts
from rsdg_bench.submissions.prediction_maps import (
    CLASS_TABLE,
    MAX_FILE_BYTES,
    PREDICTIONS_FILE,
    PredictedFile,
    SplitPredictions,
    check_task_version,
    inputs_sha256,
    load_prediction_set,
    split_form,
)


def score_predictions(task: Task, folder: Path, data_root: Path, results_root: Path,
                      progress: bool = True) -> list[Path]:
    """Validate a predictions folder against the prepared data and write one record per split (marked
    `scored_from: predictions`); returns the records' paths. Nothing is written unless every split passes."""
    folder = Path(folder)
    given, manifest_sha = load_prediction_set(folder)
    where = str(folder / PREDICTIONS_FILE)
    if given.task.get("id") != task.id:
        raise SubmissionError(f"{where} holds predictions for task {given.task.get('id')!r}, not {task.id}",
                              f"score them with --task {given.task.get('id')}")
    check_task_version(task, given.task, where)
    expected = {ref.slug: (role, ref) for role, ref in task.evaluation_splits()}
    named = [s.slug for s in given.splits]
    if len(set(named)) != len(named) or set(named) - set(expected):
        raise SubmissionError(f"{where} names splits {named}; {task.id} evaluates {sorted(expected)}",
                              "predict again with `rsdg-bench predict`")
    missing = [slug for slug, (role, _) in expected.items() if role == "target" and slug not in named]
    if missing:
        raise SubmissionError(f"{where} has no predictions for {', '.join(missing)}",
                              "predict every target split of the task")
    data = TaskData(Path(data_root), task, phase="evaluate")
    records: list[ResultRecord] = []
    for predicted in given.splits:
        role, ref = expected[predicted.slug]
        prepared = data.prepared(ref.dataset)
        started = time.perf_counter()
        with reading(data.data_root, ref.dataset):
            split = data.open(ref)
            counts = _count_split(task, split, predicted, folder, progress)
        model = {**given.model.model_dump(mode="json"), "checkpoint": dict(given.model.checkpoint),
                 "scored_from": {"predictions_sha256": manifest_sha, "form": predicted.form}}
        key = resume_key(task_hash=task.hash, adapter_identity={"predictions": manifest_sha},
                         checkpoint_sha256=given.model.checkpoint.get("sha256"),
                         inference=task.inference.model_dump(mode="json"), manifest_sha256=prepared.manifest_sha256,
                         split_slug=ref.slug, role=role, limit=None)
        try:
            records.append(record_from_evaluation(
                key=key, task=task, model=model, normalization=given.normalization, role=role, split=split,
                card=prepared.card, manifest_sha256=prepared.manifest_sha256, counts=counts, predictions=None,
                context=RunContext(), wall_time_s=time.perf_counter() - started))
        except ValidationError as exc:  # what predictions.json declares does not make a record: the file's fault
            raise SubmissionError(f"{folder / PREDICTIONS_FILE} declares a model or normalization no result record "
                                  f"can hold: {str(exc).splitlines()[0]}",
                                  "predict again with `rsdg-bench predict`") from exc
    store = ResultStore(Path(results_root))
    return [store.write(record) for record in records]


def _count_split(task: Task, split: SegmentationSplit, predicted: SplitPredictions, folder: Path,
                 progress: bool) -> SplitCounts:
    """Per-sample confusion matrices of the split from the prediction files, after every check."""
    from tqdm.auto import tqdm

    slug = split.ref.slug
    if predicted.inputs_sha256 != inputs_sha256(split):
        raise SubmissionError(
            f"the predictions for {slug} were made on other inputs than the prepared {split.ref.dataset} here "
            f"(data manifest {predicted.manifest_sha256[:12]} there, {split.prepared.manifest_sha256[:12]} here)",
            f"predict on the same release: prepare {split.ref.dataset} from the published download")
    ids = [str(i) for i in split.rows["sample_id"]]
    _check_ids(predicted.sample_ids, ids, slug)
    k = task.class_schema.num_classes
    counts = SplitCounts.empty(len(ids), k)
    if predicted.form != split_form(split):
        raise SubmissionError(f"{slug}: predictions are of form {predicted.form!r}; this split needs {split_form(split)!r}",
                              "predict again with `rsdg-bench predict`")
    if predicted.form == "class":
        if len(predicted.files) != 1:
            raise SubmissionError(f"{slug}: a classification split has one {CLASS_TABLE}, not "
                                  f"{len(predicted.files)} files", "predict again with `rsdg-bench predict`")
        classes = _read_class_table(folder, predicted.files[0], ids, k)
        for index, sample_id in enumerate(ids):
            label = np.asarray(split.label(index)).reshape(1)
            counts.put(index, *confusion_counts(label, np.array([classes[sample_id]], dtype=np.uint8), k))
        return counts
    if len(predicted.files) != len(predicted.sample_ids):
        raise SubmissionError(f"{slug}: {len(predicted.files)} files for {len(predicted.sample_ids)} sample ids",
                              "predict again with `rsdg-bench predict`")
    by_id = dict(zip(predicted.sample_ids, predicted.files, strict=True))
    rows = split.rows.to_dict("records")
    for index, sample_id in enumerate(tqdm(ids, desc=f"score {slug}", unit="img", leave=False, disable=not progress)):
        label = np.asarray(split.label(index))
        planes = _read_map(folder, by_id[sample_id], label, k, split.prepared.georeference(rows[index]))
        prediction = planes[0] if label.ndim == 2 else planes
        counts.put(index, *confusion_counts(label, prediction, k))
    return counts


def _check_ids(given: list[str], expected: list[str], slug: str) -> None:
    from collections import Counter

    given_set, expected_set = set(given), set(expected)
    repeated = (sorted(i for i, n in Counter(given).items() if n > 1)  # linear: a long list of repeats is cheap
                if len(given_set) != len(given) else [])
    missing = sorted(expected_set - given_set)
    extra = sorted(given_set - expected_set)
    for what, ids in (("repeated", repeated), ("missing", missing), ("extra (not in the split)", extra)):
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            raise SubmissionError(f"{slug}: {len(ids)} sample ids {what}: {shown}",
                                  f"predict every sample of {slug} exactly once (`rsdg-bench predict` does)")


def _verified_bytes(folder: Path, entry: PredictedFile) -> tuple[Path, bytes]:
    """A listed file's bytes, after checking it lies inside the folder, is a file of sane size, and is the
    file `predictions.json` names (its sha256)."""
    try:
        path = confined(folder, entry.path, f"{PREDICTIONS_FILE} entry")
    except RsdgError as exc:
        raise SubmissionError(exc.problem, "list files inside the predictions folder, by relative path") from exc
    if not path.is_file():
        raise SubmissionError(f"{path} is missing", "predict again; keep the predictions folder whole")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SubmissionError(f"{path} is larger than a prediction file can be ({MAX_FILE_BYTES >> 20} MiB)",
                              "write uint8 maps (`rsdg-bench predict` does)")
    data = path.read_bytes()
    if sha256_bytes(data) != entry.sha256:
        raise SubmissionError(f"{path} changed after {PREDICTIONS_FILE} was written (its sha256 differs)",
                              "predict again; do not edit the files by hand")
    return path, data


@contextmanager
def _raster(path: Path, data: bytes) -> Iterator[Any]:
    """The map's bytes opened as PNG or GeoTIFF only, reading nothing else (see `untrusted_raster`)."""
    from rsdg_bench.datasets.untrusted_raster import open_untrusted_raster

    with open_untrusted_raster(data, str(path)) as src:
        yield src


def _read_map(folder: Path, entry: PredictedFile, label: np.ndarray, k: int,
              georef: tuple[str, Any] | None) -> np.ndarray:
    """P×H×W uint8 class indices of one prediction file, checked against the sample's label and georeference."""
    from rasterio.crs import CRS

    path, data = _verified_bytes(folder, entry)
    expected = (1, *label.shape) if label.ndim == 2 else tuple(label.shape)
    with _raster(path, data) as src:
        shape = (src.count, src.height, src.width)
        if shape != expected:
            raise SubmissionError(f"{path} is {'×'.join(map(str, shape))} (bands×height×width); the sample's label is "
                                  f"{'×'.join(map(str, expected))}", "write one map per sample at the label's size "
                                                                      "(one band per date for a time series)")
        if any(dtype != "uint8" for dtype in src.dtypes):
            raise SubmissionError(f"{path} holds {src.dtypes[0]} values; prediction maps are uint8 class indices",
                                  "write uint8 maps")
        if georef is not None:
            crs, transform = georef
            if src.crs is None or CRS.from_user_input(crs) != src.crs or not src.transform.almost_equals(transform):
                raise SubmissionError(f"{path} has CRS {src.crs} and transform {tuple(src.transform)[:6]}; the sample "
                                      f"has {crs} and {tuple(transform)[:6]}",
                                      "write each map as a GeoTIFF with the sample's CRS and transform")
        planes = src.read()
    high = int(planes.max()) if planes.size else 0
    if high >= k:
        raise SubmissionError(f"{path} holds class index {high}; the task has {k} classes (0..{k - 1}), and no "
                              "pixel may go unpredicted", "predict a class for every pixel")
    return planes


def _read_class_table(folder: Path, entry: PredictedFile, ids: list[str], k: int) -> dict[str, int]:
    path, data = _verified_bytes(folder, entry)
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SubmissionError(f"{path} is not a UTF-8 CSV table: {exc}", "write sample_id,class_index rows") from exc
    if not rows or rows[0] != ["sample_id", "class_index"]:
        raise SubmissionError(f"{path} does not start with the header sample_id,class_index",
                              "write sample_id,class_index rows")
    classes: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[1].isdigit() or int(row[1]) >= k:
            raise SubmissionError(f"{path} line {number}: {row} is not a sample id and a class index 0..{k - 1}",
                                  "write sample_id,class_index rows")
        if row[0] in classes:
            raise SubmissionError(f"{path} line {number}: sample {row[0]} is listed twice", "list each sample once")
        classes[row[0]] = int(row[1])
    _check_ids(list(classes), ids, str(path))
    return classes
