"""GlobalRoadNet → prepared `globalroadnet`, domain `global` (binary roads): CrossEarth's D2G target.

Dataset card
------------
- **What it is, UNVERIFIED**: CrossEarth's D2G target has 241 test images from "GlobalRoadNet" (Table 1);
  no public source names that set. The closest is GRSet / GlobalRoadNet (Lu et al., GSIS 2024, RSIDEA-WHU;
  47,210 training tiles of 1024² at 1 m from 121 capitals, plus a global validation set), distributed on
  Baidu only. Which 241 images D2G uses cannot be derived from it.
- **Assumed layout** (our convention; arrange your copy this way): `GlobalRoadNet/<split>/images/<id>.<jpg|png|tif>`
  with `GlobalRoadNet/<split>/labels/<id>.png` for each split present (`train`, `val`, `test`). Masks are 0/255
  or 0/1 (GRSet's loader binarizes at half the range); anything else is an error naming the file.
- **Count**: the `test` split should hold 241 images for D2G; the prepare prints the comparison.
- **Citation**: Lu et al., GlobalRoadNet (GRSet), Geo-spatial Information Science, 2024 (UNVERIFIED that this
  is CrossEarth's set). **Licence**: as distributed by the authors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .fakes import blocky_classes, write_raster
from .pairs import Pair, binary_mask, match_pairs, write_pairs

FOLDER = "GlobalRoadNet"
ARCHIVES = {"GlobalRoadNet.zip": None}
DOMAIN = "global"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".png", ".tif")
PUBLISHED_COUNTS = {DOMAIN: {"test": 241}}
FAKE_SIZE = 80


@register_preparer
class GlobalRoadNet(Preparer):
    name = "globalroadnet"
    summary = "GlobalRoadNet (assumed layout, see its card), binary roads (CrossEarth D2G target)"
    prep_version = 2  # 2: JPEGs decoded by libjpeg-turbo (Pillow), as the papers' pipelines decode them
    archives = ARCHIVES
    classes = "road2"
    citation = "Lu et al., GlobalRoadNet / GRSet, Geo-spatial Information Science 2024 (UNVERIFIED match)"
    licence = "as distributed by the authors"
    domains = {DOMAIN: DomainInfo(description="global satellite RGB, about 1 m",
                                  bands=uint8_bands(("red", "green", "blue")))}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`GlobalRoadNet/test/images/<id>.jpg` + `labels/<id>.png` (0/255)."""
        root = Path(out) / "globalroadnet_raw"
        for index in range(3):
            rng = np.random.default_rng([seed, index])
            road = blocky_classes(rng, FAKE_SIZE, FAKE_SIZE, 2, (5, 5))
            image = np.clip(70 + 80 * road[None] + rng.integers(-9, 10, (3, FAKE_SIZE, FAKE_SIZE)), 0, 255)
            stem = f"city{index:02d}_0001"
            write_raster(root / FOLDER / "test" / "images" / f"{stem}.jpg", image.astype(np.uint8), "JPEG", quality=90)
            write_raster(root / FOLDER / "test" / "labels" / f"{stem}.png", (255 * road)[None])
        if not archive:
            return root / FOLDER
        from .fakes import zip_folders

        return zip_folders(root, root.with_name("globalroadnet_download"), [FOLDER]) / f"{FOLDER}.zip"

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        pairs = []
        for split in SPLITS:
            images = {Path(n).stem: p for suffix in IMAGE_SUFFIXES
                      for n, p in files.find(f"{split}/images/*{suffix}").items()}
            masks = {Path(n).stem: p for n, p in files.find(f"{split}/labels/*.png").items()}
            if images or masks:
                pairs += [Pair(f"{DOMAIN}_{key}", DOMAIN, split, image, mask, f"{split}/images/{image.name}")
                          for key, image, mask in match_pairs(images, masks, f"GlobalRoadNet {split}/",
                                                              "every image needs labels/<same id>.png")]
        if not pairs:
            raise DataError(f"{files.raw} holds no <split>/images/ and <split>/labels/ pairs",
                            "arrange the data as the card in prep/globalroadnet.py describes")
        writer = self.open_writer(data_root, fingerprint={"prep_version": self.prep_version, "count": len(pairs)})
        expected = write_pairs(writer, pairs, binary_mask, progress, "prepare globalroadnet")
        return self.finish(writer, files, expected_counts=expected,
                           notes=["layout is rsdg-bench's documented convention; CrossEarth's 241-image set is "
                                  "UNVERIFIED"])
