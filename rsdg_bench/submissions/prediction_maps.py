"""Prediction maps: `predict` writes a model's predictions for every sample a task evaluates, `score` scores
them against the prepared labels with the engine `run` uses and writes the same record type.

This is the route for hidden labels (a contest's test split, DFC25's `sar/test`): the submitter needs the
inputs only (`predict` reads no label, so it works on a split whose labels were never published) and the
organizer, who prepared the split with its labels, scores the files. Maps are what `run` would have counted:
the same scorer makes them, so `predict` + `score` gives records whose confusion matrices equal `run`'s bit
for bit.

Layout of a predictions folder:
- `<dataset>/<domain>/<split>/<sample id>.png`: one uint8 map per sample, class indices 0..K-1; a GeoTIFF
  (`.tif`) with the sample's CRS and transform where the prepared sample is georeferenced, and for time
  series (one band per date);
- `<dataset>/<domain>/<split>/predictions.csv` (`sample_id,class_index`) for image-level (classification) tasks;
- `predictions.json`: the task (id, version, hash and its resolved definition), the model that predicted,
  and per split the digest of its inputs (sample ids and image sha256s), the dataset manifest, the sample
  ids and each file's sha256.

`score` refuses, naming the file: a task hash that is not the installed task's (with the fields that
changed), inputs other than the prepared ones, a missing, extra or repeated sample id, a file outside the
folder or changed since `predictions.json` was written, a file that is not a raster, a wrong shape or
dtype, a class index ≥ K (no task lets a pixel go unpredicted: 255 is refused too), and a CRS or transform
that is not the sample's.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import __version__
from ..data import SegmentationSplit, TaskData
from ..data_lock import reading
from ..distributed import ProcessGroup
from ..bounded_json import loads_bounded
from ..errors import AdapterError, RsdgError, SubmissionError
from ..evaluation import SplitCounts, evaluate_split_counts
from ..folder_swap import swap_in
from ..io import atomic_write_bytes, atomic_write_json, canonical_json, sha256_bytes
from ..kinds import require_adapter_kind
from ..metrics import confusion_counts
from ..paths import confined
from ..results import ResultRecord, ResultStore, git_commit, resume_key
from ..runner import ModelSpec, RunSettings, default_name, load_for_task, model_block, record_from_evaluation
from ..task_schema import Task
from .task_changes import changed_fields

PREDICTIONS_FILE = "predictions.json"
CLASS_TABLE = "predictions.csv"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 256 * 1024 * 1024  # one prediction file (a 1024² map is 1 MiB raw)


class PredictedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # relative to the predictions folder
    sha256: str


class SplitPredictions(BaseModel):
    """One evaluated split's predictions: `map` (one file per sample, in `sample_ids` order) or `class`
    (one CSV for all samples)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["source", "target"]
    dataset: str
    domain: str
    split: str
    form: Literal["map", "class"]
    inputs_sha256: str
    manifest_sha256: str
    sample_ids: list[str]
    files: list[PredictedFile]

    @property
    def slug(self) -> str:
        return f"{self.dataset}/{self.domain}/{self.split}"


class PredictionSet(BaseModel):
    """`predictions.json`."""

    model_config = ConfigDict(extra="forbid")
    format_version: int
    task: dict[str, Any]
    model: dict[str, Any]
    normalization: dict[str, Any]
    splits: list[SplitPredictions]
    harness_version: str
    git_commit: str
    date: str


def inputs_sha256(split: SegmentationSplit) -> str:
    """The digest of what a model sees of a split: its sample ids with their images' sha256s, in order. Equal
    for the public and the organizer's preparation of a split (labels differ, inputs do not)."""
    pairs = [[str(i), str(s)] for i, s in zip(split.rows["sample_id"], split.rows["image_sha256"], strict=True)]
    return sha256_bytes(canonical_json(pairs).encode())


def _form(split: SegmentationSplit) -> Literal["map", "class"]:
    return "class" if split.prepared.card.label_level == "image" else "map"


def _check_sample_id(sample_id: str, where: str) -> str:
    if not sample_id or "/" in sample_id or "\\" in sample_id or sample_id.startswith("."):
        raise SubmissionError(f"{where}: sample id {sample_id!r} cannot name a file",
                              "sample ids are file stems without folders")
    return sample_id


# --------------------------------------------------------------------------- writing maps

def encode_map(planes: np.ndarray, georef: tuple[str, Any] | None) -> tuple[bytes, str]:
    """P×H×W uint8 class indices → (file bytes, suffix): PNG for one plane without georeferencing, else a
    GeoTIFF (deflate) carrying the CRS and transform when given."""
    from rasterio.io import MemoryFile

    from ..prepared import quiet_georef

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
        self.form = _form(split)
        self.files: dict[str, PredictedFile] = {}
        self.classes: dict[str, int] = {}

    def __call__(self, sample: dict, prediction: torch.Tensor) -> None:
        sample_id = _check_sample_id(str(sample["sample_id"]), self.split.ref.slug)
        if self.form == "class":
            self.classes[sample_id] = int(prediction.reshape(-1)[0])
            return
        array = prediction.numpy().astype(np.uint8, copy=False)
        planes = array[None] if array.ndim == 2 else array
        data, suffix = encode_map(planes, self.split.prepared.georeference(self.rows[sample_id]))
        path = self.folder / f"{sample_id}{suffix}"
        atomic_write_bytes(path, data)
        self.files[sample_id] = PredictedFile(path=path.relative_to(self.root).as_posix(), sha256=sha256_bytes(data))

    def result(self, role: str, manifest_sha256: str) -> SplitPredictions:
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
                 window_batch: int = 1) -> Path:
    """Write the predictions folder `out` for every split `run` would evaluate (targets, and the source split
    where the task reports it), reading inputs only. The folder is built beside `out` and swapped in whole;
    `out` must be absent, empty or an earlier predictions folder (`output_owner.claim_folder`)."""
    from ..allocator import keep_freed_blocks
    from ..output_owner import claim_folder
    from ..registry import resolve_adapter

    keep_freed_blocks()  # a command's own process: freed large buffers stay in the heap (see `allocator`)

    out = claim_folder(Path(out), PREDICTIONS_FILE, "an rsdg-bench predictions folder")  # before any work
    require_adapter_kind(task, resolve_adapter(model.adapter))
    data = TaskData(Path(data_root), task, phase="evaluate")
    adapter, weights = load_for_task(model, task, data, Path(results_root))
    if adapter.peeks_at_labels:
        raise AdapterError(f"adapter {adapter.name} chooses with the labels (an oracle): it has no predictions of "
                           "its own to submit", "predict with a model that reads the inputs only")
    adapter.to(device)
    staging = out.parent / f".{out.name}.partial"
    _clear(staging)
    splits = []
    for role, ref in task.evaluation_splits():
        prepared = data.prepared(ref.dataset)
        with reading(data.data_root, ref.dataset):
            split = data.open(ref, labelled=False)
            writer = _SplitWriter(staging.joinpath(*ref.slug.split("/")), staging, split)
            evaluate_split_counts(adapter, split, task, device, num_workers, progress, ProcessGroup(), window_batch,
                                  writer)
        splits.append(writer.result(role, prepared.manifest_sha256))
    display = model.display_name or default_name(adapter)
    atomic_write_json(staging / PREDICTIONS_FILE, PredictionSet(
        format_version=FORMAT_VERSION,
        task={"id": task.id, "version": task.version, "hash": task.hash, "resolved": task.model_dump(mode="json")},
        model=model_block(adapter, weights, display), normalization=adapter.input_contract().record(),
        splits=splits, harness_version=__version__, git_commit=git_commit(),
        date=datetime.now(UTC).isoformat(timespec="seconds")).model_dump(mode="json"))
    swap_in(staging, out)
    return out


def _clear(folder: Path) -> None:
    import shutil

    if folder.exists():
        shutil.rmtree(folder)


# --------------------------------------------------------------------------- scoring

def load_prediction_set(folder: Path) -> tuple[PredictionSet, str]:
    """`predictions.json` of a folder, validated, and its sha256."""
    path = Path(folder) / PREDICTIONS_FILE
    fix = "give the folder `rsdg-bench predict` wrote (it ends with predictions.json)"
    if not path.is_file():
        raise SubmissionError(f"no {PREDICTIONS_FILE} in {folder}", fix)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SubmissionError(f"{path} is larger than a predictions manifest can be", fix)
    data = path.read_bytes()
    try:
        return PredictionSet.model_validate(loads_bounded(data, MAX_FILE_BYTES)), sha256_bytes(data)
    except (ValueError, UnicodeDecodeError, ValidationError, RecursionError) as exc:
        raise SubmissionError(f"{path} is not a valid predictions manifest: {exc}", fix) from exc


def check_task_version(task: Task, given: dict[str, Any], where: str) -> None:
    """Raise unless `given` (a task id, hash and resolved definition) is the installed task's definition."""
    if given.get("hash") == task.hash:
        return
    changes = changed_fields(given.get("resolved") or {}, task.model_dump(mode="json"))
    raise SubmissionError(
        f"{where} was made for another definition of {task.id} (hash {str(given.get('hash'))[:12]}, installed "
        f"{task.hash[:12]}); changed: {', '.join(changes) or 'the definition (not recorded)'}",
        "predict again with the installed task (or install the harness version the predictions were made with)")


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
    settings = RunSettings(Path(data_root), Path(results_root), progress=progress)
    records: list[ResultRecord] = []
    for predicted in given.splits:
        role, ref = expected[predicted.slug]
        prepared = data.prepared(ref.dataset)
        started = time.perf_counter()
        with reading(data.data_root, ref.dataset):
            split = data.open(ref)
            counts = _count_split(task, split, predicted, folder, progress)
        model = {**given.model, "scored_from": {"predictions_sha256": manifest_sha, "form": predicted.form}}
        key = resume_key(task_hash=task.hash, adapter_identity={"predictions": manifest_sha},
                         checkpoint_sha256=given.model.get("checkpoint", {}).get("sha256"),
                         inference=task.inference.model_dump(mode="json"), manifest_sha256=prepared.manifest_sha256,
                         split_slug=ref.slug, role=role, limit=None)
        records.append(record_from_evaluation(
            key=key, task=task, model=model, normalization=given.normalization, role=role, split=split,
            card=prepared.card, manifest_sha256=prepared.manifest_sha256, counts=counts, predictions=None,
            settings=settings, wall_time_s=time.perf_counter() - started))
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
    if predicted.form != _form(split):
        raise SubmissionError(f"{slug}: predictions are of form {predicted.form!r}; this split needs {_form(split)!r}",
                              "predict again with `rsdg-bench predict`")
    if predicted.form == "class":
        if len(predicted.files) != 1:
            raise SubmissionError(f"{slug}: a classification split has one {CLASS_TABLE}, not "
                                  f"{len(predicted.files)} files", "predict again with `rsdg-bench predict`")
        classes = _read_class_table(folder, predicted.files[0], ids, k)
        for index, sample_id in enumerate(ids):
            label = torch.from_numpy(np.asarray(split.label(index))).reshape(1)
            counts.put(index, *confusion_counts(label, torch.tensor([classes[sample_id]], dtype=torch.uint8), k))
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
        counts.put(index, *confusion_counts(torch.from_numpy(label), torch.from_numpy(prediction), k))
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
    from ..untrusted_raster import open_untrusted_raster

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
