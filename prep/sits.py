"""Satellite image time series in the SitsSCD / CoDEX release format, cut into CoDEX's 128×128 patches.

CoDEX (Abhishek et al., CVPR-W 2025) ships DynamicEarthNet and MUDS as zips in the format of
ElliotVincent/SitsSCD; its loader (`data/data.py`) fixes how they are read and cut:

- `<Dataset>/split.json`: `{"train": [...], "val": [...], "test": [...]}` area (SITS) ids; each area is a
  CoDEX domain. The lists are only in the zip, so they are read from it, never assumed.
- `<Dataset>/labels/<id>.npy`: int8, 24 × 1024 × 1024, one label map per month (Jan 2018 … Dec 2019).
- `<Dataset>/<split>/<id>/…`: the monthly images of the area, in the folder of its split (file names are
  dataset-specific, see the subclasses).

Prepared form (dataset card `timesteps` = the 24 month starts): one sample per 128×128 patch of an area,
the 24 frames stored time-major (T·C bands) with a 24-band label. Splits:

- `train`: the patches of the training areas outside the bottom-right 2×2 block of the patch grid (CoDEX's
  random training crops avoid that block);
- `val_id` / `test_id` (in-domain): that block of every training area, patches (n−1, n−1), (n−2, n−2) for
  validation and (n−1, n−2), (n−2, n−1) for test, on the n×n grid (n = 8 for 1024 px: (7,7), (6,6) and
  (7,6), (6,7), as CoDEX's `domain_shift=False` loader);
- `val` / `test` (out of domain): every non-overlapping patch of the val/test areas (64 per 1024² area).

So CoDEX's "3520 training samples" (55 × 64) are 55 × 60 here plus the 4 held-out patches each; validation
and test match its 640 = 10 × 64. The manifest's `group` is the area id (the domain of CoDEX's experts).
Areas must not appear in two of `split.json`'s lists (checked: that would leak test areas into training).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import BandInfo, DomainInfo, SampleArrays, read_raw_raster

from .base import Preparer, RawFiles, read_split_lists
from .fakes import write_raster, zip_tree

PATCH = 128
MONTHS = [date(2018 + m // 12, m % 12 + 1, 1) for m in range(24)]  # Jan 2018 … Dec 2019
RELEASE_SPLITS = ("train", "val", "test")


def patch_grid(size: int) -> int:
    """Patches per side of a `size`-pixel square area; the size must be a multiple of the patch."""
    if size % PATCH or size < 2 * PATCH:
        raise DataError(f"an area of {size} px cannot be cut into 128×128 patches with a held-out 2×2 corner block",
                        "CoDEX's areas are 1024×1024; check that the images are the release's")
    return size // PATCH


def in_domain_patches(n: int) -> dict[str, list[tuple[int, int]]]:
    """The held-out corner block of a training area on an n×n patch grid, as CoDEX splits it."""
    return {"val_id": [(n - 1, n - 1), (n - 2, n - 2)], "test_id": [(n - 1, n - 2), (n - 2, n - 1)]}


def area_patches(area_split: str, n: int) -> dict[str, list[tuple[int, int]]]:
    """Prepared split → (row, col) patches of one area of the release split `area_split`."""
    every = [(r, c) for r in range(n) for c in range(n)]
    if area_split != "train":
        return {area_split: every}
    held_out = in_domain_patches(n)
    block = {p for patches in held_out.values() for p in patches}
    return {"train": [p for p in every if p not in block], **held_out}


class SitsPreparer(Preparer):
    """Shared prepare for the SitsSCD-format releases; subclasses name the folder, bands and label decoding."""

    folder: ClassVar[str]  # top folder inside the zip
    domain: ClassVar[str]
    band_names: ClassVar[tuple[str, ...]]
    classes: ClassVar[str]
    citation: ClassVar[str]
    licence: ClassVar[str]
    description: ClassVar[str]
    fake_size: ClassVar[int] = 3 * PATCH  # a 3×3 patch grid: 5 train + 2 + 2 held-out patches per area
    fake_areas: ClassVar[dict[str, list[str]]]
    published_counts = {}  # set per subclass below: 640 val and 640 test patches (SitsSCD's 10 + 10 areas)

    def __init_subclass__(cls, **kwargs: object) -> None:
        """The card's `domains` and `published_counts` of a release, from its `domain`, bands and description."""
        super().__init_subclass__(**kwargs)
        if "domain" in cls.__dict__:
            cls.domains = {cls.domain: DomainInfo(description=cls.description, gsd_m=3.0,
                                                  bands=[BandInfo(name=b, dtype="uint8", units="DN")
                                                         for b in cls.band_names])}
            cls.published_counts = {cls.domain: {"val": 640, "test": 640}}

    # ---- dataset-specific -------------------------------------------------------------------------------
    def frame_files(self, area_dir: str, area: str) -> list[list[str]]:
        """Per month, the image files (relative to the area folder) whose bands are stacked in order."""
        raise NotImplementedError

    def decode_labels(self, raw: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        """(T×H×W uint8 labels with ignore = 255, T booleans: the month has an image to read)."""
        raise NotImplementedError

    def write_fake_frames(self, area_dir: Path, area: str, rng: np.random.Generator, labels: np.ndarray) -> None:
        raise NotImplementedError

    def fake_labels(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    # ---- shared -----------------------------------------------------------------------------------------
    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`<folder>/split.json`, `labels/<id>.npy` (int8, 24×S×S) and the monthly images of each area."""
        root = Path(out) / f"{self.name}_raw"
        base = root / self.folder
        for s, (split, areas) in enumerate(self.fake_areas.items()):
            for a, area in enumerate(areas):
                rng = np.random.default_rng([seed, s, a])
                labels = self.fake_labels(rng)
                (base / "labels").mkdir(parents=True, exist_ok=True)
                np.save(base / "labels" / f"{area}.npy", labels)
                self.write_fake_frames(base / split / area, area, rng, labels)
        (base / "split.json").write_text(json.dumps(self.fake_areas))
        if not archive:
            return root
        download = root.with_name(f"{self.name}_download")
        zip_tree(root, download / f"{self.folder}.zip")
        return download

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        areas = self._split_lists(files)
        writer = self.open_writer(data_root, timesteps=[m.isoformat() for m in MONTHS],
                                  fingerprint={"prep_version": self.prep_version, "areas": areas})
        expected: dict[tuple[str, str], int] = {}
        size: int | None = None
        for area_split, ids in areas.items():
            for area in tqdm(ids, desc=f"prepare {self.name}/{area_split}", unit="area", disable=not progress):
                labels_raw = self._labels(files, area)
                size = size or labels_raw.shape[-1]
                if labels_raw.shape[1:] != (size, size):
                    raise DataError(f"labels/{area}.npy is {labels_raw.shape}, other areas are 24×{size}×{size}",
                                    "the release's areas are all the same size; re-extract the zip")
                plan = area_patches(area_split, patch_grid(size))
                for split, patches in plan.items():
                    expected[(self.domain, split)] = expected.get((self.domain, split), 0) + len(patches)
                if all(writer.has(_patch_id(area, rc)) for patches in plan.values() for rc in patches):
                    continue
                labels, present = self.decode_labels(labels_raw, f"{self.folder}/labels/{area}.npy")
                series = self._series(files, area_split, area, present, size)
                for split, patches in plan.items():
                    for row, col in patches:
                        sample_id = _patch_id(area, (row, col))
                        if writer.has(sample_id):
                            continue
                        y0, x0 = row * PATCH, col * PATCH
                        window = (slice(None), slice(None), slice(y0, y0 + PATCH), slice(x0, x0 + PATCH))
                        writer.add(SampleArrays(
                            sample_id=sample_id, domain=self.domain, split=split, group=area,
                            image=series[window].reshape(-1, PATCH, PATCH), label=labels[window[1:]],
                            source_file=f"{self.folder}/{area_split}/{area}", window=(x0, y0, x0 + PATCH, y0 + PATCH)))
        assert size is not None  # at least one area was read
        return self.finish(
            writer, files, expected_counts=expected,
            notes=[f"split.json areas: {', '.join(f'{k} {len(v)}' for k, v in areas.items())}",
                   f"{size}-px areas on a {patch_grid(size)}×{patch_grid(size)} patch grid; train holds the patches "
                   "outside each training area's held-out 2×2 corner block (val_id / test_id): 60 of 64 for "
                   "1024-px areas, which CoDEX counts as 64"])

    def _split_lists(self, files: RawFiles) -> dict[str, list[str]]:
        path = files.find(f"{self.folder}/split.json").get("split.json")
        if path is None:
            raise DataError(f"{files.raw}: no {self.folder}/split.json",
                            f"pass --raw the folder holding {self.folder}.zip (CoDEX's release) or its unpacked folder")
        return read_split_lists(path, RELEASE_SPLITS, "area")

    def _labels(self, files: RawFiles, area: str) -> np.ndarray:
        path = files.find(f"{self.folder}/labels/{area}.npy").get(f"{area}.npy")
        if path is None:
            raise DataError(f"no labels for area {area} ({self.folder}/labels/{area}.npy)", "re-extract the release zip")
        try:
            labels = np.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}", "the file is corrupt; re-extract the release zip") from exc
        if labels.ndim != 3 or labels.shape[0] != len(MONTHS):
            raise DataError(f"{path} has shape {labels.shape}, expected 24 monthly maps (24×H×W)",
                            "use the CoDEX release's labels")
        return labels

    def _series(self, files: RawFiles, area_split: str, area: str, present: np.ndarray, size: int) -> np.ndarray:
        """T×C×S×S uint8: each month's bands; a month without an image (per `present`) stays zeros."""
        series = np.zeros((len(MONTHS), len(self.band_names), size, size), dtype=np.uint8)
        area_dir = f"{self.folder}/{area_split}/{area}"
        found = {Path(rel).name: p for rel, p in files.find_all(f"{area_dir}/*").items()}
        for month, names in enumerate(self.frame_files(area_dir, area)):
            if not present[month]:
                continue
            bands = []
            for name in names:
                if name not in found:
                    raise DataError(f"{area_dir}/{name} is missing (month {MONTHS[month]:%Y-%m} is labelled)",
                                    "re-extract the release zip")
                bands.append(read_raw_raster(found[name], fix="the file is corrupt; re-extract the release zip"))
            frame = np.concatenate(bands)
            if frame.shape != series.shape[1:]:
                raise DataError(f"{area_dir}: month {MONTHS[month]:%Y-%m} is {frame.shape}, expected "
                                f"{series.shape[1:]} ({', '.join(self.band_names)})", "re-extract the release zip")
            series[month] = frame
        return series


def _patch_id(area: str, rc: tuple[int, int]) -> str:
    return f"{area}_r{rc[0]}_c{rc[1]}"


def write_fake_jpeg(path: Path, array: np.ndarray) -> None:
    write_raster(path, array, driver="JPEG", QUALITY=95)


def remap_labels(raw: np.ndarray, mapping: dict[int, int], where: str, what: str) -> np.ndarray:
    """uint8 labels through `mapping` (raw value → class or ignore); any other value is an error."""
    stray = sorted(set(np.unique(raw).tolist()) - set(mapping))
    if stray:
        raise DataError(f"{where} holds values {stray[:5]}; {what}", "the file is not from the CoDEX release")
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for value, target in mapping.items():
        lookup[value & 0xFF] = target
    return lookup[raw.astype(np.uint8)]
