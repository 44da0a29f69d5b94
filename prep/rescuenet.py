"""RescueNet → prepared `rescuenet`, one domain `uav`, splits `train`, `val`, `test`, in its 11 classes.

Dataset card
------------
- **Raw download**: the original 11-class release, a folder (or `RescueNet.zip`; the archive name is
  UNVERIFIED) holding `<split>/<split>-org-img/<id>.jpg` (UAV RGB JPEG, post-hurricane Michael) and
  `<split>/<split>-label-img/<id>_lab.png` (single-band class indices) for `train`, `val`, `test`.
- **Classes**: the PNG values 0..10 as `tasks/classes/rescuenet11.yaml` (the order of vehicle / road-clear /
  road-blocked is UNVERIFIED; the prepare prints the class histogram to check it). A value 11 means the
  later 12-class v1.0 release, whose encoding differs: it is refused rather than mis-mapped.
  CrossEarth's 5-class space is applied at evaluation by `tasks/label_maps/rescuenet11_to_potsdam_res5.yaml`.
- **Images are copied byte for byte** (JPEG); re-encoding them losslessly would only triple their size.
- **Counts**: 3595 / 449 / 450. CrossEarth evaluates on `test` (its configs read `test-org-img`) but its
  Table 1 gives 449 test images, which is the size of `val`: UNVERIFIED which one its numbers use.
- **Citation**: Rahnemoonfar et al., RescueNet: a high resolution UAV semantic segmentation dataset for
  natural disaster damage assessment, Scientific Data 2023. **Licence**: CC BY-NC-ND 4.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo, SampleArrays, read_raw_mask, read_raw_raster

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .fakes import write_raster
from .pairs import match_pairs

ARCHIVES = {"RescueNet.zip": None}
SPLITS = ("train", "val", "test")
DOMAIN = "uav"
NUM_CLASSES = 11
PUBLISHED_COUNTS = {DOMAIN: {"train": 3595, "val": 449, "test": 450}}
FAKE_SIZE = (90, 120)  # the real images are 3000×4000 (3:4; UNVERIFIED)
FAKE_COUNTS = {"train": 3, "val": 2, "test": 3}


def check_label(label: np.ndarray, where: str) -> np.ndarray:
    """The raw index label, after checking it holds only the 11 classes' values."""
    if label.max(initial=0) >= NUM_CLASSES:
        value = int(label.max())
        hint = (" (value 11 exists only in RescueNet v1.0, the 12-class release with another encoding)"
                if value == NUM_CLASSES else "")
        raise DataError(f"{where}: label value {value} is not one of RescueNet's 11 classes (0..10){hint}",
                        "use the original 11-class RescueNet release")
    return label


@register_preparer
class RescueNet(Preparer):
    name = "rescuenet"
    summary = "RescueNet (UAV, post-disaster), 11 classes; CrossEarth P2Res target via a 5-class label map"
    prep_version = 2  # 2: JPEGs decoded by libjpeg-turbo (Pillow), as the papers' pipelines decode them
    archives = ARCHIVES
    classes = "rescuenet11"
    citation = ("Rahnemoonfar et al., RescueNet: A High Resolution UAV Semantic Segmentation Dataset for "
                "Natural Disaster Damage Assessment, Scientific Data 10, 2023")
    licence = "CC BY-NC-ND 4.0"
    published_counts = PUBLISHED_COUNTS
    domains = {DOMAIN: DomainInfo(description="UAV images after hurricane Michael (2018), about 1.5 cm",
                                  bands=uint8_bands(("red", "green", "blue")))}

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`RescueNet/<split>/<split>-org-img/*.jpg` and `-label-img/*_lab.png`, or zipped with `archive`."""
        root = Path(out) / "rescuenet_raw"
        folder = root / "RescueNet"
        image_id = 10000
        for split in SPLITS:
            for _ in range(FAKE_COUNTS[split]):
                rng = np.random.default_rng([seed, image_id])
                height, width = FAKE_SIZE
                label = np.kron(rng.integers(0, NUM_CLASSES, (3, 4)), np.ones((30, 30), dtype=np.int64)).astype(np.uint8)
                label[:3, :NUM_CLASSES] = np.arange(NUM_CLASSES, dtype=np.uint8)  # every class at a known place
                image = np.clip(40 + 18 * label[None].astype(np.int16) + rng.integers(-8, 9, (3, height, width)),
                                0, 255).astype(np.uint8)
                split_dir = folder / split
                write_raster(split_dir / f"{split}-org-img" / f"{image_id}.jpg", image, "JPEG", quality=90)
                write_raster(split_dir / f"{split}-label-img" / f"{image_id}_lab.png", label[None])
                image_id += 1
        if not archive:
            return folder
        from .fakes import zip_folders

        return zip_folders(root, Path(out) / "rescuenet_download", ["RescueNet"]) / "RescueNet.zip"

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        work: list[tuple[str, Path, Path]] = []
        for split in SPLITS:
            images = {Path(n).stem: p for n, p in files.find(f"{split}/{split}-org-img/*.jpg").items()}
            labels = {n.removesuffix("_lab.png"): p for n, p in files.find(f"{split}/{split}-label-img/*_lab.png").items()}
            if not images:
                raise DataError(f"{files.raw} holds no {split}/{split}-org-img/*.jpg",
                                "pass --raw the RescueNet folder (with train/, val/, test/) or its archive")
            work += [(split, image, label) for _, image, label in
                     match_pairs(images, labels, f"RescueNet {split}", "the download or extraction is incomplete")]
        expected = {(DOMAIN, s): sum(1 for w in work if w[0] == s) for s in SPLITS}
        writer = self.open_writer(data_root, fingerprint={
            "prep_version": self.prep_version, "counts": {s: n for (_, s), n in expected.items()}})
        for split, image_path, label_path in tqdm(work, desc="prepare rescuenet", unit="img", disable=not progress):
            sample_id = f"{DOMAIN}_{image_path.stem}"
            if writer.has(sample_id):
                continue
            image = read_raw_raster(image_path)
            label = check_label(read_raw_mask(label_path), where=str(label_path))
            if image.shape != (3, *label.shape):
                raise DataError(f"{image_path} is {image.shape} (bands×H×W) but its label is {label.shape}",
                                "the image and label do not belong together; re-download RescueNet")
            writer.add(SampleArrays(sample_id=sample_id, domain=DOMAIN, split=split, image=image, label=label,
                                    source_file=f"{split}/{split}-org-img/{image_path.name}",
                                    window=(0, 0, label.shape[1], label.shape[0]), image_copy_from=image_path))
        return self.finish(writer, files, expected_counts=expected,
                           notes=["class order 6 vehicle / 7 road-clear / 8 road-blocked is UNVERIFIED: check the "
                                  "histogram",
                                  "CrossEarth Table 1 gives 449 test images; the test split has 450 (val has 449)"])
