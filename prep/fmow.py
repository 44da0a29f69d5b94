"""FMoW-WILDS (`fmow_v1.1`) → prepared `fmow`, domain `rgb`: one class per image, two split schemes.

Dataset card
------------
- **Raw download**: WILDS's `fmow_v1.1` (the archive `fmow_v1.1.tar.gz` or its unpacked folder):
  `rgb_metadata.csv` (one row per image: `split`, `category`, `country_code`, `timestamp`, …),
  `country_code_mapping.csv` (`alpha-3` → `region`) and `images/rgb_img_<i>.png`, 224×224 RGB, where `<i>` is
  the row's position in `rgb_metadata.csv`. Rows with `split == "seq"` (sequestered) are dropped, as WILDS does.
- **Classes**: the 62 categories in WILDS's order (`tasks/classes/fmow62.yaml`); the class is the manifest's
  `target` (`label_level: image`). An unknown category is an error naming the row.
- **Group**: the country (`country_code`, ISO alpha-3; "" when missing); the card's `group_regions` maps it
  to WILDS's region (continent; "Other" for codes the mapping lacks).
- **Splits, two schemes on the same images** (an image may be in one split of each; its file is stored
  once per scheme, hard-linked when the file system allows):
  - WILDS's official `time_after_2016` split: `train` / `id_val` / `id_test` = the release's train / val / test
    rows before 2013, `ood_val` = val rows of 2013-2015, `ood_test` = test rows from 2016 on. Sample ids
    `rgb_img_<i>`.
  - **rsdg-bench's country split** for CoDEX's protocol (`country_train` / `country_val` / `country_test`,
    ids `rgb_img_<i>.c`): CoDEX trains on 100 countries and tests on 50 unseen ones (val 50), but does not
    publish its lists. This is **our** definition, not the paper's: countries ordered by
    sha256("rsdg-bench/fmow-country-split/v1:" + code), the first 100 train, the next 50 val, the next 50
    test, the rest unused (fewer than 200 countries, e.g. a fake: the same order cut 2:1:1). Every image of
    a country, whatever its WILDS split or year, goes to its country's split. A file
    `fmow_country_split.json` (`{"train": [...], "val": [...], "test": [...]}`, alpha-3 codes) placed in
    the raw folder replaces it, for when the authors publish theirs; the card notes which was used.
- **Citation**: Christie et al., Functional Map of the World, CVPR 2018; Koh et al., WILDS, ICML 2021.
  **Licence**: FMoW Challenge Public License.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.classes import load_class_schema
from rsdg_bench.datasets.prepared import DomainInfo, SampleArrays, read_raw_raster

from .base import Preparer, RawFiles, read_split_lists, register_preparer, uint8_bands
from .fakes import write_raster

FOLDER = "fmow_v1.1"
SPLIT_FILE = "fmow_country_split.json"
COUNTRY_SPLIT_SIZES = {"train": 100, "val": 50, "test": 50}
_SALT = "rsdg-bench/fmow-country-split/v1:"
WILDS_OOD_VAL_FROM, WILDS_OOD_TEST_FROM = pd.Timestamp("2013-01-01", tz="UTC"), pd.Timestamp("2016-01-01", tz="UTC")
# The fake: (country, region) pairs and the years its images span.
_FAKE_COUNTRIES = [("USA", "Americas"), ("BRA", "Americas"), ("FRA", "Europe"), ("DEU", "Europe"),
                   ("CHN", "Asia"), ("IND", "Asia"), ("NGA", "Africa"), ("KEN", "Africa"), ("AUS", "Oceania")]


def wilds_split(release_split: str, timestamp: pd.Timestamp) -> str | None:
    """WILDS's `time_after_2016` split of one row, or None when WILDS uses the row in no split."""
    if timestamp >= WILDS_OOD_TEST_FROM:
        return "ood_test" if release_split == "test" else None
    if timestamp >= WILDS_OOD_VAL_FROM:
        return "ood_val" if release_split == "val" else None
    return {"train": "train", "val": "id_val", "test": "id_test"}.get(release_split)


def country_split(countries: list[str]) -> dict[str, list[str]]:
    """rsdg-bench's deterministic country split (module docstring): hash order, 100 / 50 / 50."""
    ordered = sorted(set(countries), key=lambda c: hashlib.sha256(f"{_SALT}{c}".encode()).hexdigest())
    total = sum(COUNTRY_SPLIT_SIZES.values())
    if len(ordered) >= total:
        sizes = dict(COUNTRY_SPLIT_SIZES)
    else:  # a fake or partial download: keep the 2:1:1 proportions
        sizes = {"train": len(ordered) - 2 * (len(ordered) // 4), "val": len(ordered) // 4, "test": len(ordered) // 4}
    out, start = {}, 0
    for split, size in sizes.items():
        out[split] = ordered[start:start + size]
        start += size
    return out


@register_preparer
class FMoW(Preparer):
    name = "fmow"
    summary = "FMoW-WILDS: 224×224 RGB, 62 land-use classes; WILDS time split and a 100/50/50 country split (CoDEX)"
    prep_version = 2  # 2: JPEGs decoded by libjpeg-turbo (Pillow), as the papers' pipelines decode them
    archives = {f"{FOLDER}.tar.gz": None}
    citation = "Christie et al., Functional Map of the World, CVPR 2018; Koh et al., WILDS, ICML 2021"
    licence = "FMoW Challenge Public License"
    classes = "fmow62"
    domains = {"rgb": DomainInfo(description="WorldView/QuickBird RGB crops, 224×224, 0.3-1.6 m",
                                 bands=uint8_bands(["R", "G", "B"]))}

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """A 90-row `rgb_metadata.csv` over 9 countries and 2002-2017 (some `seq` rows), the country
        mapping and one 224×224 PNG per row."""
        import tarfile

        rng = np.random.default_rng(seed)
        root = Path(out) / "fmow_raw" / FOLDER
        (root / "images").mkdir(parents=True, exist_ok=True)
        categories = load_class_schema(self.classes).names
        rows = []
        for index in range(90):
            country, _ = _FAKE_COUNTRIES[index % len(_FAKE_COUNTRIES)]
            category = categories[int(rng.integers(0, 6))]
            split = ["train", "train", "val", "test", "seq"][index % 5]
            year = 2002 + (index * 7) % 16
            rows.append({"split": split, "img_filename": f"{category}_{index}_0_rgb.jpg",
                         "img_path": f"{split}/{category}/{category}_{index}/{category}_{index}_0_rgb.jpg",
                         "spatial_reference": "", "epsg": 32633, "category": category, "visible": True,
                         "img_width": 224, "img_height": 224, "country_code": country, "cloud_cover": 0,
                         "timestamp": f"{year}-0{1 + index % 9}-15T10:00:00Z", "lat": 0.0, "lon": 0.0})
            tint = np.array([40 + 30 * categories.index(category), 90, 160])[:, None, None]
            pixels = np.clip(tint + rng.integers(-20, 21, (3, 224, 224)), 0, 255).astype(np.uint8)
            write_raster(root / "images" / f"rgb_img_{index}.png", pixels)
        pd.DataFrame(rows).to_csv(root / "rgb_metadata.csv", index=False)
        pd.DataFrame([{"name": c, "alpha-2": c[:2], "alpha-3": c, "region": r} for c, r in _FAKE_COUNTRIES[:-1]]
                     ).to_csv(root / "country_code_mapping.csv", index=False)  # AUS unmapped: region "Other"
        if not archive:
            return root.parent
        download = root.parent.with_name("fmow_download")
        download.mkdir(parents=True, exist_ok=True)
        with tarfile.open(download / f"{FOLDER}.tar.gz", "w:gz") as tf:
            tf.add(root, arcname=FOLDER)
        import shutil
        shutil.rmtree(root.parent)
        return download

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        metadata, regions = self._metadata(files, load_class_schema(self.classes).names)
        countries, split_source = self._country_split(files, metadata)
        plan = self._plan(metadata, countries)
        writer = self.open_writer(data_root, label_level="image",
                                  fingerprint={"prep_version": self.prep_version, "countries": countries,
                                               "rows": len(metadata)})
        images = {Path(rel).name: p for rel, p in files.find_all(f"{FOLDER}/images/*.png").items()}
        expected: dict[tuple[str, str], int] = {}
        for sample_id, split, row in tqdm(plan, desc="prepare fmow", unit="img", disable=not progress):
            expected[("rgb", split)] = expected.get(("rgb", split), 0) + 1
            if writer.has(sample_id):
                continue
            name = f"rgb_img_{row.index}.png"
            if name not in images:
                raise DataError(f"{FOLDER}/images/{name} is missing (row {row.index} of rgb_metadata.csv)",
                                "re-extract fmow_v1.1; WILDS's archive holds one PNG per metadata row")
            image, as_stored = _read_png(images[name])
            writer.add(SampleArrays(sample_id=sample_id, domain="rgb", split=split, image=image,
                                    label=np.asarray(row.target, dtype=np.uint8), group=row.country,
                                    source_file=f"{FOLDER}/images/{name}", window=(0, 0, image.shape[2], image.shape[1]),
                                    image_copy_from=images[name] if as_stored else None))
        split_note = "; ".join(f"{k} {len(v)} countries" for k, v in countries.items())
        return self.finish(writer, files, expected_counts=expected, group_regions=regions,
                           notes=[f"country split ({split_source}): {split_note}",
                                  "WILDS splits: time_after_2016 (train/id_val/id_test before 2013, ood_val "
                                  "2013-2015, ood_test 2016+)"])

    @staticmethod
    def _metadata(files: RawFiles, categories: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
        """The non-`seq` rows (index = row position = image number) with `target` and `country`, and the
        country → region mapping."""
        found = files.find(f"{FOLDER}/*.csv")
        if "rgb_metadata.csv" not in found:
            raise DataError(f"{files.raw}: no {FOLDER}/rgb_metadata.csv",
                            f"pass --raw the folder holding {FOLDER}.tar.gz (WILDS's FMoW) or its unpacked folder")
        metadata = pd.read_csv(found["rgb_metadata.csv"])
        missing = {"split", "category", "country_code", "timestamp"} - set(metadata.columns)
        if missing:
            raise DataError(f"{found['rgb_metadata.csv']} lacks columns {sorted(missing)}", "use WILDS's fmow_v1.1 release")
        metadata = metadata[metadata["split"] != "seq"].copy()
        lookup = {name: i for i, name in enumerate(categories)}
        unknown = sorted(set(metadata["category"]) - set(lookup))
        if unknown:
            raise DataError(f"rgb_metadata.csv has categories outside FMoW's 62: {unknown[:4]}", "use fmow_v1.1")
        metadata["target"] = metadata["category"].map(lookup)
        metadata["country"] = metadata["country_code"].where(metadata["country_code"].notna(), "").astype(str)
        metadata["timestamp"] = pd.to_datetime(metadata["timestamp"], utc=True)
        regions: dict[str, str] = {}
        if "country_code_mapping.csv" in found:
            mapping = pd.read_csv(found["country_code_mapping.csv"], keep_default_na=False)
            regions = {str(code): str(region) for code, region in zip(mapping["alpha-3"], mapping["region"], strict=True)}
        return metadata, {c: regions.get(c, "Other") for c in sorted(set(metadata["country"])) if c}

    @staticmethod
    def _country_split(files: RawFiles, metadata: pd.DataFrame) -> tuple[dict[str, list[str]], str]:
        present = sorted({c for c in metadata["country"] if c})
        listed = files.find(SPLIT_FILE).get(SPLIT_FILE)
        if listed is None:
            return country_split(present), "rsdg-bench's hash-ordered 100/50/50 definition, not CoDEX's lists"
        return read_split_lists(listed, tuple(COUNTRY_SPLIT_SIZES), "country"), f"from {SPLIT_FILE}"

    @staticmethod
    def _plan(metadata: pd.DataFrame, countries: dict[str, list[str]]) -> list[tuple[str, str, Any]]:  # a pandas row
        """(sample id, prepared split, row) for every image in each scheme."""
        of_country = {c: f"country_{split}" for split, codes in countries.items() for c in codes}
        plan = []
        for row in metadata.assign(index=metadata.index).itertuples(index=False):
            time_split = wilds_split(row.split, row.timestamp)
            if time_split is not None:
                plan.append((f"rgb_img_{row.index}", time_split, row))
            if row.country in of_country:
                plan.append((f"rgb_img_{row.index}.c", of_country[row.country], row))
        return plan


def _read_png(path: Path) -> tuple[np.ndarray, bool]:
    """3×224×224 uint8, and whether the file holds exactly that (then it is stored as is, not re-encoded)."""
    image = read_raw_raster(path, fix="the file is corrupt; re-extract fmow_v1.1")
    as_stored = image.shape[0] == 3
    if image.shape[0] == 4:
        image = image[:3]  # an alpha band, as PIL's convert("RGB") in WILDS drops it
    if image.shape[0] != 3 or image.dtype != np.uint8:
        raise DataError(f"{path} is {image.dtype} with {image.shape[0]} bands, not 8-bit RGB", "re-extract fmow_v1.1")
    return image, as_stored
