"""OpenEarthMap → prepared `openearthmap`, one domain `global`, splits `train` and `val`, in its 8 classes.

Dataset card
------------
- **Raw download** (Zenodo record 7223446; archive name UNVERIFIED, `OpenEarthMap.zip` or
  `OpenEarthMap_wo_xBD.zip`): the folder `OpenEarthMap_wo_xBD/` with `train.txt`, `val.txt`, `test.txt`,
  `xbd_files.csv` and `<region>/images/<region>_<n>.tif` (RGB GeoTIFF) and `<region>/labels/<region>_<n>.tif`
  (single-band uint8 GeoTIFF). Images from xBD regions are not distributed (only their labels);
  `xbd_files.csv` lists them (xBD source file, OpenEarthMap file).
- **Splits**: the `train.txt` / `val.txt` lists *without* the xBD-derived files, present or not: CrossEarth's
  U2OEM target is val without them (500 − 116 = 384 images). Test labels are not prepared.
- **Classes**: label 0 (unknown) → 255, 1..8 → 0..7 (`tasks/classes/openearthmap8.yaml`). U2OEM scores
  them in LoveDA's 7 through `tasks/label_maps/openearthmap8_to_loveda7.yaml`.
- **Georeferencing**: each file's own CRS and transform are kept (regions span many UTM zones; manifest
  footprints are then in EPSG:4326). Sizes vary (mostly 1024²) and are kept.
- **Citation**: Xia et al., OpenEarthMap: A benchmark dataset for global high-resolution land cover
  mapping, WACV 2023. **Licence**: CC BY-NC-SA 4.0 (xBD-derived parts: their own terms).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import DomainInfo, SampleArrays, open_raster

from .base import Preparer, RawFiles, register_preparer, uint8_bands

FOLDER = "OpenEarthMap_wo_xBD"
ARCHIVES = {"OpenEarthMap.zip": None, "OpenEarthMap_wo_xBD.zip": None}
SPLITS = ("train", "val")
DOMAIN = "global"
NUM_CLASSES = 8
PUBLISHED_COUNTS = {DOMAIN: {"val": 384}}
# Fake regions: name, CRS, size, and whether it is an xBD region (labels only in the release).
_FAKE_REGIONS = (("aachen", "EPSG:32632", (64, 64), False), ("tokyo", "EPSG:32654", (72, 80), False),
                 ("el_rodeo", "EPSG:32615", (64, 64), True))
_FAKE_TILES_PER_REGION = 4


def label_to_indices(raw: np.ndarray, where: str) -> np.ndarray:
    """OpenEarthMap label values → openearthmap8 indices: 0 → 255, 1..8 → 0..7; anything else raises."""
    if raw.max(initial=0) > NUM_CLASSES:
        raise DataError(f"{where}: label value {int(raw.max())} is not an OpenEarthMap class (0 unknown, 1..8)",
                        "the label file is not from the OpenEarthMap release")
    return np.where(raw == 0, IGNORE_INDEX, raw.astype(np.int16) - 1).astype(np.uint8)


def region_of(file_name: str) -> str:
    return file_name.removesuffix(".tif").rsplit("_", 1)[0]


@register_preparer
class OpenEarthMap(Preparer):
    name = "openearthmap"
    summary = "OpenEarthMap (97 regions, 44 countries), 8 classes; CrossEarth U2OEM target via LoveDA's 7"
    prep_version = 1
    archives = ARCHIVES
    classes = "openearthmap8"
    citation = ("Xia et al., OpenEarthMap: A Benchmark Dataset for Global High-Resolution Land Cover Mapping, "
                "WACV 2023")
    licence = "CC BY-NC-SA 4.0 (xBD-derived parts under their own terms)"
    published_counts = PUBLISHED_COUNTS
    domains = {DOMAIN: DomainInfo(description="aerial and satellite RGB, 97 regions in 44 countries, 0.25-0.5 m",
                                  bands=uint8_bands(("red", "green", "blue")))}

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`OpenEarthMap_wo_xBD/` with split lists, xbd_files.csv, and GeoTIFFs in per-region UTM zones."""
        root = Path(out) / "openearthmap_raw"
        folder = root / FOLDER
        lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        xbd_rows = []
        for r, (region, crs, (height, width), is_xbd) in enumerate(_FAKE_REGIONS):
            for n in range(1, _FAKE_TILES_PER_REGION + 1):
                name = f"{region}_{n}.tif"
                lists[("train", "train", "val", "test")[n - 1]].append(name)
                rng = np.random.default_rng([seed, r, n])
                label = np.kron(rng.integers(0, NUM_CLASSES + 1, (4, 4)),
                                np.ones((height // 4, width // 4), dtype=np.int64)).astype(np.uint8)
                label[:2, :NUM_CLASSES + 1] = np.arange(NUM_CLASSES + 1, dtype=np.uint8)
                image = np.clip(30 + 22 * label[None].astype(np.int16) + rng.integers(-6, 7, (3, height, width)),
                                0, 255).astype(np.uint8)
                transform = Affine(0.5, 0, 300_000 + 100 * n, 0, -0.5, 4_000_000)
                _write_geotiff(folder / region / "labels" / name, label[None], crs, transform)
                if is_xbd:
                    xbd_rows.append((f"guatemala-volcano_{n:08d}_pre_disaster.png", name))
                else:
                    _write_geotiff(folder / region / "images" / name, image, crs, transform)
        for split, names in lists.items():
            (folder / f"{split}.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
        with open(folder / "xbd_files.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(xbd_rows)
        (folder / "readme.txt").write_text("fake OpenEarthMap release written by rsdg-bench for tests\n")
        if not archive:
            return folder
        from .fakes import zip_folders

        return zip_folders(root, Path(out) / "openearthmap_download", [FOLDER]) / f"{FOLDER}.zip"

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        lists = files.find("val.txt")
        if "val.txt" not in lists:
            raise DataError(f"{files.raw} holds no {FOLDER}/val.txt",
                            f"pass --raw the {FOLDER} folder or the OpenEarthMap archive")
        folder = lists["val.txt"].parent
        xbd_csv = folder / "xbd_files.csv"
        if not xbd_csv.is_file():
            raise DataError(f"{xbd_csv} is missing", "it ships with the OpenEarthMap release; re-extract the archive")
        with open(xbd_csv, newline="") as handle:
            xbd = {row[1].strip() for row in csv.reader(handle) if len(row) >= 2}
        work: list[tuple[str, str]] = []
        skipped = 0
        for split in SPLITS:
            list_path = folder / f"{split}.txt"
            if not list_path.is_file():
                raise DataError(f"{list_path} is missing", "re-extract the OpenEarthMap archive")
            names = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
            skipped += sum(1 for n in names if n in xbd)
            work += [(split, n) for n in names if n not in xbd]
        missing = [n for _, n in work for sub in ("images", "labels") if not (folder / region_of(n) / sub / n).is_file()]
        if missing:
            raise DataError(f"{len(missing)} file(s) listed in train.txt/val.txt are missing, first "
                            f"{folder / region_of(missing[0])}/images|labels/{missing[0]}",
                            "the download or extraction is incomplete; re-extract the archive")
        expected = {(DOMAIN, s): sum(1 for w in work if w[0] == s) for s in SPLITS}
        writer = self.open_writer(data_root, fingerprint={
            "prep_version": self.prep_version, "counts": {s: n for (_, s), n in expected.items()}})
        for split, name in tqdm(work, desc="prepare openearthmap", unit="img", disable=not progress):
            sample_id = f"{DOMAIN}_{name.removesuffix('.tif')}"
            if writer.has(sample_id):
                continue
            image_path, label_path = folder / region_of(name) / "images" / name, folder / region_of(name) / "labels" / name
            with open_raster(image_path) as src:
                image, transform, crs = src.read(), src.transform, src.crs
            with open_raster(label_path) as src:
                label = label_to_indices(src.read(1), where=str(label_path))
            if image.shape[0] < 3 or image.shape[1:] != label.shape:
                raise DataError(f"{image_path} is {image.shape} (bands×H×W) but its label is {label.shape}",
                                "the image and label do not belong together; re-extract the archive")
            writer.add(SampleArrays(sample_id=sample_id, domain=DOMAIN, split=split, image=image[:3], label=label,
                                    source_file=f"{region_of(name)}/images/{name}",
                                    window=(0, 0, label.shape[1], label.shape[0]),
                                    transform=transform if crs else None, crs=crs.to_string() if crs else None))
        return self.finish(writer, files, expected_counts=expected,
                           notes=[f"{skipped} xBD-derived entries of train.txt/val.txt left out (listed in "
                                  "xbd_files.csv), as CrossEarth's U2OEM target (val without them: 384)"])


def _write_geotiff(path: Path, array: np.ndarray, crs: str, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype="uint8", crs=crs, transform=transform, compress="deflate") as dst:
        dst.write(array)
