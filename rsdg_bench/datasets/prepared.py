"""The canonical prepared-data format: writing it atomically, and reading it back with checks.

Layout of `<data root>/<dataset>/`:

- `dataset.json`  the dataset card (:class:`DatasetCard`): classes, bands, domains, split counts, the
  source archives with sha256, and the sha256 of the manifest;
- `manifest.parquet`  one row per sample (GeoParquet with a `geometry` footprint when georeferenced);
- `<domain>/<split>/images/<sample_id>.tif` and `.../labels/<sample_id>.tif`: lossless GeoTIFF, zstd-compressed
  in 256² tiles (PNG for a plain single-band 8-bit plane without georeferencing, such as most labels; a
  JPEG source image is kept as its own bytes); labels are single-band uint8, 255 = ignore.

Two card fields widen the sample for the other task kinds (DESIGN's "kind"):

- `timesteps` (ISO dates, one per frame): the image is a time series stored time-major as T·C bands
  (frame 0's C bands, then frame 1's, …; the card's band list names the C bands of one frame), and the
  label is T-band, one map per date. A frame missing from the series is stored as zeros with an all-ignore
  label, so it is never scored.
- `label_level: image`: one class per sample (classification). The class index is the manifest's `target`
  column; there is no label file (`label` and `label_sha256` are null).

The manifest's `group` column names the place a sample comes from (city, area, country) when the dataset's
domains of generalization are finer than its prepared domains: scores per group, and leakage checks, use it.

A prepare writes into `<data root>/.<dataset>.partial/`, recording each finished sample in
`rows.jsonl`. A crashed prepare resumes from there (samples whose files still hash right are kept);
only when every count and hash checks out is the folder renamed into place, so a half-finished prepare
is never mistaken for a finished one.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pandas as pd
import rasterio
from pydantic import BaseModel, ConfigDict, ValidationError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from rsdg_bench import __version__
from rsdg_bench.base.errors import DataError
from rsdg_bench.base.folder_swap import recover_swap, swap_in
from rsdg_bench.base.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_interrupted_writes,
    sha256_bytes,
    sha256_file,
)
from rsdg_bench.datasets.classes import IGNORE_INDEX, ClassSchema
from rsdg_bench.datasets.data_lock import publishing, reading
from rsdg_bench.datasets.leakage import split_overlaps

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: RGB images as zstd tiled GeoTIFF (were PNG), GeoTIFFs zstd tiled (were deflate);
# 3: GeoTIFFs of at most SMALL_RASTER px a side in strips (were one padded 256² tile)
SMALL_RASTER = 128
CARD_FILE = "dataset.json"
MANIFEST_FILE = "manifest.parquet"
_ROWS_FILE = "rows.jsonl"
_FINGERPRINT_FILE = "fingerprint.json"

MANIFEST_COLUMNS = [
    "sample_id", "domain", "split", "image", "label", "height", "width", "source_file",
    "window", "image_sha256", "label_sha256", "class_counts", "crs", "group", "target",
]


class BandInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str
    units: str


class DomainInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str
    bands: list[BandInfo]
    gsd_m: float | None = None


class SourceArchive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sha256: str
    size: int


class DatasetCard(BaseModel):
    """`dataset.json`: everything a result needs to cite about the data it was computed on."""

    model_config = ConfigDict(extra="forbid")
    name: str
    format_version: int
    prep_version: int
    harness_version: str
    citation: str
    licence: str
    classes: ClassSchema
    ignore_index: int
    domains: dict[str, DomainInfo]
    split_counts: dict[str, dict[str, int]]
    source_archives: list[SourceArchive]
    crs: str | None = None
    manifest_sha256: str
    created: str
    published_counts: dict[str, dict[str, int]] = {}
    # domain → split → {source: count}: other sizes a paper or release gives for the same split (CromSS's paper
    # says 1,372 OSM training tiles, its README 1,375); a split of either size is the published one
    published_alternatives: dict[str, dict[str, dict[str, int]]] = {}
    notes: list[str] = []
    unlabelled: list[str] = []  # "domain/split" whose labels are not public: inputs only, never scored
    footprint_overlaps: dict[str, int] = {}  # "domain: split/split" → overlapping sample pairs (leakage audit)
    domain_classes: dict[str, ClassSchema] = {}  # domains labelled in another class space than `classes`
    timesteps: list[str] = []  # acquisition date of each frame: the samples are time series (module docstring)
    label_level: Literal["pixel", "image"] = "pixel"  # "image": one class per sample, in the manifest's `target`
    group_regions: dict[str, str] = {}  # group → the coarser region holding it (FMoW: country → continent)
    # what decoded the raw files (`raster_decoders`): a JPEG decoded by another library gives other pixels
    decoders: dict[str, str] = {}

    def classes_of(self, domain: str) -> ClassSchema:
        """The class schema of one domain's labels."""
        return self.domain_classes.get(domain, self.classes)

    def accepted_counts(self, domain: str, split: str) -> list[int]:
        """The sizes a split may have and still be the published one: the published count and its alternatives."""
        published = self.published_counts.get(domain, {}).get(split)
        alternatives = self.published_alternatives.get(domain, {}).get(split, {})
        return ([] if published is None else [published]) + sorted(set(alternatives.values()) - {published})

    def count_mismatches(self) -> list[str]:
        """`domain/split: got N, published M` for every split whose size is none of its accepted sizes."""
        mismatches = []
        for domain, splits in self.published_counts.items():
            for split, n in splits.items():
                got = self.split_counts.get(domain, {}).get(split, 0)
                if got not in self.accepted_counts(domain, split):
                    others = self.accepted_counts(domain, split)[1:]
                    mismatches.append(f"{domain}/{split}: {got} samples, published {n}"
                                      + (f" (or {', '.join(map(str, others))})" if others else ""))
        return mismatches


@dataclass
class SampleArrays:
    """One sample ready to write: image C×H×W (any dtype), label H×W uint8 class indices.

    A time-series dataset gives image (T·C)×H×W, time-major, and label T×H×W; an image-level dataset gives a
    0-d uint8 label (the class). `group` is the place the sample belongs to (see the module docstring).

    `crs` overrides the dataset's CRS for this sample (datasets spanning UTM zones). `image_copy_from`
    stores that file's bytes as the image instead of re-encoding `image` (which must be its decoded
    content): for a lossy source such as JPEG, a lossless re-encode would only triple its size.
    """

    sample_id: str
    domain: str
    split: str
    image: np.ndarray
    label: np.ndarray
    source_file: str
    window: tuple[int, int, int, int]
    transform: Affine | None = None
    crs: str | None = None
    image_copy_from: Path | None = None
    group: str | None = None


def raster_suffix(array: np.ndarray, transform: Affine | None) -> str:
    """Lossless format choice, by measured decode time (README, Performance): PNG for a plain single-band 8-bit
    plane without georeferencing (a label: the smallest file and the fastest decode, 0.4 ms at 1024²), else a
    zstd-compressed GeoTIFF, tiled unless it is a small patch (an RGB image at 1024² decodes in 4 ms against
    PNG's 13 ms and deflate GeoTIFF's 13 ms, at about 1.4× PNG's size, and encodes 9× faster than PNG)."""
    plain = transform is None and array.dtype == np.uint8 and array.shape[0] == 1
    return ".png" if plain else ".tif"


def _write_raster(path: Path, array: np.ndarray, transform: Affine | None, crs: str | None,
                  quiet: bool = True) -> None:
    """Write C×H×W `array` losslessly in the format its file suffix names. GDAL encodes into memory and the
    bytes go to disk through an ordinary fsynced write, which raises on a full disk (GDAL's own writer does
    not always), and whose size is checked; the manifest then hashes the bytes on disk."""
    bands, height, width = array.shape
    use_png = path.suffix == ".png"
    profile: dict[str, Any] = {
        "driver": "PNG" if use_png else "GTiff", "height": height, "width": width, "count": bands,
        "dtype": array.dtype.name,
    }
    if not use_png:
        # GDAL's 256² blocks: decoded block by block, in cache. A small patch (OSCD's 75² ones) would fill a
        # whole padded block: in strips it encodes in 0.5–0.65 of the time and decodes in 0.75–0.97; at 200 px
        # a strip decodes slower, at 256 px it is slower both ways (bench/small_rasters.py)
        profile.update(compress="zstd", tiled=max(height, width) > SMALL_RASTER)
        if transform is not None:
            profile.update(transform=transform, crs=crs)
    try:
        with rasterio.Env(), quiet_georef() if quiet else nullcontext(), MemoryFile(ext=path.suffix) as memory:
            with memory.open(**profile) as dst:
                dst.write(array)
            encoded = memory.read()
        atomic_write_bytes(path, encoded)
        if path.stat().st_size != len(encoded):
            raise OSError(errno.EIO, "the file on disk is shorter than the bytes written to it")
    except (RasterioError, OSError) as exc:
        raise write_error(path, exc) from exc


def write_error(path: Path, exc: BaseException) -> DataError:
    """A failed write as an error that names the file, the cause, and the space left where it was going."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MiB free there"
    except OSError:
        free = "its folder cannot be read"
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    readonly = isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    fix = ("the folder is read-only or not yours: point --data-root (or RSDG_DATA) at a writable one" if readonly else
           "free space there (or point --data-root / RSDG_DATA elsewhere) and re-run: the samples written so "
           "far are kept" if full else "check the disk (full? failing?) and re-run: the samples written so far are kept")
    return DataError(f"cannot write {path}: {reason} ({free})", fix)


def quiet_georef_everywhere() -> None:
    """Silence the not-georeferenced warning for the whole process (once): `quiet_georef` swaps the global
    warning filters in and out, which threads writing at once must not do."""
    import warnings

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


class quiet_georef:
    """PNGs and plain tiles have no georeferencing by design; rasterio's warning about it is noise."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", NotGeoreferencedWarning)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._ctx.__exit__(exc_type, exc, traceback)


# The most pixels (height × width) a raw image may have before it is decoded: a raw file's header is read first,
# so a small file that claims a huge size (a decompression bomb) is refused before memory is spent on it. Each
# preparer sets the limit for its dataset (`Preparer.max_raw_pixels`, raised with `prepare --max-pixels`).
RAW_PIXEL_LIMIT: ContextVar[int] = ContextVar("raw_pixel_limit", default=64 * 2 ** 20)


def _check_pixel_count(src: rasterio.DatasetReader, path: str | Path) -> None:
    limit = RAW_PIXEL_LIMIT.get()
    if src.width * src.height > limit:
        raise DataError(f"{path} claims {src.width}×{src.height} pixels, more than the {limit:,} a raw image of this "
                        "dataset may have (a corrupt or hostile file, or not from this release)",
                        "check the file; if the release really has images this large, raise the limit with "
                        "`rsdg-bench prepare NAME --max-pixels N`")


def read_raster(path: str | Path, fix: str | None = None) -> np.ndarray:
    """Read every band of a raster as C×H×W in its stored dtype; an unreadable file is a DataError naming it
    (with `fix` as the remedy, e.g. re-extracting a raw download; by default the prepared-data one)."""
    try:
        with quiet_georef(), rasterio.open(path) as src:
            array: np.ndarray = src.read()
            return array
    except RasterioError as exc:
        raise DataError(f"cannot read raster {path}: {exc}",
                        fix or "the file is missing or corrupt; `rsdg-bench prepare NAME --verify` checks a "
                               "prepared dataset, and re-running prepare rewrites it") from exc


def read_raw_raster(path: str | Path, fix: str = "the file is corrupt or truncated; re-extract the raw download"
                    ) -> np.ndarray:
    """`read_raster` for a file of a raw download, which may be cut short: GDAL decodes a truncated PNG or
    JPEG without an error (the missing rows come back as zeros), so those are checked to be complete first
    (a PNG's chunks and their CRCs up to IEND; a JPEG's end-of-image marker). A TIFF cut short fails to
    read, which `read_raster` reports.

    A JPEG is decoded by libjpeg-turbo through Pillow, as the papers' pipelines decode it (cv2 in mmcv/mmseg,
    PIL, `torchvision.io`: bit for bit the same), not by GDAL, whose chroma upsampling of 4:2:0 files gives
    other pixel values (measured: 8-33 % of values, by up to 11 DN, on camera-like files)."""
    path = Path(path)
    with open_raster(path, fix) as src:  # opening reads the header: a size beyond the limit is refused here
        suffix = path.suffix.lower()
        if suffix == ".png":
            from PIL import Image

            try:
                with Image.open(path) as image:
                    image.verify()
            except Exception as exc:  # Pillow raises SyntaxError, OSError, struct.error ... for a broken PNG
                raise DataError(f"{path} is not a complete PNG ({exc})", fix) from exc
        elif suffix in JPEG_SUFFIXES:
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - 2))
                if handle.read() != b"\xff\xd9":
                    raise DataError(f"{path} is not a complete JPEG (no end-of-image marker)", fix)
            return decode_jpeg(path, path, fix)
        array: np.ndarray = src.read()
        return array


JPEG_SUFFIXES = (".jpg", ".jpeg")


def raster_decoders() -> dict[str, str]:
    """The libraries and versions `read_raw_raster` decodes raw files with, as the dataset card records them:
    JPEGs by Pillow's libjpeg-turbo, everything else by GDAL through rasterio."""
    import PIL
    from PIL import features

    turbo = features.version("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
    jpeg = f"Pillow {PIL.__version__} with " + (f"libjpeg-turbo {turbo}" if turbo else
                                                 f"libjpeg {features.version('jpg')} (not libjpeg-turbo)")
    return {"jpeg": jpeg, "other": f"GDAL {rasterio.__gdal_version__} through rasterio {rasterio.__version__}"}


def decode_jpeg(source: Path | io.BytesIO, path: Path, fix: str) -> np.ndarray:
    """A JPEG (a file, or its bytes) as C×H×W uint8, decoded by Pillow's libjpeg-turbo as the papers' pipelines
    decode it (`read_raw_raster`); `path` names it in errors. Its size was checked from the header first."""
    from PIL import Image

    try:
        with Image.open(source) as image:
            if image.format != "JPEG" or image.mode not in ("L", "RGB"):
                raise DataError(f"{path} is a {image.format} file of mode {image.mode}; a raw JPEG here is "
                                "8-bit grey or RGB", fix)
            array = np.asarray(image)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, DecompressionBombError ... for a bad file
        raise DataError(f"cannot decode the JPEG {path} ({type(exc).__name__}: {exc})", fix) from exc
    return array[None].copy() if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def read_raw_mask(path: str | Path, fix: str = "the file is not a mask from this release; re-extract the raw download"
                  ) -> np.ndarray:
    """A raw index mask as H×W uint8, checked to be one band of uint8 (a colour or 16-bit file is not taken
    for one by reading its first band)."""
    planes = read_raw_raster(path)
    if planes.shape[0] != 1 or planes.dtype != np.uint8:
        raise DataError(f"{path} is {planes.dtype} with {planes.shape[0]} bands; a mask of class indices is one "
                        "band of uint8", fix)
    mask: np.ndarray = planes[0]
    return mask


@contextmanager
def open_raster(path: str | Path, fix: str = "the file is corrupt or truncated; re-extract the raw download"
                ) -> Iterator[rasterio.DatasetReader]:
    """A raster opened for reading (georeferencing warnings quiet); failing to open or read it inside the
    block is a DataError naming the file, with `fix` as the remedy. For reads that need the transform or
    CRS too; `read_raster` reads the pixels only. A raster larger than `RAW_PIXEL_LIMIT` is refused unread."""
    try:
        with quiet_georef(), rasterio.open(path) as src:
            _check_pixel_count(src, path)
            yield src
    except RasterioError as exc:
        raise DataError(f"cannot read raster {path}: {exc}", fix) from exc


def raster_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a raster, from its header only."""
    try:
        with quiet_georef(), rasterio.open(path) as src:
            return src.height, src.width
    except RasterioError as exc:
        raise DataError(f"cannot read raster {path}: {exc}", "the file is missing or corrupt; re-extract it") from exc


class PreparedWriter:
    """Writes one prepared dataset into a partial folder, then publishes it atomically.

    `fingerprint` identifies the inputs (prep version, source hashes, options). A partial folder left by
    a crashed run with the same fingerprint is resumed; with another fingerprint it is discarded.

    With `workers` > 1, each sample's encoding, writing and hashing runs on a pool of threads (GDAL and
    hashlib release the GIL: GeoTIFF writes scale with the cores; PNG writes do not) while the caller reads
    on. Checks stay in `add`, in the caller's order, and rows are journaled strictly in that order, each only
    once its files are on disk and hashed: the journal, the manifest and every file are the same bytes as
    with one worker, and a crash leaves what a crash of the serial writer leaves.
    """

    def __init__(self, data_root: Path, name: str, schema: ClassSchema, fingerprint: dict[str, Any],
                 crs: str | None = None, domain_schemas: dict[str, ClassSchema] | None = None,
                 timesteps: list[str] | None = None, label_level: Literal["pixel", "image"] = "pixel",
                 domains: dict[str, DomainInfo] | None = None, workers: int = 1) -> None:
        self.data_root = Path(data_root)
        self.domains = domains  # when given, every image is checked against its domain's bands and dtype
        self.name = name
        self.schema = schema
        self.domain_schemas = domain_schemas or {}
        self.timesteps = list(timesteps or [])
        self.label_level = label_level
        self.crs = crs
        self.final_dir = self.data_root / name
        self.work_dir = self.data_root / f".{name}.partial"
        self._rows: dict[str, dict[str, Any]] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"prepare-{name}") if workers > 1 else None
        self._pending: deque[tuple[str, Future[dict[str, Any]]]] = deque()
        self._in_flight = 2 * workers  # samples written ahead of the journal at most (bounds the memory held)
        if self._pool is not None:
            quiet_georef_everywhere()
        self._open_work_dir(fingerprint)

    def _open_work_dir(self, fingerprint: dict[str, Any]) -> None:
        fingerprint = {**fingerprint, "format_version": FORMAT_VERSION}  # files of another format are not resumed
        stamp = self.work_dir / _FINGERPRINT_FILE
        if self.work_dir.exists():
            previous = json.loads(stamp.read_text()) if stamp.exists() else None
            if previous == fingerprint:
                removed = remove_interrupted_writes(self.work_dir)  # files a kill left between write and rename
                self._rows = self._load_verified_rows()
                log.info("%s: resuming an interrupted prepare, %d samples kept, %d half-written files removed",
                         self.name, len(self._rows), removed)
            else:
                log.info("%s: discarding an interrupted prepare made from other inputs", self.name)
                shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stamp, fingerprint)
        self._rows_handle = open(self.work_dir / _ROWS_FILE, "a", encoding="utf-8")

    def _load_verified_rows(self) -> dict[str, dict[str, Any]]:
        """Rows of a crashed run whose files are still there and hash right (others are redone)."""
        rows_path = self.work_dir / _ROWS_FILE
        kept: dict[str, dict[str, Any]] = {}
        if not rows_path.exists():
            return kept
        for line in rows_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a crash cut short
            if all(_file_intact(self.work_dir, rel, sha) for rel, sha in _stored_files(row)):
                kept[row["sample_id"]] = row
        # Rewrite the journal with only what survived, so it stays the truth.
        atomic_write_text(rows_path, "".join(json.dumps(r) + "\n" for r in kept.values()))
        return kept

    @property
    def resumed_count(self) -> int:
        return len(self._rows)

    def has(self, sample_id: str) -> bool:
        """True when a previous, interrupted run already wrote this sample correctly."""
        return sample_id in self._rows

    def add(self, sample: SampleArrays) -> None:
        """Write one sample's image and label and journal its manifest row. Sample ids are unique in a dataset,
        across domains and splits: another sample under a written id is an error, never a silent overwrite (the
        same sample written again, as a resumed preparer may do, replaces its row)."""
        first = self._rows.get(sample.sample_id)
        if first is not None and (first["domain"], first["split"], first["source_file"], first["window"]) != (
                sample.domain, sample.split, sample.source_file, list(sample.window)):
            raise DataError(f"sample id {sample.sample_id!r} of {sample.domain}/{sample.split} (from "
                            f"{sample.source_file}) was already given to {first['domain']}/{first['split']} (from "
                            f"{first['source_file']}): sample ids must be unique in a dataset",
                            "make the preparer's ids include what tells the two apart (e.g. the split); "
                            "the prep module's make_fake can reproduce the case")
        label = sample.label
        self._check_shapes(sample)
        self._check_bands(sample)
        schema = self.domain_schemas.get(sample.domain, self.schema)
        counts = np.bincount(label.ravel(), minlength=256)
        bad = np.flatnonzero(counts[schema.num_classes:IGNORE_INDEX])
        if bad.size:
            raise DataError(
                f"label of {sample.sample_id} (from {sample.source_file}) holds values "
                f"{(bad + schema.num_classes).tolist()} outside the {schema.num_classes} classes of "
                f"{schema.id!r} and not the ignore index {IGNORE_INDEX}",
                "check the dataset's label mapping in prep/",
            )
        rel_dir = Path(sample.domain) / sample.split
        image_suffix = (sample.image_copy_from.suffix.lower() if sample.image_copy_from is not None
                        else raster_suffix(sample.image, sample.transform))
        label_planes = label.reshape((-1, *label.shape[-2:])) if label.ndim else None  # 1 or T planes
        image_rel = rel_dir / "images" / f"{sample.sample_id}{image_suffix}"
        label_rel = (rel_dir / "labels" / f"{sample.sample_id}{raster_suffix(label_planes, sample.transform)}"
                     if label_planes is not None else None)
        for rel in (image_rel, label_rel):
            if rel is not None:
                (self.work_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        crs = sample.crs or self.crs
        write = partial(self._write_sample, sample, image_rel, label_rel, label_planes, crs, counts, schema)
        if self._pool is None:
            self._journal(write())
            return
        self._rows[sample.sample_id] = {"domain": sample.domain, "split": sample.split,  # until it is journaled
                                        "source_file": sample.source_file, "window": list(sample.window)}
        self._pending.append((sample.sample_id, self._pool.submit(write)))
        self._journal_done(keep=self._in_flight)

    def _write_sample(self, sample: SampleArrays, image_rel: Path, label_rel: Path | None,
                      label_planes: np.ndarray | None, crs: str | None, counts: np.ndarray,
                      schema: ClassSchema) -> dict[str, Any]:
        """Write and hash one sample's files; its manifest row (a pool thread may run this)."""
        if sample.image_copy_from is not None:
            _link_or_copy(sample.image_copy_from, self.work_dir / image_rel)
        else:
            _write_raster(self.work_dir / image_rel, sample.image, sample.transform, crs, quiet=self._pool is None)
        if label_rel is not None:
            assert label_planes is not None  # a label path is chosen only for label planes
            _write_raster(self.work_dir / label_rel, label_planes, sample.transform, crs, quiet=self._pool is None)
        height, width = sample.image.shape[-2:]
        return {
            "sample_id": sample.sample_id, "domain": sample.domain, "split": sample.split,
            "image": image_rel.as_posix(), "label": label_rel.as_posix() if label_rel else None,
            "height": height, "width": width, "source_file": sample.source_file,
            "window": list(sample.window),
            "image_sha256": sha256_file(self.work_dir / image_rel),
            "label_sha256": sha256_file(self.work_dir / label_rel) if label_rel else None,
            "class_counts": counts[: schema.num_classes].tolist(),
            "bounds": _bounds(sample.transform, width, height),
            "crs": crs if sample.transform is not None else None,
            "group": sample.group, "target": int(sample.label) if label_rel is None else None,
        }

    def _journal(self, row: dict[str, Any]) -> None:
        self._rows[row["sample_id"]] = row
        self._rows_handle.write(json.dumps(row) + "\n")
        self._rows_handle.flush()
        os.fsync(self._rows_handle.fileno())

    def _journal_done(self, keep: int) -> None:
        """Journal the pool's finished samples in the order they were added, waiting for the oldest while more
        than `keep` are in flight. A failed write raises here, after the samples before it are journaled."""
        while self._pending and (len(self._pending) > keep or self._pending[0][1].done()):
            _, future = self._pending.popleft()
            self._journal(future.result())

    def close(self) -> None:
        """Wait for every sample in flight and journal it; stop the pool. On an error the other writes still
        finish (or are cancelled) before it is raised, so nothing writes into the folder afterwards."""
        if self._pool is None:
            return
        try:
            self._journal_done(keep=0)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()

    def _check_bands(self, sample: SampleArrays) -> None:
        """The image holds its domain's declared bands, in their declared dtype (T·C bands for a time series):
        a 16-bit or float tile where the card says 8-bit is an error, not a silently different dataset."""
        if self.domains is None:
            return
        info = self.domains.get(sample.domain)
        if info is None:
            raise DataError(f"{self.name}: sample {sample.sample_id} is of domain {sample.domain!r}, which the "
                            f"preparer does not declare ({', '.join(self.domains)})", "declare it in `domains`")
        bands = len(info.bands) * max(1, len(self.timesteps))
        dtypes = {band.dtype for band in info.bands}
        if sample.image.shape[0] != bands or sample.image.dtype.name not in dtypes:
            raise DataError(f"{sample.source_file} gives {sample.image.shape[0]} bands of {sample.image.dtype} for "
                            f"{self.name}/{sample.domain}, which stores {bands} bands of {'/'.join(sorted(dtypes))}",
                            "this file is not from the release the preparer reads (another product or "
                            "processing level); use the files the dataset card in prep/ names")

    def _check_shapes(self, sample: SampleArrays) -> None:
        """The label's form follows the dataset's kind: H×W, T×H×W for a time series, 0-d for image labels."""
        image, label = sample.image, sample.label
        frames = len(self.timesteps)
        if self.label_level == "image":
            expected, ok = "a 0-d uint8 class", label.ndim == 0
        elif frames:
            expected, ok = f"{frames}×H×W uint8 (one map per date)", label.ndim == 3 and label.shape[0] == frames
        else:
            expected, ok = "H×W uint8", label.ndim == 2
        if not ok or label.dtype != np.uint8:
            raise DataError(f"label of {sample.sample_id} must be {expected}, got {label.dtype} {label.shape}")
        if image.ndim != 3 or (label.ndim and image.shape[1:] != label.shape[-2:]):
            raise DataError(f"image of {sample.sample_id} has shape {image.shape}, label {label.shape}: "
                            "they must be C×H×W and H×W of the same size")
        if frames and image.shape[0] % frames:
            raise DataError(f"image of {sample.sample_id} has {image.shape[0]} bands, not a multiple of its "
                            f"{frames} dates", "a time series is stored time-major as T·C bands")

    def finish(self, *, prep_version: int, citation: str, licence: str, domains: dict[str, DomainInfo],
               source_archives: list[SourceArchive], expected_counts: dict[tuple[str, str], int],
               published_counts: dict[str, dict[str, int]] | None = None, notes: list[str] | None = None,
               unlabelled: list[str] | None = None, group_regions: dict[str, str] | None = None,
               published_alternatives: dict[str, dict[str, dict[str, int]]] | None = None) -> Path:
        """Verify counts and hashes, write manifest and card, and rename the folder into place.

        `expected_counts` must hold (what the raw files present imply); `published_counts` are the sizes
        the papers report for the full release, recorded so a run on other data can say so;
        `published_alternatives` the other sizes a source gives for a split (domain → split → {source: count}).
        """
        self.close()
        self._rows_handle.close()
        manifest = self._manifest_frame()
        split_counts = _split_counts(manifest)
        for (domain, split), expected in sorted(expected_counts.items()):
            got = split_counts.get(domain, {}).get(split, 0)
            if got != expected:
                raise DataError(
                    f"{self.name}: {domain}/{split} has {got} samples after prepare, expected {expected}",
                    "the raw download is incomplete or not the expected version; re-download it and re-run "
                    f"(the partial work stays in {self.work_dir} and resumes)",
                )
        for row in manifest.to_dict("records"):
            for rel, expected_sha in _stored_files(row):
                if sha256_file(self.work_dir / rel) != expected_sha:
                    raise DataError(f"{self.work_dir / rel} changed while preparing (sha256 mismatch)",
                                    "re-run prepare; the sample will be rewritten")
        manifest = _with_footprints(manifest)
        overlaps = split_overlaps(manifest) if "geometry" in manifest.columns else {}
        manifest_path = self.work_dir / MANIFEST_FILE
        _write_manifest(manifest, manifest_path)
        card = DatasetCard(
            name=self.name, format_version=FORMAT_VERSION, prep_version=prep_version,
            harness_version=__version__, citation=citation, licence=licence, classes=self.schema,
            ignore_index=IGNORE_INDEX, domains=domains, split_counts=split_counts,
            source_archives=source_archives, crs=self.crs, manifest_sha256=sha256_file(manifest_path),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            published_counts=published_counts or {}, published_alternatives=published_alternatives or {},
            notes=notes or [], unlabelled=unlabelled or [],
            footprint_overlaps=overlaps, domain_classes=self.domain_schemas, timesteps=self.timesteps,
            label_level=self.label_level, group_regions=group_regions or {}, decoders=raster_decoders(),
        )
        atomic_write_json(self.work_dir / CARD_FILE, card.model_dump(mode="json"))
        (self.work_dir / _ROWS_FILE).unlink()
        (self.work_dir / _FINGERPRINT_FILE).unlink()
        self._publish()
        return self.final_dir

    def _manifest_frame(self) -> pd.DataFrame:
        rows = sorted(self._rows.values(), key=lambda r: (r["domain"], r["split"], r["sample_id"]))
        return pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "bounds"])

    def _publish(self) -> None:
        """Swap the finished folder in whole (`folder_swap`): readers see the old dataset or the new one."""
        with publishing(self.data_root, self.name):  # waits for the runs reading the current version
            swap_in(self.work_dir, self.final_dir)


def _link_or_copy(source: Path, target: Path) -> None:
    """Store `source`'s bytes at `target` atomically: a hard link when both sit on one file system (no
    second copy of a large release; the sha256 in the manifest still catches a later change of either
    name), else a copy."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        if tmp.stat().st_size != source.stat().st_size:
            raise OSError(errno.EIO, "the copy is shorter than its source")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(target, exc) from exc
    os.replace(tmp, target)


def _stored_files(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(relative path, sha256) of a manifest row's files: the image, and the label unless image-level."""
    files = [(row["image"], row["image_sha256"])]
    if row.get("label"):
        files.append((row["label"], row["label_sha256"]))
    return files


def _file_intact(root: Path, rel: str, sha: str) -> bool:
    return (root / rel).exists() and sha256_file(root / rel) == sha


def _bounds(transform: Affine | None, width: int, height: int) -> list[float] | None:
    if transform is None:
        return None
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (width, height)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for (domain, split), n in manifest.groupby(["domain", "split"]).size().items():
        counts.setdefault(str(domain), {})[str(split)] = int(n)
    return counts


def _with_footprints(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest as a GeoDataFrame of sample footprints when every sample is georeferenced, else as is.

    Footprints are in the dataset's CRS when all samples share it, else in EPSG:4326 (each sample's own
    CRS is kept in the `crs` column and in its GeoTIFF).
    """
    bounds = manifest["bounds"]
    crs_column = manifest["crs"]
    plain = manifest.drop(columns="bounds")
    if not (len(manifest) and bounds.notna().all() and crs_column.notna().all()):
        return plain
    import geopandas as gpd
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    shared = crs_column.iloc[0] if crs_column.nunique() == 1 else None
    frame_crs = shared or "EPSG:4326"
    footprints = [box(*(b if shared else transform_bounds(c, frame_crs, *b)))
                  for b, c in zip(bounds, crs_column, strict=True)]
    return gpd.GeoDataFrame(plain, geometry=footprints, crs=frame_crs)


def _write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """GeoParquet with footprints when every sample is georeferenced; plain Parquet otherwise."""
    tmp = path.with_name(f".{path.name}.tmp")
    manifest.to_parquet(tmp, index=False)
    os.replace(tmp, path)


@dataclass
class PreparedDataset:
    """A finished prepared dataset: its card, its manifest, and file access."""

    root: Path
    card: DatasetCard
    manifest: pd.DataFrame = field(repr=False)

    @classmethod
    def open(cls, data_root: Path, name: str) -> PreparedDataset:
        """The prepared dataset `name` (a plain folder name: a record or bundle can never point this at a
        path, where opening would also recover, i.e. rename or delete, a `.<name>.old` beside it)."""
        from rsdg_bench.base.paths import is_safe_name

        if not is_safe_name(name):
            raise DataError(f"{name!r} is not a dataset name (letters, digits, '_', '.', '+', '-'; no path)",
                            "name a prepared dataset by its name, e.g. toyearth")
        with reading(data_root, name):  # no publish swaps the folder while its card and manifest are read
            return cls._open_unlocked(Path(data_root), name)

    @classmethod
    def _open_unlocked(cls, data_root: Path, name: str) -> PreparedDataset:
        root = data_root / name
        recover_swap(root)  # a publish cut short between its two renames leaves the previous version aside
        card_path = root / CARD_FILE
        if not card_path.exists():
            partial = Path(data_root) / f".{name}.partial"
            hint = (f"a prepare of {name!r} was interrupted ({partial} exists); re-run it to resume"
                    if partial.exists() else f"run `rsdg-bench prepare {name} --raw <download>`")
            raise DataError(f"prepared dataset {name!r} not found at {root} (no {CARD_FILE})",
                            f"{hint}, or point --data-root / RSDG_DATA at the folder that holds it")
        try:
            card = DatasetCard.model_validate_json(card_path.read_text())
        except ValidationError as exc:
            raise DataError(f"{card_path} is not a valid dataset card: {exc}",
                            f"re-run `rsdg-bench prepare {name}`") from exc
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.exists() or sha256_file(manifest_path) != card.manifest_sha256:
            raise DataError(f"{manifest_path} is missing or does not match the sha256 in {card_path}",
                            f"the prepared data was modified; re-run `rsdg-bench prepare {name}`")
        manifest = pd.read_parquet(manifest_path)
        return cls(root=root, card=card, manifest=manifest)

    @property
    def manifest_sha256(self) -> str:
        return self.card.manifest_sha256

    def rows(self, domain: str, split: str) -> pd.DataFrame:
        """The manifest rows of one domain/split, in a stable order."""
        if domain not in self.card.split_counts or split not in self.card.split_counts[domain]:
            available = ", ".join(f"{d}/{s}" for d, splits in self.card.split_counts.items() for s in splits)
            raise DataError(f"{self.card.name} has no split {domain}/{split}", f"available: {available}")
        selected = self.manifest[(self.manifest["domain"] == domain) & (self.manifest["split"] == split)]
        return selected.sort_values("sample_id").reset_index(drop=True)

    def band_names(self, domain: str) -> list[str]:
        return [band.name for band in self.card.domains[domain].bands]

    def read_image(self, row: Any) -> np.ndarray:
        return self._read_verified(row["image"], row["image_sha256"])

    def read_label(self, row: Any) -> np.ndarray:
        """H×W class indices; T×H×W for a time series; a 0-d array (the class) for image-level labels."""
        if self.card.label_level == "image":
            return np.asarray(row["target"], dtype=np.uint8)
        planes = self._read_verified(row["label"], row["label_sha256"])
        return planes if self.card.timesteps else planes[0]

    def georeference(self, row: Any) -> tuple[str, Affine] | None:
        """(CRS, transform) of a sample whose prepared image is georeferenced (from its file's header), else
        None: what a prediction map of the sample must carry."""
        if not isinstance(row.get("crs"), str):
            return None
        with open_raster(self.root / row["image"], f"prepare {self.card.name} again") as src:
            return row["crs"], src.transform

    def _read_verified(self, rel: str, sha256: str) -> np.ndarray:
        """Decode a prepared file from bytes whose sha256 is the manifest's: a file changed after prepare
        (same manifest, so same resume key) is an error, not a silently different number. Reading the bytes
        once and decoding them from memory costs about a tenth of the decode (bench/verified_read.py)."""
        path = self.root / rel
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}",
                            f"`rsdg-bench prepare {self.card.name} --verify` checks every file; prepare it again "
                            "to restore them") from exc
        if sha256_bytes(data) != sha256:
            raise DataError(f"{path} changed after {self.card.name} was prepared (its sha256 is not the manifest's)",
                            f"`rsdg-bench prepare {self.card.name} --verify` lists every changed file; prepare "
                            f"{self.card.name} again to restore them")
        if path.suffix.lower() in JPEG_SUFFIXES:  # a raw JPEG copied byte for byte: decoded as it was at prepare
            return decode_jpeg(io.BytesIO(data), path, f"prepare {self.card.name} again")
        try:
            with quiet_georef(), MemoryFile(data) as memory, memory.open() as src:
                array: np.ndarray = src.read()
                return array
        except RasterioError as exc:
            raise DataError(f"cannot read raster {path}: {exc}", f"prepare {self.card.name} again") from exc

    def verify_files(self) -> list[str]:
        """Re-hash every file; returns the relative paths that are missing or changed."""
        return [rel for row in self.manifest.to_dict("records") for rel, sha in _stored_files(row)
                if not _file_intact(self.root, rel, sha)]
