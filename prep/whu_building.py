"""WHU Building → prepared `whu_building`, domains `aerial`, `satellite1`, `satellite2` (binary buildings).

Dataset card
------------
- **Raw download** (study.rsgis.whu.edu.cn), the cropped 512×512 tile releases, arranged under `--raw` as
  (each folder may also be a zip of it, holding the folder at its top):
  - `aerial/` (or the folder `3. The cropped aerial image tiles and raster labels/`):
    `{train,val,test}/{image,label}/<id>.tif`, 0.3 m RGB, labels 0/255; 4736 / 1036 / 2416.
  - `satellite2/` (East Asia): `{train,train_no,test,test_no}/{image,label}/<id>.tif`; `*_no` are the tiles
    (nearly) without buildings. Prepared `train` = train + train_no (13662), `test` = test + test_no (3726),
    as CrossEarth's `train_all` / `test_all`.
  - `satellite1/` (global cities): `{image,label}/<id>.tif`, 204 tiles at 0.3-2.5 m, all prepared as `test`.
  The folder names are our convention (the releases' own names are UNVERIFIED except the aerial one).
  A subset that is absent is listed in the card's notes; the tasks that need it then say which split is missing.
- **Labels**: 255 (or 1) → 1 building, 0 → 0 (`tasks/classes/building2.yaml`); other values are errors.
- **CrossEarth's aerial "test"** (S2A target, 1036 images) is the size of the official `val` split, so S2A
  evaluates on `aerial/val` (UNVERIFIED which folder its processed copy calls test).
- **Citation**: Ji, Wei and Lu, Fully convolutional networks for multisource building extraction from an
  open aerial and satellite imagery data set, IEEE TGRS 57(1), 2019. **Licence**: research use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .fakes import blocky_classes, write_raster
from .pairs import Pair, binary_mask, match_pairs, write_pairs

# Domain → (accepted top folder names, {prepared split: raw subfolders}).
SUBSETS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "aerial": (("aerial", "3. The cropped aerial image tiles and raster labels"),
               {"train": ("train",), "val": ("val",), "test": ("test",)}),
    "satellite2": (("satellite2",), {"train": ("train", "train_no"), "test": ("test", "test_no")}),
    "satellite1": (("satellite1",), {"test": ("",)}),
}
ARCHIVES = {"aerial.zip": None, "satellite1.zip": None, "satellite2.zip": None}
DESCRIPTIONS = {"aerial": ("aerial RGB, Christchurch (New Zealand), 0.3 m", 0.3),
                "satellite1": ("satellite RGB, cities worldwide, 0.3-2.5 m", None),
                "satellite2": ("satellite RGB, East Asia, 0.45 m", 0.45)}
PUBLISHED_COUNTS = {"aerial": {"train": 4736, "val": 1036, "test": 2416},
                    "satellite2": {"train": 13662, "test": 3726}, "satellite1": {"test": 204}}
FAKE_SIZE = 64
FAKE_COUNTS = {"aerial": {"train": 3, "val": 2, "test": 1}, "satellite2": {"train": 2, "train_no": 1, "test": 1,
                                                                          "test_no": 1},
               "satellite1": {"": 2}}


@register_preparer
class WHUBuilding(Preparer):
    name = "whu_building"
    summary = "WHU Building aerial + satellite I/II, 512² tiles, binary buildings (CrossEarth A2S, S2A, A2S-I)"
    prep_version = 1
    archives = ARCHIVES
    classes = "building2"
    citation = ("Ji, Wei and Lu, Fully Convolutional Networks for Multisource Building Extraction From an "
                "Open Aerial and Satellite Imagery Data Set, IEEE TGRS 57(1), 2019")
    licence = "research use (WHU Building dataset terms)"
    domains = {d: DomainInfo(description=DESCRIPTIONS[d][0], gsd_m=DESCRIPTIONS[d][1],
                             bands=uint8_bands(("red", "green", "blue"))) for d in SUBSETS}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`aerial/`, `satellite1/`, `satellite2/` with `<split>/{image,label}/<id>.tif` (labels 0/255)."""
        root = Path(out) / "whu_raw"
        index = 0
        for domain, folders in FAKE_COUNTS.items():
            for folder, count in folders.items():
                for _ in range(count):
                    rng = np.random.default_rng([seed, index])
                    building = blocky_classes(rng, FAKE_SIZE, FAKE_SIZE, 2) if not folder.endswith("_no") else \
                        np.zeros((FAKE_SIZE, FAKE_SIZE), dtype=np.uint8)
                    image = np.clip(100 + 60 * building[None] + rng.integers(-10, 11, (3, FAKE_SIZE, FAKE_SIZE)), 0, 255)
                    base = root / domain / folder
                    write_raster(base / "image" / f"{index}.tif", image.astype(np.uint8), "GTiff")
                    write_raster(base / "label" / f"{index}.tif", (255 * building)[None], "GTiff")
                    index += 1
        if not archive:
            return root
        from .fakes import zip_folders

        return zip_folders(root, root.with_name("whu_download"), list(FAKE_COUNTS))

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        pairs: list[Pair] = []
        absent = []
        for domain, (tops, splits) in SUBSETS.items():
            found = self._subset_pairs(files, domain, tops, splits)
            if found:
                pairs += found
            else:
                absent.append(domain)
        if len(absent) == len(SUBSETS):
            raise DataError(f"{files.raw} holds none of aerial/, satellite1/, satellite2/ with <split>/image/*.tif",
                            "arrange the WHU downloads as the card in prep/whu_building.py describes")
        writer = self.open_writer(data_root, fingerprint={"prep_version": self.prep_version, "count": len(pairs)})
        expected = write_pairs(writer, pairs, binary_mask, progress, "prepare whu_building")
        present = [d for d in SUBSETS if d not in absent]
        return self.finish(writer, files, expected_counts=expected,  # the card names the subsets the download holds
                           domains={d: self.domains[d] for d in present},
                           published_counts={d: PUBLISHED_COUNTS[d] for d in present},
                           notes=[f"subset(s) not in the download: {', '.join(absent)}"] if absent else [])

    @staticmethod
    def _subset_pairs(files, domain: str, tops: tuple[str, ...], splits: dict[str, tuple[str, ...]]) -> list[Pair]:
        """The subset's pairs per split; [] when the subset is absent; an error when only part of it is there."""
        per_split: dict[str, list[Pair]] = {}
        for split, folders in splits.items():
            per_split[split] = []
            for folder in folders:
                for top in tops:
                    base = f"{top}/{folder}/" if folder else f"{top}/"
                    images = {Path(n).stem: p for n, p in files.find(f"{base}image/*.tif").items()}
                    masks = {Path(n).stem: p for n, p in files.find(f"{base}label/*.tif").items()}
                    per_split[split] += [Pair(f"{domain}_{folder or 'all'}_{key}", domain, split, image, mask,
                                              f"{base}image/{image.name}")
                                         for key, image, mask in match_pairs(images, masks, f"WHU {base}",
                                                                             "every image/<id>.tif needs label/<id>.tif")]
        empty = [split for split, found in per_split.items() if not found]
        if empty and len(empty) < len(per_split):
            raise DataError(f"WHU {domain}: no tiles for split(s) {', '.join(empty)} under {' or '.join(tops)}/",
                            "the download or extraction is incomplete; re-extract it")
        return [pair for found in per_split.values() for pair in found]
