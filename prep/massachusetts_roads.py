"""Massachusetts Roads → prepared `massachusetts_roads`, domain `aerial`, splits train/val/test (binary).

Dataset card
------------
- **Raw download** (Mnih 2013; Kaggle `balraj98/massachusetts-roads-dataset`, archive name
  `massachusetts-roads-dataset.zip` UNVERIFIED): `tiff/{train,val,test}/<id>.tiff` (1500×1500 RGB, 1 m) with
  `tiff/{train,val,test}_labels/<id>.tif` (0 / 255).
- **Labels**: 255 → 1 road, 0 → 0 (`tasks/classes/road2.yaml`); any other value is an error naming the file.
- **Counts**: 1108 / 14 / 49. CrossEarth's D2M target is `test` (49), read at 1500² (its test Resize to
  1500 is a no-op here; the harness's `resize_long_side` documents it in the task).
- **Citation**: Mnih, Machine Learning for Aerial Image Labeling, PhD thesis, University of Toronto, 2013.
  **Licence**: research use, as distributed by the author.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .fakes import blocky_classes, write_raster, zip_tree
from .pairs import Pair, binary_mask, match_pairs, write_pairs

ARCHIVES = {"massachusetts-roads-dataset.zip": None}
DOMAIN = "aerial"
SPLITS = ("train", "val", "test")
PUBLISHED_COUNTS = {DOMAIN: {"train": 1108, "val": 14, "test": 49}}
FAKE_SIZE = 96
FAKE_COUNTS = {"train": 2, "val": 1, "test": 2}


@register_preparer
class MassachusettsRoads(Preparer):
    name = "massachusetts_roads"
    summary = "Massachusetts Roads, 1 m aerial RGB 1500², binary roads (CrossEarth D2M target)"
    prep_version = 1
    archives = ARCHIVES
    classes = "road2"
    citation = "Mnih, Machine Learning for Aerial Image Labeling, PhD thesis, University of Toronto, 2013"
    licence = "research use, as distributed by the author"
    domains = {DOMAIN: DomainInfo(description="aerial RGB over Massachusetts, 1 m", gsd_m=1.0,
                                  bands=uint8_bands(("red", "green", "blue")))}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`tiff/<split>/<id>.tiff` and `tiff/<split>_labels/<id>.tif` with 0/255 masks."""
        root = Path(out) / "massachusetts_raw"
        image_id = 10078
        for split, count in FAKE_COUNTS.items():
            for _ in range(count):
                rng = np.random.default_rng([seed, image_id])
                road = blocky_classes(rng, FAKE_SIZE, FAKE_SIZE, 2, (6, 6))
                image = np.clip(80 + 90 * road[None] + rng.integers(-12, 13, (3, FAKE_SIZE, FAKE_SIZE)), 0, 255)
                write_raster(root / "tiff" / split / f"{image_id}_15.tiff", image.astype(np.uint8), "GTiff")
                write_raster(root / "tiff" / f"{split}_labels" / f"{image_id}_15.tif", (255 * road)[None], "GTiff")
                image_id += 1
        if not archive:
            return root
        return zip_tree(root, root.with_name("massachusetts_download") / next(iter(ARCHIVES)))

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        pairs = []
        for split in SPLITS:
            images = {n.removesuffix(".tiff"): p for n, p in files.find(f"tiff/{split}/*.tiff").items()}
            masks = {n.removesuffix(".tif"): p for n, p in files.find(f"tiff/{split}_labels/*.tif").items()}
            if not images:
                raise DataError(f"{files.raw} holds no tiff/{split}/*.tiff",
                                "pass --raw the Massachusetts Roads folder (with tiff/) or its archive")
            pairs += [Pair(f"{DOMAIN}_{key}", DOMAIN, split, image, mask, f"tiff/{split}/{image.name}")
                      for key, image, mask in match_pairs(images, masks, f"Massachusetts tiff/{split}",
                                                          "the download is incomplete; re-extract it")]
        writer = self.open_writer(data_root, fingerprint={"prep_version": self.prep_version, "count": len(pairs)})
        expected = write_pairs(writer, pairs, binary_mask, progress, "prepare massachusetts_roads")
        return self.finish(writer, files, expected_counts=expected)
