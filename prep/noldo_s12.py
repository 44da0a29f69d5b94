"""NoLDO-S12 (CromSS) → prepared `noldo_s12`: SSL4EO-S12@DW and @OSM, Sentinel-2 and Sentinel-1, plus a
lazy index of the SSL4EO-S12@NoL noisy-label pretraining set.

Dataset card
------------
- **Raw download** (Hugging Face `vikki23/NoLDO-S12`): `ssl4eo_s12_dw.zip`, `ssl4eo_s12_osm.zip`,
  `ssl4eo_s12_nol.zip`, or what they unpack to. The zips' inner layout is UNVERIFIED; this reads the layout
  CromSS's conversion code expects: `data_s12/{dw_train,dw_test,osm_train,osm_test}/{image_s1,image_s2,
  label_dw,label_osm}/<prefix>_<id>.tif` with `<id>` = `<lon>_<lat>-<YYYYMMDD>` (test ids write the decimal
  point as `p`). Files are paired by the id after the 3-character prefix of `image_s1/`; a missing partner
  is an error naming the file.
- **Images**: S2 L1C, 13 bands `B1 … B8, B8A, B9 … B12` (GEE `COPERNICUS/S2`), bilinearly resampled to
  10 m, int16 (TOA reflectance × 10 000), kept as stored; S1 GRD IW `VV, VH` in dB, float32. Both are kept
  as GeoTIFFs with their georeferencing; band names are in the card. Train tiles are 510×510, test tiles
  512×512; neither is padded (CromSS's lmdb writer edge-pads 510 → 512; the harness crops and slides any
  size, so padding would only invent pixels).
- **Domains**: `dw_s2`, `dw_s1`, `osm_s2`, `osm_s1` (a task picks the modality by domain and, within S2,
  its bands by name), splits `train` and `test`.
- **Labels**: DW (`label_dw/dw_<id>.tif`; band 2 when a file has several bands, as CromSS reads it): 0
  unlabelled and 10 cloud → ignore, 1..9 → 0..8 (`dynamicworld9`). OSM (`label_osm/osm_<id>.tif`): 0 no OSM
  label → ignore, 1..13 → 0..12 (`osm13`, CromSS's `CLS_DICT[13]` order). Any other value is an error.
- **Counts** (CromSS README): DW 3,574 train / 340 test; OSM 1,375 train / 400 test. The paper says 1,372
  OSM training tiles; which `osm_train` variant gives which is UNVERIFIED, so both are accepted as the
  published size (the card's `published_alternatives`, with their sources).
- **NoL** (pretraining, 103,793 locations × 4 seasons): not copied. When `ssl4eo_s12_nol` is present
  unpacked (`dw_complete_ids.csv` with columns `ids, sub1..sub4`, labels `dw_noisy_labels/<id:07d>/<sub>/label.tif`),
  `nol_index.parquet` in the prepared folder lists one row per location and season with the label's path
  in the user's folder and the matching SSL4EO-S12 image folders (`s1/<id:07d>/<sub>/`, `s2c/<id:07d>/<sub>/`,
  relative to an SSL4EO-S12 download). Noisy labels are 0-based DW classes 0..8, no ignore value.
- **Citation**: Liu et al., Multi-modal Co-learning with Noisy Labels for Remote Sensing (CromSS), IEEE TGRS
  2025. **Licence**: CC BY 4.0 (UNVERIFIED).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.transform import Affine
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.base.io import atomic_write_bytes
from rsdg_bench.datasets.classes import IGNORE_INDEX, load_class_schema
from rsdg_bench.datasets.prepared import BandInfo, DomainInfo, SampleArrays, open_raster, quiet_georef

from .base import Preparer, RawFiles, register_preparer

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
ARCHIVES = {"ssl4eo_s12_dw.zip": None, "ssl4eo_s12_osm.zip": None}
NOL_ARCHIVE = "ssl4eo_s12_nol.zip"
CRS = "EPSG:4326"
PUBLISHED_COUNTS = {"dw_s2": {"train": 3574, "test": 340}, "dw_s1": {"train": 3574, "test": 340},
                    "osm_s2": {"train": 1375, "test": 400}, "osm_s1": {"train": 1375, "test": 400}}
# Other published sizes of a split, with their source: the CromSS paper (§III) says 1,372 OSM training tiles, its
# README 1,375; which osm_train release gives which is UNVERIFIED, so a split of either size is the published one.
PUBLISHED_ALTERNATIVES = {domain: {"train": {"CromSS paper §III": 1372}} for domain in ("osm_s2", "osm_s1")}
# label set → (raw values that mean "no label", number of classes); raw 1..K become 0..K-1.
LABELS = {"dw": ({0, 10}, 9), "osm": ({0}, 13)}
FAKE_SIZES = {"train": 30, "test": 32}
FAKE_COUNTS = {("dw", "train"): 3, ("dw", "test"): 2, ("osm", "train"): 2, ("osm", "test"): 2}
PIXEL_DEG = 0.0001  # ≈ 10 m


def decode_label(raw: np.ndarray, labels: str, where: str) -> np.ndarray:
    """Raw DW (0..10) or OSM (0..13) values → 0-based classes with the no-label values as ignore."""
    no_label, num_classes = LABELS[labels]
    known = set(range(num_classes + 1)) | no_label
    stray = sorted(set(np.unique(raw).tolist()) - known)
    if stray:
        raise DataError(f"{where} holds label value(s) {stray[:5]}; {labels.upper()} labels are "
                        f"{sorted(known)}", "the file is not a NoLDO-S12 label; re-extract the release")
    out = raw.astype(np.int64) - 1
    out[np.isin(raw, list(no_label))] = IGNORE_INDEX
    return out.astype(np.uint8)


def _read(path: Path) -> tuple[np.ndarray, Affine, str | None]:
    with open_raster(path) as src:
        return src.read(), src.transform, src.crs.to_string() if src.crs else None


def fake_id(lon: float, lat: float, date: str, test: bool) -> str:
    """A NoLDO-S12 id; test ids write the decimal point as `p`, as the release does."""
    text = f"{lon:.10f}_{lat:.10f}-{date}"
    return text.replace(".", "p") if test else text


@register_preparer
class NoLDOS12(Preparer):
    name = "noldo_s12"
    summary = "NoLDO-S12 (CromSS): SSL4EO-S12@DW (9 classes) and @OSM (13), Sentinel-2 13 bands and Sentinel-1"
    prep_version = 1
    archives = ARCHIVES
    classes = "dynamicworld9"
    citation = ("Liu et al., Multi-modal Co-learning with Noisy Labels for Remote Sensing (CromSS), "
                "IEEE TGRS 2025; SSL4EO-S12: Wang et al., IEEE GRSM 2023")
    licence = "CC BY 4.0 (UNVERIFIED)"
    domains = {f"{labels}_{mod}": DomainInfo(
        description=f"SSL4EO-S12@{labels.upper()} tiles, "
                    + ("Sentinel-2 L1C, 13 bands resampled to 10 m" if mod == "s2" else
                       "Sentinel-1 GRD IW, VV and VH in dB on the S2 grid"),
        gsd_m=10.0,
        bands=[BandInfo(name=b, dtype="int16", units="TOA reflectance x 10000") for b in S2_BANDS]
        if mod == "s2" else [BandInfo(name=b, dtype="float32", units="dB") for b in S1_BANDS])
        for labels in LABELS for mod in ("s2", "s1")}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """`data_s12/...` for DW and OSM (every class and no-label value at known pixels, the last DW test
        tile overlapping a train tile) and a 2-location NoL folder; with `archive`, the DW and OSM zips as
        downloaded and the NoL folder unpacked beside them."""
        root = Path(out) / "noldo_raw"
        index = 0
        for (labels, split), count in FAKE_COUNTS.items():
            size = FAKE_SIZES[split]
            for i in range(count):
                rng = np.random.default_rng([seed, index])
                lon, lat = 10.0 + 0.01 * index, 48.0 + 0.01 * index
                if labels == "dw" and split == "test" and i == count - 1:
                    lon, lat = 10.0 + 0.001, 48.0 - 0.001  # overlaps the first DW train tile: a leak to report
                tile_id = fake_id(lon, lat, "20190816", split == "test")
                no_label, num_classes = LABELS[labels]
                raw = np.kron(rng.integers(0, num_classes + 1, (3, 3)), np.ones((11, 11), np.int64))[:size, :size]
                raw[0, :num_classes + 1] = np.arange(num_classes + 1)  # every value once, in row 0
                if labels == "dw":
                    raw[1, 0] = 10  # cloud
                s2 = (1000 + 100 * np.arange(13)[:, None, None] + 37 * raw[None] +
                      rng.integers(-20, 21, (13, size, size))).astype(np.int16)
                s1 = (np.array([-12.0, -20.0])[:, None, None] + 0.5 * raw[None] +
                      rng.normal(0, 0.1, (2, size, size))).astype(np.float32)
                transform = Affine(PIXEL_DEG, 0, lon, 0, -PIXEL_DEG, lat)
                folder = root / "data_s12" / f"{labels}_{split}"
                for sub, prefix, array in (("image_s2", "s2", s2), ("image_s1", "s1", s1),
                                           (f"label_{labels}", labels, raw[None].astype(np.uint8))):
                    path = folder / sub / f"{prefix}_{tile_id}.tif"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=array.shape[0],
                                       dtype=array.dtype.name, crs=CRS, transform=transform) as dst:
                        dst.write(array)
                index += 1
        self._fake_nol(root / "ssl4eo_s12_nol", seed)
        if not archive:
            return root
        from .fakes import zip_tree

        download = root.with_name("noldo_download")
        download.mkdir(parents=True, exist_ok=True)
        for labels in ("dw", "osm"):
            staging = root.with_name(f"noldo_{labels}_staging")
            for split in ("train", "test"):
                src = root / "data_s12" / f"{labels}_{split}"
                dst = staging / "data_s12" / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                src.rename(dst)
            zip_tree(staging, download / f"ssl4eo_s12_{labels}.zip")
        (root / "ssl4eo_s12_nol").rename(download / "ssl4eo_s12_nol")  # NoL is indexed in place: unpacked
        shutil.rmtree(root)
        return download

    @staticmethod
    def _fake_nol(folder: Path, seed: int) -> None:
        rng = np.random.default_rng([seed, 99])
        seasons = ("20200305T101021_20200305T101022_T32UPU", "20200614T101031_20200614T101030_T32UPU",
                   "20200912T101029_20200912T101025_T32UPU", "20201206T102411_20201206T102405_T32UPU")
        rows = []
        for location in (17, 230_001):
            rows.append([location, *seasons])
            for season in seasons:
                path = folder / "dw_noisy_labels" / f"{location:07d}" / season / "label.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                with quiet_georef(), rasterio.open(path, "w", driver="GTiff", height=8, width=8, count=1,
                                                   dtype="uint8") as dst:
                    dst.write(rng.integers(0, 9, (1, 8, 8)).astype(np.uint8))
        with open(folder / "dw_complete_ids.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ids", "sub1", "sub2", "sub3", "sub4"])
            writer.writerows(rows)

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        work = self._plan(files)
        writer = self.open_writer(data_root, crs=CRS,
                                  fingerprint={"prep_version": self.prep_version, "count": len(work)},
                                  domain_schemas={f"osm_{mod}": load_class_schema("osm13") for mod in ("s2", "s1")})
        expected: dict[tuple[str, str], int] = {}
        for labels, split, tile_id, paths in tqdm(work, desc="prepare noldo_s12", unit="tile",
                                                  disable=not progress):
            label_raw, _, _ = _read(paths["label"])
            label = decode_label(label_raw[1] if label_raw.shape[0] > 1 else label_raw[0], labels,
                                 str(paths["label"]))
            for modality, bands in (("s2", S2_BANDS), ("s1", S1_BANDS)):
                domain = f"{labels}_{modality}"
                expected[(domain, split)] = expected.get((domain, split), 0) + 1
                sample_id = f"{domain}_{split}_{tile_id}"
                if writer.has(sample_id):
                    continue
                image, transform, crs = _read(paths[modality])
                if image.shape[0] != len(bands) or image.shape[1:] != label.shape:
                    raise DataError(f"{paths[modality]} is {image.shape[0]}×{image.shape[1]}×{image.shape[2]}; "
                                    f"expected {len(bands)} bands of {label.shape[0]}×{label.shape[1]} "
                                    f"like its label", "the files do not belong together; re-extract the release")
                writer.add(SampleArrays(sample_id=sample_id, domain=domain, split=split, image=image,
                                        label=label, source_file=str(paths[modality].name),
                                        window=(0, 0, label.shape[1], label.shape[0]), transform=transform,
                                        crs=crs))
        notes = ["DW raw 0 (unlabelled) and 10 (cloud) and OSM raw 0 (no OSM label) are ignore; 510×510 train "
                 "and 512×512 test tiles are kept unpadded"]
        notes.append(self._index_nol(files.raw, writer.work_dir))
        return self.finish(writer, files, expected_counts=expected, published_alternatives=PUBLISHED_ALTERNATIVES,
                           notes=notes)

    @staticmethod
    def _plan(files) -> list[tuple[str, str, str, dict[str, Path]]]:
        """(labels, split, id, {s1, s2, label: path}) per tile, paired by id."""
        work = []
        for labels in LABELS:
            for split in ("train", "test"):
                folder = f"{labels}_{split}"
                s1 = files.find(f"data_s12/{folder}/image_s1/s1_*.tif")
                if not s1:
                    continue
                s2 = files.find(f"data_s12/{folder}/image_s2/s2_*.tif")
                label_files = files.find(f"data_s12/{folder}/label_{labels}/{labels}_*.tif")
                for name in sorted(s1):
                    tile_id = name[3:].removesuffix(".tif")
                    partners = {"s2": s2.get(f"s2_{tile_id}.tif"), "label": label_files.get(f"{labels}_{tile_id}.tif")}
                    missing = [key for key, path in partners.items() if path is None]
                    if missing:
                        raise DataError(f"data_s12/{folder}: {name} has no {' or '.join(missing)} file "
                                        f"({'s2_' if 's2' in missing else labels + '_'}{tile_id}.tif)",
                                        "every tile needs its S1, S2 and label files; re-extract the release")
                    work.append((labels, split, tile_id, {"s1": s1[name], **partners}))
        if not work:
            raise DataError(f"{files.raw} holds no data_s12/{{dw,osm}}_{{train,test}}/image_s1/*.tif",
                            "pass --raw the folder with ssl4eo_s12_dw.zip / ssl4eo_s12_osm.zip or their unpacked "
                            "data_s12 folder")
        return work

    @staticmethod
    def _index_nol(raw: Path, work_dir: Path) -> str:
        """Write `nol_index.parquet` over an unpacked NoL folder (no copy); say what was done."""
        csvs = sorted(raw.rglob("dw_complete_ids.csv")) if raw.is_dir() else []
        if not csvs:
            zipped = raw.is_dir() and (raw / NOL_ARCHIVE).is_file()
            return ("NoL (pretraining) not indexed: " + (f"unpack {NOL_ARCHIVE} next to it and re-run prepare "
                    "(it is indexed in place, never copied)" if zipped else f"no {NOL_ARCHIVE} contents found"))
        folder = csvs[0].parent
        ids = pd.read_csv(csvs[0])
        seasons = [c for c in ids.columns if c.startswith("sub")]
        if "ids" not in ids.columns or len(seasons) != 4:
            raise DataError(f"{csvs[0]} has columns {list(ids.columns)}; expected ids, sub1..sub4",
                            "this is not the NoL index of the NoLDO-S12 release")
        rows = []
        for location, *subs in ids[["ids", *seasons]].itertuples(index=False):
            for season, sub in enumerate(subs):
                label = folder / "dw_noisy_labels" / f"{int(location):07d}" / str(sub) / "label.tif"
                rows.append({"location": int(location), "season": season, "season_folder": str(sub),
                             "label_path": str(label.resolve()), "label_exists": label.is_file(),
                             "s1_folder": f"s1/{int(location):07d}/{sub}", "s2c_folder": f"s2c/{int(location):07d}/{sub}"})
        index = pd.DataFrame(rows)
        buffer = index.to_parquet(index=False)
        atomic_write_bytes(work_dir / "nol_index.parquet", buffer)
        missing = int((~index["label_exists"]).sum())
        return (f"NoL indexed in place: {ids.shape[0]} locations × 4 seasons in nol_index.parquet (labels under "
                f"{folder}; images from an SSL4EO-S12 download, s1/ and s2c/)"
                + (f"; {missing} label files missing" if missing else ""))
