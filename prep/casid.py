"""CASID → prepared `casid`, domains `sub`, `tem`, `tms`, `trf` (4 climate zones), 1024² crops, 5 classes.

Dataset card
------------
- **Raw download**: one download per climate zone (Baidu, code `casi`, per the CASID README); 980 images
  of 5000×5000 over 30 Asian areas. **The raw file layout is UNVERIFIED**; we assume CrossEarth's naming
  (`rs_dataset/casid.py`: images `.png`, labels `-label.png`) arranged per zone as
  `CASID/<SubMs|TemMs|TroMs|TroRf>/image/<name>.png` and `CASID/<zone>/label/<name>-label.png`. Labels may be
  CrossEarth's colour palette (RGB) or class indices 0..4 (one band, 255 = ignore); both are decoded.
- **Classes**: background, building, forest, road, water (`tasks/classes/casid5.yaml`); black is background.
- **Crops**: 1024×1024 on the mmseg converter's grid (non-overlapping, last crop clamped to the edge), which
  gives 5 × 5 = 25 crops per 5000² image, matching the published totals (24,500 = 980 × 25).
- **Split, UNVERIFIED**: CrossEarth did not publish its split. When a zone folder holds `train.txt` and
  `test.txt` (image names, one per line) they are used. Otherwise the documented rule: images sorted by name,
  the first round(n × train share) are train, where the train share is Table 1's (Sub 4900/7100, Tem 5025/7100,
  Tms 3400/5050, Trf 3700/5250); on the full zones that is 196/88, 201/83, 136/66, 148/62 images. The card
  records which rule was used for each zone.
- **Counts** (Table 1, crops): Sub 4900/2200, Tem 5025/2075, Tms 3400/1650, Trf 3700/1550.
- **Citation**: Liu et al., CASID: A Large-scale Climate-Aware Satellite Image Dataset for Domain Adaptive
  Land-Cover Semantic Segmentation, ISPRS J. Photogramm. Remote Sens., 2023. **Licence**: research use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import DomainInfo, SampleArrays, raster_size, read_raw_raster
from rsdg_bench.datasets.windows import window_grid

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .fakes import blocky_classes, write_raster
from .labels import decode_colour_label, stray_notes

CROP = 1024
ZONES = {"sub": "SubMs", "tem": "TemMs", "tms": "TroMs", "trf": "TroRf"}
ZONE_NAMES = {"sub": "Subtropical Monsoon", "tem": "Temperate Monsoon", "tms": "Tropical Monsoon",
              "trf": "Tropical Rainforest"}
PUBLISHED_COUNTS = {"sub": {"train": 4900, "test": 2200}, "tem": {"train": 5025, "test": 2075},
                    "tms": {"train": 3400, "test": 1650}, "trf": {"train": 3700, "test": 1550}}
PALETTE = {(0, 0, 0): 0, (255, 255, 0): 1, (85, 255, 0): 2, (255, 0, 0): 3, (0, 112, 255): 4}
STRAY_TOLERANCE = 1e-4
ARCHIVES = {f"{folder}.zip": None for folder in ZONES.values()}
FAKE_SIZE = (1100, 1090)  # > 1024 on both axes: 2 × 2 crops, the last clamped
FAKE_IMAGES = 3


def train_image_count(zone: str, num_images: int) -> int:
    """The documented split rule: Table 1's train share of the zone, applied to the images present."""
    counts = PUBLISHED_COUNTS[zone]
    return round(num_images * counts["train"] / (counts["train"] + counts["test"]))


def decode_label(label: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """casid5 indices from a colour (3-band) or index (1-band) label, and the count of stray pixels."""
    if label.shape[0] >= 3:
        return decode_colour_label(np.ascontiguousarray(label[:3].transpose(1, 2, 0)), PALETTE, where, STRAY_TOLERANCE)
    values = label[0]
    bad = (values > 4) & (values != IGNORE_INDEX)
    if bad.any():
        ys, xs = np.nonzero(bad)
        raise DataError(f"{where}: label value {int(values[ys[0], xs[0]])} at (row {ys[0]}, col {xs[0]}) is not a "
                        "CASID class (0..4) nor 255", "the label file is not CASID's")
    return values.copy(), 0


@register_preparer
class CASID(Preparer):
    name = "casid"
    summary = "CASID, 4 climate zones of Asia, 5 classes, 1024² crops (CrossEarth's 16 CASID settings)"
    prep_version = 1
    archives = ARCHIVES
    classes = "casid5"
    citation = ("Liu et al., CASID: A Large-scale Climate-Aware Satellite Image Dataset for Domain Adaptive "
                "Land-Cover Semantic Segmentation, ISPRS J. Photogramm. Remote Sens., 2023")
    licence = "research use (CASID terms)"
    domains = {d: DomainInfo(description=f"{ZONE_NAMES[d]} climate zone, satellite RGB",
                             bands=uint8_bands(("red", "green", "blue"))) for d in ZONES}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`CASID/<zone>/image/<name>.png` and `label/<name>-label.png` (colour labels), 3 images per zone."""
        root = Path(out) / "casid_raw"
        colours = np.array(list(PALETTE), dtype=np.uint8)
        for z, folder in enumerate(ZONES.values()):
            for n in range(FAKE_IMAGES):
                rng = np.random.default_rng([seed, z, n])
                classes = blocky_classes(rng, *FAKE_SIZE, 5, (5, 5))
                classes[:4, :20] = np.repeat(np.arange(5, dtype=np.uint8), 4)  # every class at a known place
                image = np.clip(50 + 35 * classes[None].astype(np.int16) + 10 * z
                                + rng.integers(-8, 9, (3, *FAKE_SIZE)), 0, 255).astype(np.uint8)
                name = f"{folder.lower()}_{n:03d}"
                write_raster(root / "CASID" / folder / "image" / f"{name}.png", image)
                write_raster(root / "CASID" / folder / "label" / f"{name}-label.png",
                             colours[classes].transpose(2, 0, 1))
        if not archive:
            return root / "CASID"
        from .fakes import zip_folders

        zips = zip_folders(root / "CASID", root.with_name("casid_download"), list(ZONES.values()))
        root.rmdir()
        return zips

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        work, notes = self._plan(files)
        writer = self.open_writer(data_root, fingerprint={
            "prep_version": self.prep_version, "images": sorted(f"{d}/{s}/{i.name}" for d, s, i, _ in work)})
        expected: dict[tuple[str, str], int] = {}
        stray_total = 0
        for domain, split, image_path, label_path in tqdm(work, desc="prepare casid", unit="img",
                                                          disable=not progress):
            stem = image_path.stem
            height, width = raster_size(label_path)
            windows = window_grid(height, width, CROP, CROP)
            expected[(domain, split)] = expected.get((domain, split), 0) + len(windows)
            ids = [f"{domain}_{stem}_{x0}_{y0}_{x1}_{y1}" for y0, y1, x0, x1 in windows]
            if all(writer.has(i) for i in ids):
                continue
            image = read_raw_raster(image_path)[:3]
            label, stray = decode_label(read_raw_raster(label_path), str(label_path))
            stray_total += stray
            if image.shape[1:] != label.shape:
                raise DataError(f"{image_path} is {image.shape[1]}×{image.shape[2]} but its label is "
                                f"{label.shape[0]}×{label.shape[1]}", "the image and label do not belong together")
            for sample_id, (y0, y1, x0, x1) in zip(ids, windows, strict=True):
                writer.add(SampleArrays(sample_id=sample_id, domain=domain, split=split,
                                        image=np.ascontiguousarray(image[:, y0:y1, x0:x1]),
                                        label=np.ascontiguousarray(label[y0:y1, x0:x1]),
                                        source_file=f"{ZONES[domain]}/image/{image_path.name}",
                                        window=(x0, y0, x1, y1)))
        notes += stray_notes(stray_total)
        return self.finish(writer, files, expected_counts=expected, notes=notes)

    @staticmethod
    def _plan(files) -> tuple[list[tuple[str, str, Path, Path]], list[str]]:
        """(domain, split, image, label) for every image of every zone, and the split rule used per zone."""
        work, notes = [], []
        for domain, folder in ZONES.items():
            images = {n.removesuffix(".png"): p for n, p in files.find(f"{folder}/image/*.png").items()}
            labels = {n.removesuffix("-label.png"): p for n, p in files.find(f"{folder}/label/*-label.png").items()}
            if not images:
                raise DataError(f"{files.raw} holds no {folder}/image/*.png (the {ZONE_NAMES[domain]} zone)",
                                "arrange the four zone downloads as the card in prep/casid.py describes")
            unmatched = sorted(set(images) ^ set(labels))
            if unmatched:
                raise DataError(f"CASID {folder}: {len(unmatched)} image(s) without a label or the reverse, first "
                                f"{unmatched[0]}", "each image/<name>.png needs label/<name>-label.png")
            names = sorted(images)
            lists = {s: files.find(f"{folder}/{s}.txt") for s in ("train", "test")}
            if all(f"{s}.txt" in found for s, found in lists.items()):
                split_of = {line.strip().removesuffix(".png"): s for s, found in lists.items()
                            for line in found[f"{s}.txt"].read_text().splitlines() if line.strip()}
                unlisted = [n for n in names if n not in split_of]
                if unlisted:
                    raise DataError(f"CASID {folder}: {unlisted[0]} is in neither train.txt nor test.txt",
                                    "list every image of the zone in one of the two files")
                notes.append(f"{domain}: split from {folder}/train.txt and test.txt")
            else:
                cut = train_image_count(domain, len(names))
                split_of = {n: "train" if i < cut else "test" for i, n in enumerate(names)}
                notes.append(f"{domain}: split by the documented rule (first {cut} of {len(names)} images by name are "
                             "train; CrossEarth's own split is unpublished)")
            work += [(domain, split_of[n], images[n], labels[n]) for n in names]
        return work, notes
