"""ISPRS Vaihingen → prepared `vaihingen`, one domain `irrg`.

Dataset card
------------
- **Raw download**: `ISPRS_semantic_labeling_Vaihingen.zip` (`top/top_mosaic_09cm_area<N>.tif`, 3-band
  NIR-R-G, 9 cm, about 2000×2500 px, sizes vary) and
  `ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip`
  (`top_mosaic_09cm_area<N>_noBoundary.tif` at the archive root). Zipped or unpacked, in one folder.
- **Labels**: the eroded ground truth only (CrossEarth and mmseg use it; the non-eroded set names its
  files exactly like the images, which is how a mixed-up folder goes wrong). Same palette and decoding
  as Potsdam (`prep/isprs.py`).
- **Split**: mmseg's / CrossEarth's 16 train and 17 val areas; area 9's ground truth is not used.
  **Tiling**: mmseg's 512 windows, last clamped (`prep/isprs.py`): 344 train / 398 val windows.
- **Georeferencing**: kept when the TIFFs carry it (UNVERIFIED whether they do); CRS assumed EPSG:32632.
- **Citation**: Cramer, The DGPF test on digital aerial camera evaluation, PFG 2010; ISPRS 2D semantic
  labeling benchmark. **Licence**: ISPRS benchmark terms (research use; no redistribution).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo, raster_size

from . import isprs
from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .labels import stray_notes

TRAIN_AREAS = [f"area{n}" for n in (1, 11, 13, 15, 17, 21, 23, 26, 28, 3, 30, 32, 34, 37, 5, 7)]
VAL_AREAS = [f"area{n}" for n in (6, 24, 35, 16, 14, 22, 10, 4, 2, 20, 8, 31, 33, 27, 38, 12, 29)]
IMAGES_ARCHIVE = "ISPRS_semantic_labeling_Vaihingen.zip"
LABELS_ARCHIVE = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"
ARCHIVES = {IMAGES_ARCHIVE: None, LABELS_ARCHIVE: None}
CRS = "EPSG:32632"
GSD_M = 0.09
BANDS = ("nir", "red", "green")
PUBLISHED_COUNTS = {"irrg": {"train": 344, "val": 398}}


@register_preparer
class Vaihingen(Preparer):
    name = "vaihingen"
    summary = "ISPRS Vaihingen, IRRG, 6 classes, eroded labels, mmseg 512 tiling (CrossEarth V)"
    prep_version = 1
    archives = ARCHIVES
    classes = "isprs6"
    citation = ("Cramer, The DGPF test on digital aerial camera evaluation, PFG 2010; ISPRS 2D semantic "
                "labeling benchmark (Rottensteiner et al., ISPRS Annals I-3, 2012)")
    licence = isprs.LICENCE
    published_counts = PUBLISHED_COUNTS
    domains = {"irrg": DomainInfo(description="Vaihingen NIR-R-G orthophotos, 9 cm", gsd_m=GSD_M,
                                  bands=uint8_bands(BANDS))}

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """Both archives' content (unpacked, or zipped with `archive`), areas of varying size 520-700 px.
        The fakes carry no georeferencing (whether the real files do is unverified)."""
        root = Path(out) / "vaihingen_raw"
        images_dir = root / IMAGES_ARCHIVE.removesuffix(".zip")
        labels_dir = root / LABELS_ARCHIVE.removesuffix(".zip")
        for index, area in enumerate(TRAIN_AREAS + VAL_AREAS):
            rng = np.random.default_rng([seed, 100 + index])
            height, width = (int(v) for v in rng.integers(520, 700, 2))
            rgbir, classes = isprs.fake_scene(rng, height, width)
            isprs.write_tif(images_dir / "top" / f"top_mosaic_09cm_{area}.tif", rgbir[[3, 0, 1]])
            isprs.write_tif(labels_dir / f"top_mosaic_09cm_{area}_noBoundary.tif",
                            isprs.colour_label(isprs.eroded(classes)))
        if not archive:
            return root
        from .fakes import zip_folders

        # As distributed: images under `top/`, eroded labels at the archive root.
        return zip_folders(root, Path(out) / "vaihingen_download", [images_dir.name, labels_dir.name],
                           keep_folder=False)

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        images = {n.removeprefix("top_mosaic_09cm_").removesuffix(".tif"): p
                  for n, p in files.find("top/top_mosaic_09cm_area*.tif").items()}
        labels = {n.removeprefix("top_mosaic_09cm_").removesuffix("_noBoundary.tif"): p
                  for n, p in files.find("top_mosaic_09cm_area*_noBoundary.tif").items()}
        areas = TRAIN_AREAS + VAL_AREAS
        for found, what, archive in ((images, "image top/top_mosaic_09cm_{}.tif", IMAGES_ARCHIVE),
                                     (labels, "eroded label top_mosaic_09cm_{}_noBoundary.tif", LABELS_ARCHIVE)):
            missing = [a for a in areas if a not in found]
            if missing:
                raise DataError(f"{files.raw}: {len(missing)} of the 33 Vaihingen areas have no "
                                f"{what.format(missing[0])} (first missing)",
                                f"put {archive} (or its unpacked files) in the --raw folder")
        fingerprint = {"prep_version": self.prep_version, "files": {a: labels[a].stat().st_size for a in areas}}
        writer = self.open_writer(data_root, fingerprint=fingerprint, crs=CRS)
        expected: dict[tuple[str, str], int] = {}
        stray_total = 0
        for area in tqdm(areas, desc="prepare vaihingen", unit="area", disable=not progress):
            split = "train" if area in TRAIN_AREAS else "val"
            windows = isprs.tile_windows(*raster_size(labels[area]))
            expected[("irrg", split)] = expected.get(("irrg", split), 0) + len(windows)
            if all(writer.has(isprs.window_id("irrg", area, w)) for w in windows):
                continue
            label, stray = isprs.decode_label(labels[area])
            stray_total += stray
            pixels, transform = isprs.read_image(images[area])
            if pixels.shape != (3, *label.shape):
                raise DataError(f"{images[area]} is {pixels.shape} (bands×H×W) but its label {labels[area]} is "
                                f"{label.shape}", "the image and label archives are from different releases")
            isprs.add_tile(writer, pixels, label, domain="irrg", split=split, tile=area,
                           source_file=images[area].name, transform=transform)
        notes = ["labels: eroded ground truth (noBoundary), as CrossEarth"]
        notes += stray_notes(stray_total)
        return self.finish(writer, files, expected_counts=expected, notes=notes)

