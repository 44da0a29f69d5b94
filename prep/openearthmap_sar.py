"""OpenEarthMap-SAR (DFC25 track 1) → prepared `openearthmap_sar`, domains `sar` and `optical`.

Dataset card
------------
- **Raw download** (Zenodo record 14622048, as the winning solution arranges it; the folder name
  `DFC2025Track1` and the archive name are UNVERIFIED): `DFC2025Track1/train/{sar_images,rgb_images,labels}/<name>.tif`,
  `DFC2025Track1/val/{sar_images,labels}/`, `DFC2025Track1/test/sar_images/`. 1024×1024 GeoTIFFs: SAR single-band
  uint8, RGB 3-band uint8, labels single-band uint8 0..8, paired by identical file names.
- **Classes**: OpenEarthMap's 8 (`tasks/classes/openearthmap8.yaml`, the same indices as the optical
  OpenEarthMap prepared by `prep/openearthmap.py`): label 0 (background / unknown) → ignore, 1..8 → 0..7.
- **Domains**: `sar` (train, val, test) and `optical` (train: the RGB of the same scenes, same labels).
- **Training labels are pseudo-labels** derived from the optical images by pre-trained models (the contest's
  baseline README; the dataset paper says partially manual, fully pseudo-labelled). They are not ground truth:
  the card says so, and only `sar/val` carries reference labels (UNVERIFIED whether they are all manual).
- **No-data**: SAR images have zero-valued borders. Zero pixels reachable from the image edge along a row
  or a column (runs of zeros starting at an edge) are set to ignore in the SAR sample's label, so they are
  never scored; the count is in the card. (A stricter flood fill would also catch zero areas reachable
  only around corners; the contest winner's own edge filter is not reproduced exactly.)
- **Test** (`sar/test`) has no public labels: its inputs are prepared and the split is listed as unlabelled,
  so a task that tries to score it is refused with that reason (`predict` still writes maps for it). An
  organizer who holds the test labels passes `--private-labels DIR` (`DIR/test/labels/<name>.tif`, the
  release's label format): the split is then prepared labelled and the `dfc25-test` suite can be scored
  from submitted maps (docs/submissions.md). The fake writes such a folder beside the raw one
  (`oemsar_raw/private_labels`).
- **Counts** (UNVERIFIED per split; the total 5,033 is confirmed): 4,333 train / 210 val / 490 test.
- **Citation**: Xia et al., OpenEarthMap-SAR: A Benchmark Synthetic Aperture Radar Dataset for Global
  High-Resolution Land Cover Mapping, arXiv 2501.10891, 2025. **Licence**: CC BY-NC-SA 4.0 (UNVERIFIED).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import BandInfo, DomainInfo, SampleArrays, open_raster

from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .openearthmap import label_to_indices

FOLDER = "DFC2025Track1"
ARCHIVES = {"DFC2025Track1.zip": None}
CRS = "EPSG:32654"
PUBLISHED_COUNTS = {"sar": {"train": 4333, "val": 210, "test": 490}, "optical": {"train": 4333}}
FAKE_SIZE = 96
FAKE_COUNTS = {"train": 3, "val": 2, "test": 2}


def edge_zero_mask(sar: np.ndarray) -> np.ndarray:
    """Pixels in runs of zeros that start at an image edge, along rows or columns: the no-data border."""
    zero = sar == 0
    left = np.cumprod(zero, axis=1).astype(bool)
    right = np.cumprod(zero[:, ::-1], axis=1)[:, ::-1].astype(bool)
    top = np.cumprod(zero, axis=0).astype(bool)
    bottom = np.cumprod(zero[::-1], axis=0)[::-1].astype(bool)
    return left | right | top | bottom


def _read(path: Path) -> tuple[np.ndarray, Affine | None, str | None]:
    with open_raster(path) as src:
        transform = None if src.transform == Affine.identity() else src.transform
        return src.read(), transform, src.crs.to_string() if src.crs else None


@register_preparer
class OpenEarthMapSAR(Preparer):
    name = "openearthmap_sar"
    summary = "OpenEarthMap-SAR (DFC25 track 1): SAR and optical, 8 classes, pseudo-labelled train (DFC25 suite)"
    prep_version = 1
    archives = ARCHIVES
    classes = "openearthmap8"
    citation = ("Xia et al., OpenEarthMap-SAR: A Benchmark Synthetic Aperture Radar Dataset for Global "
                "High-Resolution Land Cover Mapping, arXiv 2501.10891, 2025")
    licence = "CC BY-NC-SA 4.0 (UNVERIFIED)"
    domains = {"sar": DomainInfo(description="airborne / spaceborne SAR amplitude, 0.15-0.5 m, Japan, France, USA",
                                 bands=[BandInfo(name="sar", dtype="uint8", units="DN")]),
               "optical": DomainInfo(description="RGB of the same scenes",
                                     bands=uint8_bands(("red", "green", "blue")))}
    published_counts = PUBLISHED_COUNTS
    private_label_splits = ("sar/test",)

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`DFC2025Track1/{train,val,test}/...` with zero SAR borders and every class at a known place."""
        root = Path(out) / "oemsar_raw" / FOLDER
        index = 0
        for split, count in FAKE_COUNTS.items():
            for _ in range(count):
                rng = np.random.default_rng([seed, index])
                label = np.kron(rng.integers(0, 9, (4, 4)), np.ones((24, 24), dtype=np.int64)).astype(np.uint8)
                label[10:12, 10:19] = np.arange(9, dtype=np.uint8)
                sar = np.clip(20 + 25 * label + rng.integers(-10, 11, label.shape), 1, 255).astype(np.uint8)
                sar[:, :6 + index] = 0  # a no-data border on the left,
                sar[-4:, :] = 0  # and at the bottom
                sar[40, 40] = 0  # an interior zero is data, not border
                rgb = np.clip(30 + 22 * label[None] + rng.integers(-8, 9, (3, *label.shape)), 0, 255).astype(np.uint8)
                name = f"{'TestArea' if split == 'test' else 'scene'}_{index:03d}.tif"
                transform = Affine(0.5, 0, 380_000 + 100 * index, 0, -0.5, 3_950_000)
                layers = {"sar_images": sar[None]}
                if split == "train":
                    layers["rgb_images"] = rgb
                layers["labels"] = label[None]  # test labels go to the organizer's private folder
                for folder, array in layers.items():
                    base = root.parent / "private_labels" if split == "test" and folder == "labels" else root
                    path = base / split / folder / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2],
                                       count=array.shape[0], dtype="uint8", crs=CRS, transform=transform,
                                       compress="deflate") as dst:
                        dst.write(array)
                index += 1
        if not archive:
            return root
        from .fakes import zip_folders

        return zip_folders(root.parent, root.parent.with_name("oemsar_download"), [FOLDER]) / f"{FOLDER}.zip"

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        work = self._plan(files)
        writer = self.open_writer(data_root, crs=CRS,
                                  fingerprint={"prep_version": self.prep_version, "count": len(work),
                                               "private_labels": self.private_labels is not None})
        expected: dict[tuple[str, str], int] = {}
        masked = 0
        for split, name, paths in tqdm(work, desc="prepare openearthmap_sar", unit="scene", disable=not progress):
            sar, transform, crs = _read(paths["sar_images"])
            border = edge_zero_mask(sar[0])
            masked += int(border.sum())
            if split == "test" and self.private_labels is not None:
                paths = {**paths, "labels": self._private_label(name)}
            if "labels" in paths:
                raw_label, _, _ = _read(paths["labels"])
                label = label_to_indices(raw_label[0], where=str(paths["labels"]))
            else:
                label = np.full(sar.shape[1:], IGNORE_INDEX, dtype=np.uint8)
            sar_label = label.copy()
            sar_label[border] = IGNORE_INDEX  # the border is no-data in the SAR image only
            stem = name.removesuffix(".tif")
            images = {"sar": (sar, sar_label)}
            if "rgb_images" in paths:
                images["optical"] = (_read(paths["rgb_images"])[0], label)
            for domain, (image, label) in images.items():
                expected[(domain, split)] = expected.get((domain, split), 0) + 1
                if image.shape[1:] != label.shape:
                    raise DataError(f"{FOLDER}/{split}: {name} has images and labels of different sizes",
                                    "the files do not belong together; re-extract the release")
                sample_id = f"{domain}_{split}_{stem}"
                if writer.has(sample_id):
                    continue
                writer.add(SampleArrays(sample_id=sample_id, domain=domain, split=split, image=image, label=label,
                                        source_file=f"{split}/{'sar_images' if domain == 'sar' else 'rgb_images'}/{name}",
                                        window=(0, 0, label.shape[1], label.shape[0]), transform=transform, crs=crs))
        private = self.private_labels is not None
        return self.finish(writer, files, expected_counts=expected, unlabelled=[] if private else ["sar/test"],
                           notes=["train labels (sar/train, optical/train) are PSEUDO-LABELS from optical models, "
                                  "not ground truth",
                                  "sar/test labelled from a private folder (an organizer's preparation): never publish "
                                  "this prepared copy" if private else "sar/test has no public labels: inputs only",
                                  f"{masked} zero-valued SAR border pixels set to ignore (no-data)"])

    def _private_label(self, name: str) -> Path:
        assert self.private_labels is not None
        path = self.private_labels / "test" / "labels" / name
        if not path.is_file():
            raise DataError(f"the private labels folder has no {path.relative_to(self.private_labels)} for test scene "
                            f"{name}", "pass --private-labels the folder holding test/labels/<scene>.tif")
        return path

    @staticmethod
    def _plan(files) -> list[tuple[str, str, dict[str, Path]]]:
        """(split, file name, {layer: path}) per scene, paired by file name; a partial scene is an error."""
        layers = {"train": ("sar_images", "rgb_images", "labels"), "val": ("sar_images", "labels"),
                  "test": ("sar_images",)}
        work = []
        for split, needed in layers.items():
            found = {layer: files.find(f"{split}/{layer}/*.tif") for layer in needed}
            if not found["sar_images"]:
                raise DataError(f"{files.raw} holds no {FOLDER}/{split}/sar_images/*.tif",
                                f"pass --raw the {FOLDER} folder (train/, val/, test/) or its archive")
            for layer, names in found.items():
                unmatched = sorted(set(names) ^ set(found["sar_images"]))
                if unmatched:
                    raise DataError(f"{FOLDER}/{split}: {unmatched[0]} is in one of sar_images/ and {layer}/ but not "
                                    "the other", "every scene needs all its files; re-extract the release")
            work += [(split, name, {layer: found[layer][name] for layer in needed}) for name in sorted(found["sar_images"])]
        return work
