"""MUDS (SpaceNet 7) as CoDEX ships it (`Muds.zip`) → prepared `muds`, domain `planet`.

Dataset card
------------
- **Raw download**: CoDEX's `Muds.zip` (245 MB; SitsSCD format, see `prep/sits.py`): `Muds/split.json`,
  `labels/<id>.npy` (int8 24×1024×1024) and `<split>/<id>/<id>_<YYYY>_<MM>.jpg` (RGB, 8-bit).
- **Labels**: 0 not building, 1 building (`building2`); 2 marks a month without data: a month whose mask is
  all 2 is missing (its image is not read and stays zeros, as CoDEX's loader leaves it, and every pixel is
  ignored); a 2 elsewhere is ignored too. Other values are an error.
- **Splits**: `split.json`'s 40 / 10 / 10 areas, cut as `prep/sits.py` says; group = area.
- **Citation**: Van Etten et al., The Multi-Temporal Urban Development SpaceNet Dataset, CVPR 2021; the split:
  Abhishek et al., CoDEX, CVPR-W 2025. **Licence**: CC BY-SA 4.0 (SpaceNet; UNVERIFIED for the CoDEX repack).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import register_preparer
from .sits import MONTHS, SitsPreparer, remap_labels, write_fake_jpeg

MISSING = 2
LABEL_VALUES = {0: 0, 1: 1, MISSING: 255}


@register_preparer
class Muds(SitsPreparer):
    name = "muds"
    summary = "MUDS / SpaceNet 7 (CoDEX release): monthly Planet RGB series, buildings, 60 areas, missing months"
    prep_version = 2  # 2: JPEGs decoded by libjpeg-turbo (Pillow), as the papers' pipelines do; windows (x0, y0, x1, y1)
    archives = {"Muds.zip": None}
    folder = "Muds"
    domain = "planet"
    band_names = ("R", "G", "B")
    classes = "building2"
    citation = ("Van Etten et al., The Multi-Temporal Urban Development SpaceNet Dataset, CVPR 2021; split: "
                "Abhishek et al., CoDEX, CVPR-W 2025")
    licence = "CC BY-SA 4.0 (UNVERIFIED for the CoDEX repack)"
    description = "Planet monthly mosaics 2018-2019, RGB 8-bit, about 4 m; missing months stored as zeros"
    fake_areas = {"train": ["L15-0331E-1257N_1327_3160_13", "L15-0614E-0946N_2459_4406_13"],
                  "val": ["L15-1015E-1062N_4061_4246_13"], "test": ["L15-1690E-1211N_6763_3346_13"]}

    def frame_files(self, area_dir: str, area: str) -> list[list[str]]:
        return [[f"{area}_{m.year}_{m.month:02d}.jpg"] for m in MONTHS]

    def decode_labels(self, raw: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        labels = remap_labels(raw, LABEL_VALUES, where, "MUDS labels are 0, 1 and 2 (missing month)")
        present = ~(raw == MISSING).reshape(len(raw), -1).all(axis=1)
        return labels, present

    def fake_labels(self, rng: np.random.Generator) -> np.ndarray:
        size = self.fake_size
        labels = np.zeros((len(MONTHS), size, size), dtype=np.int8)
        for month in range(len(MONTHS)):  # buildings appear over time
            for y, x in rng.integers(0, size - 12, (4 + month, 2)):
                labels[month:, y:y + 10, x:x + 10] = 1
        labels[3] = MISSING  # a month without data: its image is absent from the release
        return labels

    def write_fake_frames(self, area_dir: Path, area: str, rng: np.random.Generator, labels: np.ndarray) -> None:
        for month, m in enumerate(MONTHS):
            if (labels[month] == MISSING).all():
                continue
            pixels = np.where(labels[month][None] == 1, 200, 70) + rng.integers(-10, 11, (3, *labels.shape[1:]))
            write_fake_jpeg(area_dir / f"{area}_{m.year}_{m.month:02d}.jpg", np.clip(pixels, 0, 255).astype(np.uint8))
