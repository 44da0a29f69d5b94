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

This module holds the format; `predict_maps.py` writes it (with the model stack), `score_maps.py` scores it
(without: neither torch nor a model is loaded). `score` refuses, naming the file: a task hash that is not the
installed task's (with the fields that changed), inputs other than the prepared ones, a missing, extra or
repeated sample id, a file outside the folder or changed since `predictions.json` was written, a file that is
not a raster, a wrong shape or dtype, a class index ≥ K (no task lets a pixel go unpredicted: 255 is refused
too), a CRS or transform that is not the sample's, and a model block that is not a record's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rsdg_bench.base.bounded_json import loads_bounded
from rsdg_bench.base.errors import SubmissionError
from rsdg_bench.base.io import canonical_json, sha256_bytes
from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.records.results import ModelBlock
from rsdg_bench.submissions.task_changes import changed_fields

if TYPE_CHECKING:
    from rsdg_bench.protocol.task_data import SegmentationSplit

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
    model: ModelBlock  # the record's model block, typed: a submitter's file is data of any shape
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


def split_form(split: SegmentationSplit) -> Literal["map", "class"]:
    return "class" if split.prepared.card.label_level == "image" else "map"


def check_sample_id(sample_id: str, where: str) -> str:
    if not sample_id or "/" in sample_id or "\\" in sample_id or sample_id.startswith("."):
        raise SubmissionError(f"{where}: sample id {sample_id!r} cannot name a file",
                              "sample ids are file stems without folders")
    return sample_id


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
        given = PredictionSet.model_validate(loads_bounded(data, MAX_FILE_BYTES))
    except (ValueError, UnicodeDecodeError, ValidationError, RecursionError) as exc:
        raise SubmissionError(f"{path} is not a valid predictions manifest: {exc}", fix) from exc
    checkpoint = given.model.checkpoint
    if not isinstance(checkpoint.get("sha256"), str | None) or not isinstance(checkpoint.get("random_init", False), bool):
        raise SubmissionError(f"{path} is not a valid predictions manifest: model.checkpoint names its weights "
                              f"with a sha256 {checkpoint.get('sha256')!r} and random_init "
                              f"{checkpoint.get('random_init')!r}", fix)
    return given, sha256_bytes(data)


def check_task_version(task: Task, given: dict[str, Any], where: str) -> None:
    """Raise unless `given` (a task id, hash and resolved definition) is the installed task's definition."""
    if given.get("hash") == task.hash:
        return
    changes = changed_fields(given.get("resolved") or {}, task.model_dump(mode="json"))
    raise SubmissionError(
        f"{where} was made for another definition of {task.id} (hash {str(given.get('hash'))[:12]}, installed "
        f"{task.hash[:12]}); changed: {', '.join(changes) or 'the definition (not recorded)'}",
        "predict again with the installed task (or install the harness version the predictions were made with)")
