"""LoveDA → prepared `loveda`, domains `urban` and `rural`, splits `train` and `val`.

Dataset card
------------
- **Raw download** (Zenodo record 5706578): `Train.zip`, `Val.zip` (and `Test.zip`, which has no masks and
  is not prepared), each checked against its published md5 before extraction, unpacking to
  `<Split>/<Urban|Rural>/images_png/<id>.png` (1024×1024 RGB, 0.3 m) and
  `.../masks_png/<id>.png` (single-band uint8). Zipped or unpacked, in one folder.
- **Labels**: mask 0 is no-data → 255; 1..7 (background, building, road, water, barren, forest,
  agricultural) → 0..6 (`tasks/classes/loveda7.yaml`), as the official loader's `mask - 1` and mmseg's
  `reduce_zero_label`. Any other value is an error naming the file.
- **No tiling**: CrossEarth trains and evaluates on the native 1024² images.
- **Counts**: Train 1156 urban / 1366 rural, Val 677 / 992. CrossEarth's Table 1 gives R2U's test size as 667;
  the data has 677 (the six split sizes, with Test 820/976, add up to LoveDA's 5987 images), so 667 is a typo.
- **Citation**: Wang et al., LoveDA: A remote sensing land-cover dataset for domain adaptive semantic
  segmentation, NeurIPS Datasets and Benchmarks 2021. **Licence**: CC BY-NC-SA 4.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import DomainInfo, SampleArrays, quiet_georef, read_raw_mask, read_raw_raster

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .pairs import match_pairs

# Zenodo record 5706578's md5s (as TorchGeo's LoveDA class also checks them).
ARCHIVES = {"Train.zip": "md5:de2b196043ed9b4af1690b3f9a7d558f", "Val.zip": "md5:84cae2577468ff0b5386758bb386d31d",
            "Test.zip": "md5:a489be0090465e01fb067795d24e6b47"}
SPLITS = {"train": "Train", "val": "Val"}
DOMAINS = {"urban": "Urban", "rural": "Rural"}
PUBLISHED_COUNTS = {"urban": {"train": 1156, "val": 677}, "rural": {"train": 1366, "val": 992}}
NUM_CLASSES = 7
FAKE_SIZE = 96
FAKE_COUNT = 3
# Mean RGB per raw mask value 1..7 for the fakes.
_FAKE_COLOURS = np.array([[128, 128, 128], [180, 90, 80], [110, 110, 115], [40, 70, 130], [170, 150, 120],
                          [50, 110, 50], [150, 170, 90]], dtype=np.int16)


def mask_to_indices(mask: np.ndarray, where: str) -> np.ndarray:
    """LoveDA mask values → loveda7 indices: 0 (no-data) → 255, 1..7 → 0..6; anything else raises."""
    bad = mask > NUM_CLASSES
    if bad.any():
        ys, xs = np.nonzero(bad)
        raise DataError(f"{where}: mask value {int(mask[ys[0], xs[0]])} at (row {ys[0]}, col {xs[0]}) is not a "
                        f"LoveDA class (0 no-data, 1..7)", "the mask is not from the LoveDA release; re-download it")
    return np.where(mask == 0, IGNORE_INDEX, mask - 1).astype(np.uint8)


@register_preparer
class LoveDA(Preparer):
    name = "loveda"
    summary = "LoveDA, urban and rural domains, 7 classes, native 1024 images (CrossEarth U2R, R2U, U2OEM)"
    prep_version = 2  # 2: sample ids name the split (unique across splits)
    archives = ARCHIVES
    classes = "loveda7"
    citation = ("Wang et al., LoveDA: A Remote Sensing Land-Cover Dataset for Domain Adaptive Semantic "
                "Segmentation, NeurIPS Datasets and Benchmarks 2021")
    licence = "CC BY-NC-SA 4.0"
    published_counts = PUBLISHED_COUNTS
    domains = {d: DomainInfo(description=f"LoveDA {DOMAINS[d]} (Nanjing, Changzhou, Wuhan), 0.3 m", gsd_m=0.3,
                             bands=uint8_bands(("red", "green", "blue")))
               for d in DOMAINS}

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`Train/`, `Val/` and `Test/` (no masks) as unpacked, or with `archive` as the three zips."""
        import rasterio

        root = Path(out) / "loveda_raw"
        image_id = 0
        for split_dir in ("Train", "Val", "Test"):
            for domain_dir in ("Rural", "Urban"):
                for _ in range(FAKE_COUNT):
                    rng = np.random.default_rng([seed, image_id])
                    mask = np.kron(rng.integers(0, NUM_CLASSES + 1, (6, 6)),
                                   np.ones((FAKE_SIZE // 6, FAKE_SIZE // 6), dtype=np.int64)).astype(np.uint8)
                    mask[:4, :NUM_CLASSES + 1] = np.arange(NUM_CLASSES + 1, dtype=np.uint8)  # every value at a known place
                    image = _FAKE_COLOURS[np.maximum(mask, 1) - 1].transpose(2, 0, 1)
                    image = np.clip(image + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
                    folder = root / split_dir / domain_dir
                    for sub, array in (("images_png", image), ("masks_png", mask[None])):
                        if split_dir == "Test" and sub == "masks_png":
                            continue
                        (folder / sub).mkdir(parents=True, exist_ok=True)
                        with quiet_georef(), rasterio.open(folder / sub / f"{image_id}.png", "w", driver="PNG",
                                                           height=FAKE_SIZE, width=FAKE_SIZE, count=array.shape[0],
                                                           dtype="uint8") as dst:
                            dst.write(array)
                    image_id += 1
        if not archive:
            return root
        from .fakes import zip_folders

        return zip_folders(root, Path(out) / "loveda_download", ["Train", "Val", "Test"])

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        work: list[tuple[str, str, Path, Path]] = []
        for split, split_dir in SPLITS.items():
            for domain, domain_dir in DOMAINS.items():
                images = files.find(f"{split_dir}/{domain_dir}/images_png/*.png")
                masks = files.find(f"{split_dir}/{domain_dir}/masks_png/*.png")
                if not images:
                    raise DataError(f"{files.raw} holds no {split_dir}/{domain_dir}/images_png/*.png",
                                    f"put {split_dir}.zip (or its unpacked {split_dir}/ folder) in the --raw folder")
                pairs = match_pairs(images, masks, f"LoveDA {split_dir}/{domain_dir}",
                                    f"the {split_dir}.zip extraction is incomplete; extract it again")
                work += [(domain, split, image, mask) for key, image, mask in sorted(pairs, key=lambda p: _numeric(p[0]))]
        expected: dict[tuple[str, str], int] = {}
        for domain, split, _, _ in work:
            expected[(domain, split)] = expected.get((domain, split), 0) + 1
        fingerprint = {"prep_version": self.prep_version, "counts": {f"{d}/{s}": n for (d, s), n in expected.items()}}
        writer = self.open_writer(data_root, fingerprint=fingerprint)
        for domain, split, image_path, mask_path in tqdm(work, desc="prepare loveda", unit="img", disable=not progress):
            sample_id = f"{domain}_{split}_{image_path.stem}"
            if writer.has(sample_id):
                continue
            image = read_raw_raster(image_path)
            if image.shape[0] != 3 or image.dtype != np.uint8:
                raise DataError(f"{image_path} is {image.dtype} with {image.shape[0]} bands, expected 3-band uint8 RGB",
                                "the file is not from the LoveDA release")
            label = mask_to_indices(read_raw_mask(mask_path), where=str(mask_path))
            writer.add(SampleArrays(sample_id=sample_id, domain=domain, split=split, image=image, label=label,
                                    source_file=f"{SPLITS[split]}/{DOMAINS[domain]}/images_png/{image_path.name}",
                                    window=(0, 0, label.shape[1], label.shape[0])))
        return self.finish(writer, files, expected_counts=expected,
                           notes=["CrossEarth Table 1 gives R2U's test size as 667; LoveDA Val/Urban has 677 images "
                                  "(typo in the paper)"])


def _numeric(name: str) -> tuple[int, str]:
    stem = Path(name).stem
    return (int(stem), stem) if stem.isdigit() else (1 << 62, stem)
