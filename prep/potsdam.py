"""ISPRS Potsdam → prepared `potsdam`, domains `rgb` and `irrg` over the same 38 labelled tiles.

Dataset card
------------
- **Raw download** (ISPRS 2D semantic labeling, Potsdam): `2_Ortho_RGB.zip` (`top_potsdam_<r>_<c>_RGB.tif`),
  `3_Ortho_IRRG.zip` (`..._IRRG.tif`, bands NIR, R, G), `4_Ortho_RGBIR.zip` (`..._RGBIR.tif`, 4 bands),
  `5_Labels_all_noBoundary.zip` (`top_potsdam_<r>_<c>_label_noBoundary.tif`, eroded) and/or
  `5_Labels_all.zip` (`..._label.tif`). Zipped or unpacked, in one folder, any nesting. Tiles are
  6000×6000 8-bit TIFFs at 5 cm with `.tfw` world files (UTM zone 33N).
- **Which files are used**: RGB and IRRG from their own archives; when one is missing, both are cut from
  RGBIR (R, G, B and NIR, R, G). Labels: the eroded `noBoundary` set when present (CrossEarth trains and
  evaluates on it), else the full set, noted in the dataset card.
- **Split**: mmseg's / CrossEarth's 24 train and 14 val tiles (below); tiles outside them (unlabelled) are
  not read. **Tiling**: mmseg's converter, 512² windows, 144 per 6000² tile (see `prep/isprs.py`):
  3456 train / 2016 val per domain.
- **Georeferencing**: kept from the world files; the CRS (EPSG:32633) is assumed, as the files carry none.
- **Citation**: Rottensteiner et al., ISPRS Annals 2012 (ISPRS 2D semantic labeling benchmark).
  **Licence**: ISPRS benchmark terms (research use; no redistribution).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.transform import Affine
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import DomainInfo, raster_size

from . import isprs
from .base import Preparer, RawFiles, register_preparer, uint8_bands
from .labels import stray_notes

TRAIN_TILES = ("2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 6_10 6_11 6_12 6_7 6_8 6_9 "
               "7_10 7_11 7_12 7_7 7_8 7_9").split()
VAL_TILES = "5_15 6_15 6_13 3_13 4_14 6_14 5_14 2_13 4_15 2_14 5_13 4_13 3_14 7_13".split()
ARCHIVES = {"2_Ortho_RGB.zip": None, "3_Ortho_IRRG.zip": None, "4_Ortho_RGBIR.zip": None,
            "5_Labels_all_noBoundary.zip": None, "5_Labels_all.zip": None}
CRS = "EPSG:32633"
GSD_M = 0.05
DOMAIN_BANDS = {"rgb": ("red", "green", "blue"), "irrg": ("nir", "red", "green")}
RGBIR_INDEX = {"red": 0, "green": 1, "blue": 2, "nir": 3}
PUBLISHED_COUNTS = {"rgb": {"train": 3456, "val": 2016}, "irrg": {"train": 3456, "val": 2016}}
FAKE_SIZE = (560, 530)  # small but > 512 on both axes, and not square, so a swapped axis shows


def _tile_of(name: str) -> str:
    return "_".join(name.split("_")[2:4])


@register_preparer
class Potsdam(Preparer):
    name = "potsdam"
    summary = "ISPRS Potsdam, RGB and IRRG domains, 6 classes, mmseg 512 tiling (CrossEarth P(r)/P(i))"
    prep_version = 1
    archives = ARCHIVES
    classes = "isprs6"
    citation = ("Rottensteiner et al., The ISPRS benchmark on urban object classification and 3D building "
                "reconstruction, ISPRS Annals I-3, 2012")
    licence = isprs.LICENCE
    published_counts = PUBLISHED_COUNTS
    domains = {d: DomainInfo(description=f"Potsdam {d.upper()} orthophotos, 5 cm", gsd_m=GSD_M,
                             bands=uint8_bands(bands))
               for d, bands in DOMAIN_BANDS.items()}

    def make_fake(self, out: Path, seed: int = 0, archive: bool = False, size: tuple[int, int] = FAKE_SIZE,
                  full_size_tiles: tuple[str, ...] = ()) -> Path:
        """The raw archives (unpacked, or with `archive` zipped), one scene per tile drawn once as RGBIR and
        written as all three image products and both label sets. `full_size_tiles` are written 6000×6000."""
        root = Path(out) / "potsdam_raw"
        for index, tile in enumerate(TRAIN_TILES + VAL_TILES):
            rng = np.random.default_rng([seed, index])
            height, width = (6000, 6000) if tile in full_size_tiles else size
            rgbir, classes = isprs.fake_scene(rng, height, width)
            row, col = (int(v) for v in tile.split("_"))
            transform = Affine(GSD_M, 0, 366_000 + col * 300.0, 0, -GSD_M, 5_808_000 - row * 300.0)
            stem = f"top_potsdam_{tile}"
            isprs.write_tif(root / "2_Ortho_RGB" / f"{stem}_RGB.tif", rgbir[[0, 1, 2]], transform, world_file=True)
            isprs.write_tif(root / "3_Ortho_IRRG" / f"{stem}_IRRG.tif", rgbir[[3, 0, 1]], transform, world_file=True)
            isprs.write_tif(root / "4_Ortho_RGBIR" / f"{stem}_RGBIR.tif", rgbir, transform, world_file=True)
            isprs.write_tif(root / "5_Labels_all" / f"{stem}_label.tif", isprs.colour_label(classes))
            isprs.write_tif(root / "5_Labels_all_noBoundary" / f"{stem}_label_noBoundary.tif",
                            isprs.colour_label(isprs.eroded(classes)))
        if not archive:
            return root
        from .fakes import zip_folders

        return zip_folders(root, Path(out) / "potsdam_download", [a.removesuffix(".zip") for a in ARCHIVES])

    def build(self, files: RawFiles, data_root: Path, progress: bool) -> Path:
        products = {kind: {_tile_of(n): p for n, p in files.find(f"top_potsdam_*_{kind}.tif").items()}
                    for kind in ("RGB", "IRRG", "RGBIR", "label", "label_noBoundary")}
        tiles = TRAIN_TILES + VAL_TILES
        labels, variant, label_note = self._choose_labels(products, tiles, files.raw)
        sources = self._choose_images(products, tiles, files.raw)
        notes = [label_note, "images: " + ", ".join(f"{d} from {k}" for d, k in sources.items())]
        fingerprint = {"prep_version": self.prep_version, "labels": variant, "sources": sources,
                       "files": {t: labels[t].stat().st_size for t in tiles}}
        writer = self.open_writer(data_root, fingerprint=fingerprint, crs=CRS)
        expected: dict[tuple[str, str], int] = {}
        stray_total = 0
        for tile in tqdm(tiles, desc="prepare potsdam", unit="tile", disable=not progress):
            split = "train" if tile in TRAIN_TILES else "val"
            images = {domain: products[kind][tile] for domain, kind in sources.items()}
            label_path = labels[tile]
            height, width = raster_size(label_path)
            windows = isprs.tile_windows(height, width)
            for domain in DOMAIN_BANDS:
                expected[(domain, split)] = expected.get((domain, split), 0) + len(windows)
            if all(writer.has(isprs.window_id(d, tile, w)) for d in DOMAIN_BANDS for w in windows):
                continue
            label, stray = isprs.decode_label(label_path)
            stray_total += stray
            for domain, path in images.items():
                pixels, transform = isprs.read_image(path)
                if sources[domain] == "RGBIR":
                    pixels = pixels[[RGBIR_INDEX[b] for b in DOMAIN_BANDS[domain]]]
                if pixels.shape[1:] != label.shape or pixels.shape[0] != 3:
                    raise DataError(f"{path} is {pixels.shape[0]}×{pixels.shape[1]}×{pixels.shape[2]} (bands×H×W) but "
                                    f"its label {label_path} is {label.shape[0]}×{label.shape[1]}",
                                    "the image and label files are from different releases; re-download them")
                isprs.add_tile(writer, pixels, label, domain=domain, split=split, tile=tile,
                               source_file=path.name, transform=transform)
        notes += stray_notes(stray_total)
        return self.finish(writer, files, expected_counts=expected, notes=notes)

    @staticmethod
    def _choose_labels(products: dict, tiles: list[str], raw: Path) -> tuple[dict[str, Path], str, str]:
        eroded, full = products["label_noBoundary"], products["label"]
        if all(t in eroded for t in tiles):
            return {t: eroded[t] for t in tiles}, "noBoundary", "labels: eroded (5_Labels_all_noBoundary), as CrossEarth"
        if all(t in full for t in tiles):
            return {t: full[t] for t in tiles}, "full", (
                "labels: full 5_Labels_all (the eroded noBoundary set was not found; CrossEarth uses the eroded "
                "set, so boundary pixels are scored here and numbers are not comparable)")
        have = eroded if len(eroded) >= len(full) else full
        missing = [t for t in tiles if t not in have]
        suffix = "label_noBoundary" if have is eroded else "label"
        raise DataError(f"{raw}: the labels of {len(missing)} of the 38 labelled Potsdam tiles are missing, "
                        f"first top_potsdam_{missing[0]}_{suffix}.tif",
                        "put 5_Labels_all_noBoundary.zip (or its unpacked files) in the --raw folder")

    @staticmethod
    def _choose_images(products: dict, tiles: list[str], raw: Path) -> dict[str, str]:
        sources = {}
        for domain, kind in (("rgb", "RGB"), ("irrg", "IRRG")):
            if all(t in products[kind] for t in tiles):
                sources[domain] = kind
            elif all(t in products["RGBIR"] for t in tiles):
                sources[domain] = "RGBIR"
            else:
                missing = [t for t in tiles if t not in products[kind]]
                raise DataError(f"{raw}: {len(missing)} of the 38 labelled tiles have no {kind} image (first "
                                f"top_potsdam_{missing[0]}_{kind}.tif) and 4_Ortho_RGBIR is not complete either",
                                f"put {'2_Ortho_RGB' if kind == 'RGB' else '3_Ortho_IRRG'}.zip or "
                                "4_Ortho_RGBIR.zip in the --raw folder")
        return sources

