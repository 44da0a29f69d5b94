"""DFC2020 (IEEE GRSS Data Fusion Contest 2020) → prepared `dfc2020`, domains `s2` and `s1`, as CromSS uses it.

Dataset card
------------
- **Raw download** (IEEE DataPort; the archive name `DFC_Public_Dataset.zip` is UNVERIFIED, the unpacked
  folders are as the DFC2020 baseline reads them): `ROIs0000_validation/{s1_validation,s2_validation,
  dfc_validation}/ROIs0000_validation_<s1|s2|dfc>_0_p<i>.tif` and `ROIs0000_test/{s1_0,s2_0,dfc_0}/
  ROIs0000_test_<s1|s2|dfc>_0_p<i>.tif` (the `lc_*` MODIS folders are not used). Patches pair by `p<i>`.
- **Images**: 256×256 patches. S2: 13 bands `B1 … B8, B8A, B9 … B12`, uint16, kept as stored. S1: `VV, VH`
  in dB, float64 on disk, stored as float32 (the values are GRD backscatter in dB; float32 keeps them to
  7 significant digits). Georeferencing kept.
- **Splits** (CromSS's use): `validation` (986 patches) is the training set, `test` (5,128) the test set;
  the names stay DFC2020's. CromSS's lmdb writer crops 128×128 in its `__main__`; whether the paper used
  128 or 256 is UNVERIFIED; the patches are kept whole.
- **Classes**: raw DFC values 1 forest, 2 shrubland, 4 grassland, 5 wetlands, 6 croplands, 7 urban/built-up,
  9 barren, 10 water become CromSS's 8 DW-ordered classes (`dfc2020_8`: water, forest, grassland, wetland,
  cropland, shrubland, urban/built-up, barren); 3 savanna, 8 snow/ice and 0 → ignore (CromSS counts them as
  an "unknown" class 8). Values above 10 are an error.
- **Counts**: 986 validation / 5,128 test (CromSS paper; not re-verified against a primary DFC2020 source).
- **Citation**: Robinson et al., Global Land-Cover Mapping With Weak Supervision: Outcome of the 2020 IEEE
  GRSS Data Fusion Contest, IEEE JSTARS 2021; Schmitt et al., SEN12MS, 2019. **Licence**: CC BY 4.0 (UNVERIFIED).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import BandInfo, DomainInfo, SampleArrays, open_raster

from .base import Preparer, RawFiles, register_preparer
from .noldo_s12 import S1_BANDS, S2_BANDS

ARCHIVES = {"DFC_Public_Dataset.zip": None}
# split → (ROI folder, folder suffix of the modality folders, file-name split word)
LAYOUT = {"validation": ("ROIs0000_validation", "validation", "validation"), "test": ("ROIs0000_test", "0", "test")}
# raw DFC value → CromSS's DW-ordered class (dfc_lbls=[1,2,4,5,6,7,9,10] → dw_lbls=[1,5,2,3,4,6,7,0])
DFC_TO_CLASS = {1: 1, 2: 5, 4: 2, 5: 3, 6: 4, 7: 6, 9: 7, 10: 0}
DFC_LOOKUP = np.full(256, IGNORE_INDEX, dtype=np.uint8)
DFC_LOOKUP[list(DFC_TO_CLASS)] = list(DFC_TO_CLASS.values())
PUBLISHED_COUNTS = {"s2": {"validation": 986, "test": 5128}, "s1": {"validation": 986, "test": 5128}}
CRS = "EPSG:32632"
FAKE_SIZE = 32
FAKE_COUNTS = {"validation": 3, "test": 2}


def decode_dfc(raw: np.ndarray, where: str) -> np.ndarray:
    """Raw DFC2020 values (0..10) → the 8 classes, savanna / snow / 0 → ignore."""
    stray = sorted(set(np.unique(raw).tolist()) - set(range(11)))
    if stray:
        raise DataError(f"{where} holds label value(s) {stray[:5]}; DFC2020 labels are 0..10",
                        "the file is not a DFC2020 dfc label; re-extract the release")
    return DFC_LOOKUP[raw.astype(np.uint8)]


def _patch_of(name: str) -> str:
    """`p<i>` of a file named `..._p<i>.tif` (the glob that found it asks for that ending)."""
    match = re.search(r"_(p\d+)\.tif$", name)
    assert match is not None, name
    return match.group(1)


@register_preparer
class DFC2020(Preparer):
    name = "dfc2020"
    summary = "DFC2020 in CromSS's 8 DW-ordered classes, Sentinel-2 13 bands and Sentinel-1 (NoLDO-S12 suite)"
    prep_version = 1
    archives = ARCHIVES
    classes = "dfc2020_8"
    citation = ("Robinson et al., Global Land-Cover Mapping With Weak Supervision: Outcome of the 2020 IEEE "
                "GRSS Data Fusion Contest, IEEE JSTARS 2021")
    licence = "CC BY 4.0 (UNVERIFIED)"
    domains = {"s2": DomainInfo(description="Sentinel-2 L1C, 13 bands, 10 m", gsd_m=10.0,
                                bands=[BandInfo(name=b, dtype="uint16", units="TOA reflectance x 10000")
                                       for b in S2_BANDS]),
               "s1": DomainInfo(description="Sentinel-1 GRD, VV and VH in dB", gsd_m=10.0,
                                bands=[BandInfo(name=b, dtype="float32", units="dB") for b in S1_BANDS])}
    published_counts = PUBLISHED_COUNTS

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """Both ROI folders with every raw value 0..10 at known pixels of the first patch."""
        root = Path(out) / "dfc2020_raw"
        index = 0
        for split, count in FAKE_COUNTS.items():
            roi, suffix, word = LAYOUT[split]
            for i in range(count):
                rng = np.random.default_rng([seed, index])
                raw = np.kron(rng.integers(0, 11, (4, 4)), np.ones((8, 8), np.int64)).astype(np.uint8)
                raw[0, :11] = np.arange(11)
                s2 = (900 + 80 * np.arange(13)[:, None, None] + 45 * raw[None] +
                      rng.integers(-15, 16, (13, FAKE_SIZE, FAKE_SIZE))).astype(np.uint16)
                s1 = (np.array([-11.0, -18.0])[:, None, None] + 0.7 * raw[None] +
                      rng.normal(0, 0.1, (2, FAKE_SIZE, FAKE_SIZE))).astype(np.float64)
                transform = Affine(10, 0, 500_000 + 2_560 * index, 0, -10, 5_300_000)
                for modality, array in (("s2", s2), ("s1", s1), ("dfc", raw[None])):
                    path = root / roi / f"{modality}_{suffix}" / f"ROIs0000_{word}_{modality}_0_p{i + 1}.tif"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with rasterio.open(path, "w", driver="GTiff", height=FAKE_SIZE, width=FAKE_SIZE,
                                       count=array.shape[0], dtype=array.dtype.name, crs=CRS,
                                       transform=transform) as dst:
                        dst.write(array)
                index += 1
        if not archive:
            return root
        from .fakes import zip_tree

        return zip_tree(root, root.with_name("dfc2020_download") / next(iter(ARCHIVES)))

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        work = self._plan(files)
        writer = self.open_writer(data_root, crs=CRS,
                                fingerprint={"prep_version": self.prep_version, "count": len(work)})
        expected: dict[tuple[str, str], int] = {}
        ignored = 0
        for split, patch, paths in tqdm(work, desc="prepare dfc2020", unit="patch", disable=not progress):
            with open_raster(paths["dfc"]) as src:
                label = decode_dfc(src.read(1), str(paths["dfc"]))
            ignored += int((label == IGNORE_INDEX).sum())
            for modality, bands in (("s2", S2_BANDS), ("s1", S1_BANDS)):
                expected[(modality, split)] = expected.get((modality, split), 0) + 1
                sample_id = f"{modality}_{split}_{patch}"
                if writer.has(sample_id):
                    continue
                with open_raster(paths[modality]) as src:
                    image, transform = src.read(), src.transform
                    crs = src.crs.to_string() if src.crs else None
                if image.shape[0] != len(bands) or image.shape[1:] != label.shape:
                    raise DataError(f"{paths[modality]} has {image.shape[0]} bands of {image.shape[1:]}; expected "
                                    f"{len(bands)} of {label.shape} like its dfc label",
                                    "the files do not belong together; re-extract the release")
                if modality == "s1":
                    image = image.astype(np.float32)
                writer.add(SampleArrays(sample_id=sample_id, domain=modality, split=split, image=image,
                                        label=label, source_file=paths[modality].name,
                                        window=(0, 0, label.shape[1], label.shape[0]), transform=transform,
                                        crs=crs))
        return self.finish(writer, files, expected_counts=expected,
                           notes=["`validation` (986) is the training set and `test` (5,128) the test set, as in CromSS",
                                  f"{ignored} pixels of savanna (3), snow/ice (8) or no label (0) are ignore"])

    @staticmethod
    def _plan(files) -> list[tuple[str, str, dict[str, Path]]]:
        """(split, patch, {s1, s2, dfc: path}) per patch, paired by `p<i>`."""
        work = []
        for split, (roi, suffix, word) in LAYOUT.items():
            found = {m: files.find(f"{roi}/{m}_{suffix}/ROIs0000_{word}_{m}_0_p*.tif") for m in ("s2", "s1", "dfc")}
            patches = {m: {_patch_of(name): path for name, path in names.items()}
                       for m, names in found.items()}
            for modality in ("s1", "dfc"):
                unmatched = sorted(set(patches["s2"]) ^ set(patches[modality]))
                if unmatched:
                    raise DataError(f"{roi}: patch {unmatched[0]} is in one of s2_{suffix}/ and {modality}_{suffix}/ "
                                    "but not the other", "every patch needs its s1, s2 and dfc files; re-extract")
            work += [(split, patch, {m: patches[m][patch] for m in patches})
                     for patch in sorted(patches["s2"], key=lambda p: int(p[1:]))]
        if not work:
            raise DataError(f"{files.raw} holds no ROIs0000_validation/ or ROIs0000_test/ patches",
                            "pass --raw the folder holding ROIs0000_validation and ROIs0000_test (or their archive)")
        return work
