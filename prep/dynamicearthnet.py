"""DynamicEarthNet as CoDEX ships it (`DynamicEarthNet.zip`) → prepared `dynamicearthnet`, domain `planet`.

Dataset card
------------
- **Raw download**: CoDEX's `DynamicEarthNet.zip` (7.09 GB, Google Drive link in the CoDEX README; SitsSCD
  format, see `prep/sits.py`): `DynamicEarthNet/split.json`, `labels/<id>.npy` (int8 24×1024×1024) and
  `<split>/<id>/<id>_<day>_rgb.jpeg` + `<id>_<day>_infra.jpeg`, `<day>` = days from 2018-01-01 to the first
  day of each month (0, 31, 59, …).
- **Bands**: R, G, B from the RGB JPEG and NIR from the infra JPEG, 8-bit (CoDEX stacks them in this order;
  its per-band mean/std are in `baselines/`, not applied here).
- **Labels**: 0 impervious, 1 agriculture, 2 forest & other vegetation, 3 wetlands, 4 soil, 5 water; 6 (snow &
  ice) → ignore, as CoDEX's `ignore_index: 6` (INFERRED from its config); other values are an error.
- **Splits**: `split.json`'s 55 / 10 / 10 areas (the lists are in the zip only), cut as `prep/sits.py` says;
  group = area.
- **Citation**: Toker et al., DynamicEarthNet: Daily Multi-Spectral Satellite Dataset for Semantic Change
  Segmentation, CVPR 2022; the split: Abhishek et al., CoDEX, CVPR-W 2025. **Licence**: CC BY-SA 4.0 for
  the labels, Planet imagery under Planet's terms (UNVERIFIED).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import register_preparer
from .sits import MONTHS, SitsPreparer, remap_labels, write_fake_jpeg

LABEL_VALUES = {**{v: v for v in range(6)}, 6: 255}  # snow & ice ignored


def month_days() -> list[int]:
    """The `<day>` of each monthly file: days from 2018-01-01 to the month's first day."""
    return [(m - MONTHS[0]).days for m in MONTHS]


@register_preparer
class DynamicEarthNet(SitsPreparer):
    name = "dynamicearthnet"
    summary = "DynamicEarthNet (CoDEX release): monthly Planet RGB+NIR series, 6 land-cover classes, 75 areas"
    prep_version = 2  # 2: JPEGs decoded by libjpeg-turbo (Pillow), as the papers' pipelines do; windows (x0, y0, x1, y1)
    archives = {"DynamicEarthNet.zip": None}
    folder = "DynamicEarthNet"
    domain = "planet"
    band_names = ("R", "G", "B", "NIR")
    classes = "dynamicearthnet6"
    citation = ("Toker et al., DynamicEarthNet: Daily Multi-Spectral Satellite Dataset for Semantic Change "
                "Segmentation, CVPR 2022; split: Abhishek et al., CoDEX, CVPR-W 2025")
    licence = "CC BY-SA 4.0 labels; Planet imagery under Planet's terms (UNVERIFIED)"
    description = "PlanetFusion monthly composites (first day of each month 2018-2019), R G B NIR 8-bit, 3 m"
    fake_areas = {"train": ["1311_3077_13", "1417_3281_13", "2065_3647_13"], "val": ["1700_3100_13"],
                  "test": ["2235_3403_13"]}

    def frame_files(self, area_dir: str, area: str) -> list[list[str]]:
        return [[f"{area}_{day}_rgb.jpeg", f"{area}_{day}_infra.jpeg"] for day in month_days()]

    def decode_labels(self, raw: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        labels = remap_labels(raw, LABEL_VALUES, where, "DynamicEarthNet labels are 0-6 (6 = snow & ice)")
        return labels, np.ones(len(MONTHS), dtype=bool)

    def fake_labels(self, rng: np.random.Generator) -> np.ndarray:
        size = self.fake_size
        base = rng.integers(0, 6, (size // 32, size // 32)).repeat(32, 0).repeat(32, 1)
        labels = np.stack([np.where(rng.random((size, size)) < 0.02, (base + 1) % 6, base) for _ in MONTHS])
        labels[:, :8, :8] = 6  # a snow patch: ignored
        return labels.astype(np.int8)

    def write_fake_frames(self, area_dir: Path, area: str, rng: np.random.Generator, labels: np.ndarray) -> None:
        palette = rng.integers(30, 220, (7, 4))
        for month, day in enumerate(month_days()):
            pixels = palette[labels[month].astype(np.int64)] + rng.integers(-8, 9, (*labels.shape[1:], 4))
            pixels = np.clip(pixels, 0, 255).astype(np.uint8).transpose(2, 0, 1)
            write_fake_jpeg(area_dir / f"{area}_{day}_rgb.jpeg", pixels[:3])
            write_fake_jpeg(area_dir / f"{area}_{day}_infra.jpeg", pixels[3:])
