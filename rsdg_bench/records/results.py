"""Result records: one JSON file per (model, checkpoint, task, evaluated split), written atomically.

A record keeps the raw confusion matrix, so every metric can be recomputed; loading a record recomputes
its metrics and refuses a record whose stored numbers disagree with its own matrix (hand-edited or
tampered). NaN metrics (a class with nothing to measure) are stored as JSON null.

Every record carries a content digest: the sha256 of its canonical JSON without the digest itself and
without `metrics` (those are recomputed from the matrices, and `results recompute` may rewrite them after a
metric fix). A hand edit of anything else (a smoke or random-init flag, a task hash, a count that keeps the
numbers consistent) no longer matches it and the record is refused as edited. The digest detects edits; it
is not a signature (anyone can recompute it), so trust in someone else's records comes from submission
verification, which recomputes and re-runs.

Layout: `<results>/records/<task id>/<resume key>.json`. The resume key hashes everything that can change
the number: task hash, adapter identity, checkpoint sha256, numeric inference spec, dataset manifest
sha256, the evaluated split, and the smoke-run limit.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import numbers
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from rsdg_bench import __version__
from rsdg_bench.base.bounded_json import loads_bounded
from rsdg_bench.base.errors import ResultsError, RsdgError
from rsdg_bench.base.io import atomic_write_text, canonical_json, sha256_bytes
from rsdg_bench.base.paths import SAFE_NAME, confined
from rsdg_bench.protocol.metric_table import CONVENTION_NAMES, CONVENTIONS, DEFAULT_CONVENTION
from rsdg_bench.scoring.metrics import GROUP_METRIC_NAMES, METRIC_NAMES, scores_from_confusion
from rsdg_bench.scoring.sparse_counts import SparseCountRows

SCHEMA_VERSION = 1
RECORDS_DIR = "records"
# Bounds a record's sizes must keep, so a hostile or broken record is refused before anything is allocated
# from its numbers (a `k` of 10^6 would ask for terabytes).
MAX_CLASSES = 1024
MAX_IMAGES = 10_000_000
MAX_RECORD_BYTES = 512 * 1024 * 1024


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


@cache
def git_commit() -> str:
    """Which code this harness is: the HEAD of the git checkout it runs from (`+dirty` with uncommitted
    changes to tracked files), else, for an installed copy outside any git work tree, the commit it was built
    from (setuptools-scm's short form, `g<hash>`, from `rsdg_bench._version`), else 'unknown' (a checkout
    whose git is missing or refuses it, whose files may have moved past the install's commit; a source tree
    without version metadata; `submission verify` refuses such records). The package must be a tracked file
    of the checkout: a copy installed into a virtual environment inside another git repository is not that
    repository (it falls to the built-from commit)."""
    from rsdg_bench import BUILT_FROM_COMMIT

    here = Path(__file__).resolve().parent
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "results.py"], cwd=here, capture_output=True,
                                 text=True, timeout=5, env={**os.environ, "LC_ALL": "C"})  # its message in English
        if tracked.returncode == 0:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5,
                                 check=True)
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5)
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        if "did not match" in tracked.stderr:  # inside another repository, untracked there: an installed copy
            return BUILT_FROM_COMMIT or "unknown"
    except (OSError, subprocess.SubprocessError):
        pass
    if any((parent / ".git").exists() for parent in (here, *here.parents)):
        return "unknown"  # a checkout whose git is missing or refuses it: its files may be past the install's
    return BUILT_FROM_COMMIT or "unknown"


class EvaluatedSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["source", "target"]
    dataset: str = Field(pattern=SAFE_NAME)  # one folder name under the data root: never a path (read from bundles)
    domain: str = Field(pattern=SAFE_NAME)
    split: str = Field(pattern=SAFE_NAME)
    num_samples: int
    published_samples: int | None = None  # the split's size in the full release, when the dataset publishes it
    accepted_samples: list[int] = []  # other sizes a source gives for the same split (card's published_alternatives)

    @property
    def slug(self) -> str:
        return f"{self.dataset}/{self.domain}/{self.split}"

    @property
    def partial_data(self) -> bool:
        """True when the split evaluated is not the published one (a fake, a partial download)."""
        return (self.published_samples is not None and self.num_samples != self.published_samples
                and self.num_samples not in self.accepted_samples)


class SampleIndex(BaseModel):
    """Which images a split's per-image matrices belong to, in their order, and the scene each was cut from
    (the source tile, area, city or place: the unit a bootstrap resamples, since windows of one scene are
    correlated). `scene_unit` names what a scene is for this split ("source file", "place", or "image"
    when every image is its own)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[str]
    scenes: list[str]
    scene_unit: str

    @property
    def num_scenes(self) -> int:
        return len(set(self.scenes))


class _Block(BaseModel):
    """A typed block of a record. Fields the harness writes are typed; a record written by another version
    may carry others (kept, `extra="allow"`). A block serializes exactly the keys it was given, so loading
    and writing a record changes nothing, and it still reads like the dict it used to be
    (`block["id"]`, `block.get("training")`) for code written against that."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Any) -> dict[str, Any]:
        given = self.model_fields_set | set(self.__pydantic_extra__ or {})
        return {key: value for key, value in handler(self).items() if key in given}

    def _has(self, key: str) -> bool:
        return key in self.model_fields_set or key in (self.__pydantic_extra__ or {})

    def __getitem__(self, key: str) -> Any:
        if not self._has(key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if self._has(key) else default

    def __contains__(self, key: str) -> bool:
        return self._has(key)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a Mapping's iteration: the keys given
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        return [key for key in self.model_dump(mode="python")]

    def items(self) -> list[tuple[str, Any]]:
        return [(key, getattr(self, key)) for key in self.keys()]


class TaskBlock(_Block):
    """What was evaluated: the task's identity, classes and headline, and the resolved task itself."""

    id: str
    name: str | None = None
    version: int | None = None
    hash: str | None = None
    suite: str | None = None
    gap: str | None = None
    kind: str = "segmentation"
    classes: str | None = None
    class_names: list[str] = []
    headline_classes: list[int] = []
    primary: str | None = None
    resolved: dict[str, Any] = {}


class ModelBlock(_Block):
    """Who was evaluated: adapter, options and code identity, the name shown, and the weights (`checkpoint`:
    path, sha256, random_init, in_memory) with how they were trained (`training`, see training_record.py)."""

    adapter: str | None = None
    options: dict[str, Any] = {}
    code: dict[str, Any] | None = None
    display_name: str | None = None
    peeks_at_labels: bool = False
    checkpoint: dict[str, Any] = {}
    training: dict[str, Any] | None = None


class ProvenanceBlock(_Block):
    """Where and from what it was computed: harness version and commit, task hash, data manifest, weights,
    the software and machine, the time taken and the date."""

    harness_version: str | None = None
    git_commit: str | None = None
    task_hash: str | None = None
    dataset_manifest_sha256: str | None = None
    checkpoint_sha256: str | None = None
    torch_version: str | None = None
    device: str | None = None
    world_size: int | None = None
    python: str | None = None
    platform: str | None = None
    wall_time_s: float | None = None
    date: str | None = None
    # How the counting ran (intra-op threads, loader workers, batch size, precision): speed settings, kept so
    # a figure can be traced to them (none of them changes a number at fp32).
    execution: dict[str, Any] | None = None
    # What decoded the stored files the inputs were read from (`prepared.raster_decoders`: JPEGs by Pillow's
    # libjpeg-turbo, the rest by GDAL), with versions: a stored JPEG is decoded at read time, so by this run
    decoders: dict[str, str] | None = None


class ResultRecord(BaseModel):
    """The on-disk record. `metrics` and `confusion_matrices` are keyed by the evaluated split's slug."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int
    key: str
    task: TaskBlock
    model: ModelBlock
    evaluated: EvaluatedSplit
    metrics: dict[str, dict[str, Any]]
    confusion_matrices: dict[str, list[list[int]]]
    inference: dict[str, Any]
    normalization: dict[str, Any]
    smoke: dict[str, Any] | None
    provenance: ProvenanceBlock
    per_image_matrices: dict[str, dict[str, Any]] = {}  # slug → `encode_per_image` (for bootstrap intervals)
    predictions: dict[str, list[dict[str, str]]] = {}  # slug → saved samples (`run --save-predictions`)
    groups: dict[str, list[str]] = {}  # slug → each image's group (place), in per-image order (classification)
    samples: dict[str, SampleIndex] = {}  # slug → each image's sample id and scene, in per-image order
    ignored_predictions: dict[str, list[int]] = {}  # slug → predictions on ignore-labelled pixels (smp, error)
    digest: str | None = None  # `record_digest` of the rest, set when the record is written

    @property
    def class_names(self) -> list[str]:
        return list(self.task.class_names)

    @property
    def headline_classes(self) -> list[int]:
        return list(self.task.headline_classes)

    @property
    def convention(self) -> str:
        """The task's metric convention (records made before conventions existed are mmseg)."""
        convention: str = self.task.resolved.get("metrics", {}).get("convention", DEFAULT_CONVENTION)
        return convention


def encode_per_image(matrices: SparseCountRows | Any, ignored: SparseCountRows | Any | None = None) -> dict[str, Any]:
    """Per-image confusion matrices (`SparseCountRows` of K·K-wide rows, or a dense N×K×K array) as a record
    stores them: `entries` = [image, row·K + column, count] for every non-zero cell, by image then cell, with
    N and K. With `ignored` (a K-vector per image: predictions on ignore-labelled pixels, kept for the smp
    convention's `ignored_pixels: error`), also `ignored_entries` = [image, class, count]."""
    rows = _as_rows(matrices)
    block = {"images": rows.rows, "k": math.isqrt(rows.width), "entries": rows.entries().tolist()}
    if ignored is not None:
        block["ignored_entries"] = _as_rows(ignored).entries().tolist()
    return block


def _as_rows(counts: SparseCountRows | Any) -> SparseCountRows:
    return counts if isinstance(counts, SparseCountRows) else SparseCountRows.from_dense(counts)


def decode_per_image(block: dict[str, Any], images: list[int] | None = None) -> np.ndarray:
    """The N×K×K int64 array back from `encode_per_image`'s form; with `images` (sorted, distinct), only
    those images' matrices, in that order (a few samples of a large split, without the whole split dense)."""
    k = block["k"]
    wanted = np.arange(block["images"]) if images is None else np.asarray(images, dtype=np.int64)
    out = np.zeros((len(wanted), k * k), dtype=np.int64)
    if len(block["entries"]):
        image, cell, count = entries_array(block["entries"]).T
        kept = np.isin(image, wanted)
        out[np.searchsorted(wanted, image[kept]), cell[kept]] = count[kept]
    return out.reshape(len(wanted), k, k)


def resume_key(*, task_hash: str, adapter_identity: dict[str, Any], checkpoint_sha256: str | None,
               inference: dict[str, Any], manifest_sha256: str, split_slug: str, role: str,
               limit: int | None) -> str:
    material = {"task": task_hash, "adapter": adapter_identity, "checkpoint": checkpoint_sha256,
                "inference": inference, "manifest": manifest_sha256, "split": split_slug, "role": role,
                "limit": limit}
    return sha256_bytes(canonical_json(material).encode())[:24]


def metrics_block(matrix: list[list[int]] | np.ndarray, class_names: list[str], headline: list[int],
                  per_image: dict[str, Any] | None = None, groups: list[str] | None = None,
                  convention: str = "mmseg", ignored: list[int] | None = None) -> dict[str, Any]:
    """The stored metrics of one confusion matrix (NaN as None), under the task's convention; the headline
    metrics under every other convention go to `other_conventions`. `ignored`: predictions on ignore-labelled
    pixels, counted only by the smp convention (`ignored_pixels: error`). With the per-image matrices and each
    image's group, also the per-group accuracy, its mean over groups and its worst group."""
    scores = scores_from_confusion(np.asarray(matrix), headline, convention,
                                   ignored if CONVENTIONS.get(convention).counts_ignored_predictions else None)
    per_class = {name: {k: _none_if_nan(v) if isinstance(v, float) else v for k, v in values.items()}
                 for name, values in scores.per_class(class_names).items()}
    block: dict[str, Any] = {**{k: _none_if_nan(v) for k, v in scores.headline().items()}, "per_class": per_class}
    if convention != DEFAULT_CONVENTION:  # records of mmseg tasks keep the form they always had
        block["convention"] = convention
    others = {}
    for other in CONVENTION_NAMES:
        if other != convention:
            values = scores_from_confusion(np.asarray(matrix), headline, other,
                                           ignored if CONVENTIONS.get(other).counts_ignored_predictions
                                           else None).headline()
            others[other] = {k: _none_if_nan(v) for k, v in values.items()}
    block["other_conventions"] = others
    if per_image is not None and groups is not None:
        by_group = group_accuracy(per_image, groups)
        accuracies = list(by_group.values())
        block.update(domain_acc=sum(accuracies) / len(accuracies) if accuracies else None,
                     worst_domain_acc=min(accuracies) if accuracies else None, group_acc=by_group)
    return block


def group_accuracy(per_image: dict[str, Any], groups: list[str]) -> dict[str, float]:
    """Accuracy (diagonal share of counts) of each group, from `encode_per_image` entries: for a
    classification split, the share of a country's images classified right. Groups in sorted order; images
    whose group is "" (no place known, or WILDS's catch-all "Other" region) count in no group."""
    if len(groups) != per_image["images"]:
        raise ResultsError(f"{len(groups)} groups for {per_image['images']} per-image matrices")
    k = per_image["k"]
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for image, cell, count in np.asarray(per_image["entries"], dtype=np.int64).reshape(-1, 3).tolist():
        name = groups[image]
        if not name:
            continue
        total[name] = total.get(name, 0) + count
        correct[name] = correct.get(name, 0) + (count if cell // k == cell % k else 0)
    return {name: correct[name] / total[name] for name in sorted(total)}


def provenance(*, task_hash: str, manifest_sha256: str, checkpoint_sha256: str | None, device: str,
               world_size: int, torch_version: str | None, wall_time_s: float, date: str,
               execution: dict[str, Any] | None = None) -> dict[str, Any]:
    from rsdg_bench.datasets.prepared import raster_decoders  # here: reading records needs neither rasterio nor Pillow
    return {
        "harness_version": __version__, "git_commit": git_commit(), "task_hash": task_hash,
        "dataset_manifest_sha256": manifest_sha256, "checkpoint_sha256": checkpoint_sha256,
        "torch_version": torch_version, "device": device, "world_size": world_size,
        "python": platform.python_version(),
        "platform": platform.platform(), "wall_time_s": round(wall_time_s, 3), "date": date,
        "decoders": raster_decoders(),
        **({"execution": execution} if execution else {}),
    }


class ResultStore:
    """The results folder: where records go, which exist, and loading them with checks."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, task_id: str, key: str) -> Path:
        return self.root / RECORDS_DIR / task_id / f"{key}.json"

    def exists(self, task_id: str, key: str) -> bool:
        return self.path_for(task_id, key).exists()

    def write(self, record: ResultRecord) -> Path:
        """Write `record` (stamped with its content digest) to its place in the folder."""
        path = self.path_for(record.task.id, record.key)
        record.digest = record_digest(record)
        write_record_file(path, record)
        return path

    def paths(self) -> list[Path]:
        folder = self.root / RECORDS_DIR
        return sorted(folder.rglob("*.json")) if folder.exists() else []

    def load(self, path: Path) -> ResultRecord:
        """One record of this folder, checked (`load_record`) and with every file it names inside the folder."""
        record = load_record(path)
        check_paths(record, path, self.root)
        return record

    def load_all(self) -> list[tuple[Path, ResultRecord]]:
        return [(path, self.load(path)) for path in self.paths()]

    def load_valid(self) -> tuple[list[tuple[Path, ResultRecord]], list[tuple[str, str]]]:
        """(the records that pass every check, [(path, why) for those that do not]): for readers that show
        what is sound and list the rest instead of stopping at the first bad file."""
        refused: list[tuple[str, str]] = []
        return list(self.iter_valid(refused)), refused

    def iter_valid(self, refused: list[tuple[str, str]]) -> Iterator[tuple[Path, ResultRecord]]:
        """`load_valid` as a stream: each record that passes every check as it is read, and (path, why) of
        each that does not appended to `refused`. A reader that keeps only a summary of each record (the
        leaderboard) then holds one record at a time, whatever the number of models."""
        for path in self.paths():
            try:
                record = self.load(path)
            except ResultsError as exc:
                refused.append((str(path), f"refused: {exc.problem}"))
                continue
            yield path, record


def compact_in_memory(record: ResultRecord) -> ResultRecord:
    """The record with its per-image entries as integer arrays (int32 where they fit) and its sample ids and
    scenes interned: for a reader that must hold many whole records at once (the verified bundles of a
    submissions folder), at a tenth of the memory of JSON lists. Do this after the record's checks: it is no
    longer what was written (its digest would not match)."""
    for block in record.per_image_matrices.values():
        for name in ("entries", "ignored_entries"):
            if name in block:
                entries = np.asarray(block[name], dtype=np.int64).reshape(-1, 3)
                block[name] = entries.astype(np.int32) if entries.size and entries.max() < 2 ** 31 else entries
    for samples in record.samples.values():
        samples.ids = [sys.intern(i) for i in samples.ids]
        samples.scenes = [sys.intern(s) for s in samples.scenes]
    return record


def parse_record_json(data: bytes, where: str) -> tuple[ResultRecord, dict[str, Any]]:
    """The validated record in `data` (a record file's bytes, or a bundle member's) and its parsed JSON; a
    record larger than a record can be, or not a record, is a ResultsError naming `where`."""
    fix = "delete it and re-run the task (it will be recomputed)"
    if len(data) > MAX_RECORD_BYTES:
        raise ResultsError(f"{where} is larger than a result record can be ({MAX_RECORD_BYTES >> 20} MiB)", fix)
    try:
        with _collector_paused():
            raw = loads_bounded(data if isinstance(data, bytes) else data.encode(), MAX_RECORD_BYTES)
            if not isinstance(raw, dict):
                raise ValueError(f"a JSON {type(raw).__name__}, not an object")
            return ResultRecord.model_validate(raw), raw
    except (ValueError, ValidationError, UnicodeDecodeError, RecursionError) as exc:
        raise ResultsError(f"{where} is not a valid result record: {exc}", fix) from exc


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a record is parsed. A record's per-image entries are tens of
    thousands of small JSON lists, and every few hundred new lists the collector ran, now and then over
    everything alive: a third of a 50-model leaderboard build (52 → 35 s CPU). Parsing makes no reference
    cycles, so there is nothing for it to find."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_record(path: Path) -> tuple[ResultRecord, dict[str, Any]]:
    """The validated record and the JSON it was parsed from (its size checked before it is read)."""
    try:
        if Path(path).stat().st_size > MAX_RECORD_BYTES:
            raise ResultsError(f"{path} is larger than a result record can be ({MAX_RECORD_BYTES >> 20} MiB)",
                               "delete it and re-run the task (it will be recomputed)")
        data = Path(path).read_bytes()
    except OSError as exc:  # a dangling link, a folder named *.json, an unreadable file
        raise ResultsError(f"{path} cannot be read as a result record: {exc.strerror or exc}",
                           "remove it from the records folder") from exc
    return parse_record_json(data, str(path))


def load_record(path: Path) -> ResultRecord:
    """Parse and validate a record, check its metrics against its confusion matrices, and its digest.

    The digest is first taken over the JSON as read: a record as written matches it, which spares
    re-serializing the validated model (the most expensive step of loading a large record). Otherwise the
    full checks run in order and name what is wrong."""
    record, raw = _parse_record(path)
    unedited = record.digest is not None and record.digest == _digest_of(raw)
    del raw
    if not unedited:  # an edit (or content the schema normalises): the full checks say what is wrong
        check_consistency(record, path)
        check_digest(record, path)
    else:
        check_bounds(record, path)
    if unedited:
        check_per_image(record, path)
        check_metrics(record, path)
    return record


def _digest_of(content: dict[str, Any]) -> str:
    """`record_digest` of a record's JSON content (the same value when the JSON is what was written)."""
    return sha256_bytes(canonical_json({k: v for k, v in content.items() if k not in ("digest", "metrics")}).encode())


def record_digest(record: ResultRecord) -> str:
    """The sha256 over the record's canonical JSON, leaving out the digest and the (recomputable) metrics."""
    content = record.model_dump(mode="json", exclude={"digest", "metrics"})
    return sha256_bytes(canonical_json(content).encode())


def check_digest(record: ResultRecord, path: Path | str) -> None:
    """Raise unless the record's stored digest is the digest of its content: it was not edited by hand."""
    fix = "delete the record and re-run the task (it will be recomputed)"
    if record.digest is None:
        raise ResultsError(f"{path} has no content digest (the field was removed by hand, or the record "
                           "predates digests)", fix)
    if record.digest != record_digest(record):
        raise ResultsError(f"{path} was edited after it was written: its content no longer matches its digest "
                           f"{record.digest[:12]}…", fix)


def check_bounds(record: ResultRecord, path: Path | str) -> None:
    """Raise unless every size and count in the record is in range: 1..MAX_CLASSES classes, headline classes
    among them, K×K matrices of non-negative counts, per-image blocks of at most MAX_IMAGES images whose
    entries index those images and cells. Checked before any number is computed from the record."""
    edited = "the record was edited or is corrupt"
    fix = "delete it and re-run the task (it will be recomputed)"
    k = len(record.class_names)
    if not 1 <= k <= MAX_CLASSES:
        raise ResultsError(f"{path}: {k} class names (1 to {MAX_CLASSES} allowed): {edited}", fix)
    if any(not 0 <= c < k for c in record.headline_classes):
        raise ResultsError(f"{path}: headline classes {record.headline_classes} are not among its {k} classes: "
                           f"{edited}", fix)
    if record.evaluated.num_samples < 0:
        raise ResultsError(f"{path}: {record.evaluated.num_samples} samples: {edited}", fix)
    for slug, matrix in record.confusion_matrices.items():
        if len(matrix) != k or any(len(row) != k for row in matrix):
            raise ResultsError(f"{path}: confusion matrix for {slug} is not {k}×{k}")
        if any(count < 0 for row in matrix for count in row):
            raise ResultsError(f"{path}: confusion matrix for {slug} holds a negative count: {edited}", fix)
    for slug, block in record.per_image_matrices.items():
        images, block_k = block.get("images"), block.get("k")
        if block_k != k or not isinstance(images, int) or not 0 <= images <= MAX_IMAGES:
            raise ResultsError(f"{path}: per-image matrices of {slug} claim {images} images of {block_k} classes "
                               f"(the record has {k}; at most {MAX_IMAGES} images): {edited}", fix)
        for name, cells in (("entries", k * k), ("ignored_entries", k)):
            bad = _out_of_range(block.get(name, []), images, cells)
            if bad is not None:
                raise ResultsError(f"{path}: per-image {name} of {slug} hold {bad}, out of range: {edited}", fix)


def _out_of_range(entries: Any, images: int, cells: int) -> Any:
    """The first [image, cell, count] entry that is malformed or out of range (None if all are sound),
    checked on an integer array of all of them at once."""
    if not len(entries):
        return None
    try:
        array = np.asarray(entries)
    except (ValueError, OverflowError, TypeError):  # ragged rows, numbers beyond int64
        return "malformed entries"
    if array.ndim != 2 or array.shape[1] != 3 or array.dtype.kind not in "iu":
        return f"entries of shape {array.shape} and type {array.dtype}"
    image, cell, count = array.T
    bad = (image < 0) | (image >= images) | (cell < 0) | (cell >= cells) | (count < 0)
    return array[np.argmax(bad)].tolist() if bad.any() else None


def check_paths(record: ResultRecord, path: Path, results_root: Path) -> None:
    """Raise unless every file the record names (its saved predictions) lies inside the results folder:
    a record must not make the site copy `/etc/passwd` or `../secret`."""
    for slug, saved in record.predictions.items():
        for entry in saved:
            for kind in ("image", "label", "prediction"):
                if kind in entry:
                    try:
                        confined(results_root, Path(path).parent / entry[kind], f"{path} ({slug} {kind})")
                    except RsdgError as exc:
                        raise ResultsError(exc.problem, exc.fix) from exc


def check_consistency(record: ResultRecord, path: Path | str) -> None:
    """Raise if a size is out of range (`check_bounds`), the per-image counts do not add up
    (`check_per_image`), or any stored metric differs from what the record's own confusion matrix gives
    (`check_metrics`)."""
    check_bounds(record, path)
    check_per_image(record, path)
    check_metrics(record, path)


def check_per_image(record: ResultRecord, path: Path | str) -> None:
    """Raise unless each split's per-image matrices sum to its confusion matrix, and its ignored-pixel counts
    and sample list have the sizes the record's classes and images give (run `check_bounds` first)."""
    k = len(record.class_names)
    fix = "delete the record and re-run the evaluation"
    for slug, matrix in record.confusion_matrices.items():
        if slug in record.per_image_matrices:
            summed = _summed_entries(record.per_image_matrices[slug])
            if summed.shape != (k, k) or not np.array_equal(summed, np.asarray(matrix)):
                raise ResultsError(f"{path}: the per-image matrices of {slug} do not add up to its confusion matrix: "
                                   "the record was edited", fix)
        ignored = record.ignored_predictions.get(slug)
        if ignored is not None and (len(ignored) != k or min(ignored, default=0) < 0):
            raise ResultsError(f"{path}: the ignored-pixel predictions of {slug} are not {k} counts: the record "
                               "was edited", fix)
        samples = record.samples.get(slug)
        images = record.per_image_matrices.get(slug, {}).get("images")
        if samples is not None and (len(samples.ids) != len(samples.scenes) or
                                    (images is not None and len(samples.ids) != images)):
            raise ResultsError(f"{path}: the sample list of {slug} does not match its per-image matrices: "
                               "the record was edited", fix)


def check_metrics(record: ResultRecord, path: Path | str) -> None:
    """Raise unless the stored metrics are what the record's own confusion matrices give (run `check_bounds`
    first): every headline and group metric the matrices give is stored (bar those added since records were
    first written, `_ADDED_LATER`), and every value stored (per class, under the other conventions, per group)
    equals the recomputed one. The metrics lie outside the digest, so this is what catches an edit of them, in
    whatever shape."""
    if set(record.metrics) != set(record.confusion_matrices):
        raise ResultsError(f"{path}: metrics and confusion matrices cover different splits")
    for slug in record.confusion_matrices:
        expected = _block_of(record, slug)
        stored = record.metrics[slug]
        required = [(name, stored.get(name, _ABSENT), expected[name]) for name in (*METRIC_NAMES, *GROUP_METRIC_NAMES)
                    if name in expected and not (name in _ADDED_LATER and name not in stored)]
        difference = next(((name, given, wanted) for name, given, wanted in required if not _same(given, wanted)),
                          None) or _difference(stored, expected, "")
        if difference is not None:
            name, given, wanted = difference
            raise ResultsError(
                f"{path}: stored {name} for {slug} is {_shown(given)} but its confusion matrix gives "
                f"{_shown(wanted)}: the record was edited",
                f"run `rsdg-bench results recompute {path}` to restore the numbers from the matrix, "
                "or delete the record and re-run",
            )


_ABSENT = object()  # a metric one side has and the other has not
# Headline metrics added after records were first written: a record written before may lack them, so they stay
# valid without a new schema version (`results recompute` adds them); one that is stored must be right.
_ADDED_LATER = frozenset({"mfscore"})


def _difference(stored: Any, expected: Any, where: str) -> tuple[str, Any, Any] | None:
    """The first place (a dotted name) where a stored metrics value differs from the recomputed one, with both
    values; None where everything stored is what the matrices give."""
    if isinstance(stored, dict) or isinstance(expected, dict):
        if not (isinstance(stored, dict) and isinstance(expected, dict)):
            return where, stored, expected
        for key, value in stored.items():
            found = _difference(value, expected.get(key, _ABSENT), f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None
    if isinstance(stored, (list, str)) or isinstance(expected, (list, str)):
        return None if stored == expected else (where, stored, expected)
    return None if _same(stored, expected) else (where, stored, expected)


def _shown(value: Any) -> str:
    text = "nothing" if value is _ABSENT else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def entries_array(entries: Any) -> np.ndarray:
    """Per-image [image, cell, count] entries as an N×3 int64 array. For entries `check_bounds` has passed
    (rows of three integers): a list of JSON lists is flattened in one pass, 2.4× faster than `np.asarray`."""
    if isinstance(entries, np.ndarray):
        return entries.astype(np.int64, copy=False).reshape(-1, 3)
    flat = np.fromiter(itertools.chain.from_iterable(entries), dtype=np.int64, count=3 * len(entries))
    return flat.reshape(-1, 3)


def _summed_entries(block: dict[str, Any]) -> np.ndarray:
    """The sum of `encode_per_image` matrices without building the N×K×K stack (cheap for many images)."""
    k = block["k"]
    if not len(block["entries"]):
        return np.zeros((k, k), dtype=np.int64)
    _, cell, count = entries_array(block["entries"]).T
    if cell.min() < 0 or cell.max() >= k * k:
        return np.full((0, 0), -1, dtype=np.int64)
    return np.bincount(cell, weights=count, minlength=k * k).astype(np.int64).reshape(k, k)


def _block_of(record: ResultRecord, slug: str) -> dict[str, Any]:
    """The metrics a record's own matrices give for one split (group metrics when it stores groups)."""
    groups = record.groups.get(slug)
    return metrics_block(record.confusion_matrices[slug], record.class_names, record.headline_classes,
                         record.per_image_matrices.get(slug) if groups is not None else None, groups,
                         record.convention, record.ignored_predictions.get(slug))


def _same(a: Any, b: Any) -> bool:
    if not all(v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool)) for v in (a, b)):
        return False  # a string or a structure where a number belongs (an edited record) is never the same
    a, b = _nan_if_none(a), _nan_if_none(b)
    return (math.isnan(a) and math.isnan(b)) or (not math.isnan(a) and not math.isnan(b) and abs(a - b) <= 1e-9)


def recompute(path: Path) -> ResultRecord:
    """Rewrite a record's metrics from its confusion matrices (after a metric fix, or a hand edit of a
    metric). Everything else must be as written: a record whose digest does not match is refused."""
    record, _ = _parse_record(path)
    check_bounds(record, path)
    check_digest(record, path)
    record.metrics = {slug: _block_of(record, slug) for slug in record.confusion_matrices}
    write_record_file(path, record)
    return record


def write_record_file(path: Path, record: ResultRecord) -> None:
    """A record as compact JSON (no indentation: the per-image entries of a large split are millions of small
    arrays, 3-4× larger and slower to read when each number has its own line), atomically. `results show`
    is the readable view."""
    atomic_write_text(path, json.dumps(record.model_dump(mode="json"), separators=(",", ":"), allow_nan=True) + "\n")

