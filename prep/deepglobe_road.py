"""DeepGlobe Road Extraction → prepared `deepglobe_road`, domain `sat`, split `train` (binary roads).

Dataset card
------------
- **Raw download** (DeepGlobe 2018 road challenge; Kaggle `balraj98/deepglobe-road-extraction-dataset`,
  archive name `deepglobe-road-extraction-dataset.zip` UNVERIFIED): `train/<id>_sat.jpg` (1024×1024 RGB, 50 cm)
  with `train/<id>_mask.png`; `valid/` and `test/` have images only and are not prepared.
- **Labels**: the masks are "not pure 0 and 255"; the challenge says to binarize at 128: ≥ 128 → 1 road,
  else 0 background (`tasks/classes/road2.yaml`). The first band is read.
- **Images** are copied byte for byte (JPEG). **Count**: 6226 train (CrossEarth's D2M / D2G source).
- **Citation**: Demir et al., DeepGlobe 2018: A Challenge to Parse the Earth through Satellite Images,
  CVPR Workshops 2018. **Licence**: DeepGlobe challenge terms (research use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .fakes import blocky_classes, write_raster, zip_tree
from .pairs import Pair, binary_mask, match_pairs, write_pairs

ARCHIVES = {"deepglobe-road-extraction-dataset.zip": None}
DOMAIN = "sat"
THRESHOLD = 128
PUBLISHED_COUNTS = {DOMAIN: {"train": 6226}}
FAKE_SIZE = 64
FAKE_COUNTS = {"train": 4, "valid": 2, "test": 1}


@register_preparer
class DeepGlobeRoad(Preparer):
    name = "deepglobe_road"
    summary = "DeepGlobe road extraction, 50 cm satellite RGB, binary roads (CrossEarth D2M / D2G source)"
    prep_version = 2  # 2: JPEGs decoded by libjpeg-turbo (Pillow), as the papers' pipelines decode them
    archives = ARCHIVES
    classes = "road2"
    citation = ("Demir et al., DeepGlobe 2018: A Challenge to Parse the Earth through Satellite Images, "
                "CVPR Workshops 2018")
    licence = "DeepGlobe challenge terms (research use)"
    domains = {DOMAIN: DomainInfo(description="DigitalGlobe satellite RGB (Thailand, Indonesia, India), 50 cm",
                                  gsd_m=0.5, bands=uint8_bands(("red", "green", "blue")))}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`train/<id>_sat.jpg` + `<id>_mask.png` (3-band, not pure 0/255), `valid/` and `test/` images only."""
        root = Path(out) / "deepglobe_raw"
        image_id = 100
        for split, count in FAKE_COUNTS.items():
            for _ in range(count):
                rng = np.random.default_rng([seed, image_id])
                road = blocky_classes(rng, FAKE_SIZE, FAKE_SIZE, 2)
                image = np.clip(90 + 70 * road[None] + rng.integers(-10, 11, (3, FAKE_SIZE, FAKE_SIZE)), 0, 255)
                write_raster(root / split / f"{image_id}_sat.jpg", image.astype(np.uint8), "JPEG", quality=90)
                if split == "train":
                    # Compression noise around 0 and 255, and the threshold itself at known pixels.
                    mask = np.where(road == 1, 255 - rng.integers(0, 20, road.shape), rng.integers(0, 20, road.shape))
                    mask[0, :4] = (127, 128, 0, 255)
                    write_raster(root / split / f"{image_id}_mask.png", np.repeat(mask[None], 3, 0).astype(np.uint8))
                image_id += 1
        if not archive:
            return root
        return zip_tree(root, root.with_name("deepglobe_download") / next(iter(ARCHIVES)))

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        images = {n.removesuffix("_sat.jpg"): p for n, p in files.find("train/*_sat.jpg").items()}
        masks = {n.removesuffix("_mask.png"): p for n, p in files.find("train/*_mask.png").items()}
        if not images:
            raise DataError(f"{files.raw} holds no train/<id>_sat.jpg",
                            "pass --raw the DeepGlobe road folder (with train/) or its Kaggle archive")
        pairs = [Pair(f"{DOMAIN}_{key}", DOMAIN, "train", image, mask, f"train/{image.name}")
                 for key, image, mask in match_pairs(images, masks, "DeepGlobe train/",
                                                     "the download is incomplete; re-extract it")]
        writer = self.open_writer(data_root, fingerprint={"prep_version": self.prep_version, "count": len(pairs)})
        expected = write_pairs(writer, pairs, lambda m, where: binary_mask(m, where, THRESHOLD), progress,
                               "prepare deepglobe_road")
        return self.finish(writer, files, expected_counts=expected,
                           notes=[f"masks binarized at {THRESHOLD} (first band), as the challenge instructs"])
