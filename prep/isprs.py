"""What ISPRS Potsdam and Vaihingen share: the label palette, mmseg's 512 tiling, and fake scene drawing.

Label colours (RGB, as rasterio reads them) → mmseg's ISPRS class order (`tasks/classes/isprs6.yaml`):
white impervious, blue building, cyan low vegetation, green tree, yellow car, red clutter; black is the
eroded boundary of the `noBoundary` labels → 255. mmseg's converter reads the same files in BGR with a
BGR colour table, which is the same mapping; reading RGB files against a BGR table (or the reverse) swaps
building and clutter, the classic silent error, so the fakes place every class at known pixels and the
tests check them.

Tiling is mmseg's `tools/dataset_converters/{potsdam,vaihingen}.py`: the `--stride_size` argument only
sets the loop count, so the windows are non-overlapping 512² with the last one clamped to the edge (for a
6000² Potsdam tile: 0, 512, …, 5120 and 5488 → 12 × 12 = 144 windows). Sample ids keep the converter's
file names (`<tile>_<x0>_<y0>_<x1>_<y1>`), prefixed with the domain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.prepared import PreparedWriter, SampleArrays, open_raster, quiet_georef, read_raw_raster
from rsdg_bench.datasets.windows import window_grid

from .labels import decode_colour_label

TILE = 512
LICENCE = "ISPRS benchmark terms (research use, no redistribution)"
PALETTE: dict[tuple[int, int, int], int] = {
    (255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 255): 2, (0, 255, 0): 3, (255, 255, 0): 4, (255, 0, 0): 5,
    (0, 0, 0): IGNORE_INDEX,
}
# Off-palette pixels tolerated per label file before it is rejected (mmseg maps any such pixel to ignore).
STRAY_TOLERANCE = 1e-4
# Mean reflectance (R, G, B, NIR) per class for the fakes: roofs red-brown, vegetation bright in NIR.
_FAKE_SIGNATURE = np.array([[160, 160, 155, 120], [150, 90, 80, 110], [90, 140, 70, 200],
                            [50, 100, 45, 215], [200, 200, 40, 130], [120, 60, 60, 90]], dtype=np.int16)


def tile_windows(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """mmseg converter windows (y0, y1, x0, x1) of one tile."""
    return window_grid(height, width, TILE, TILE)


def window_id(domain: str, tile: str, window: tuple[int, int, int, int]) -> str:
    y0, y1, x0, x1 = window
    return f"{domain}_{tile}_{x0}_{y0}_{x1}_{y1}"


def decode_label(path: Path) -> tuple[np.ndarray, int]:
    """H×W isprs6 indices of an ISPRS colour label file, and its count of stray (off-palette) pixels."""
    rgb = read_raw_raster(path)[:3].transpose(1, 2, 0)
    return decode_colour_label(np.ascontiguousarray(rgb), PALETTE, where=str(path), tolerance=STRAY_TOLERANCE)


def read_image(path: Path) -> tuple[np.ndarray, Affine | None]:
    """All bands of an orthophoto and its transform (None when the file carries no georeferencing)."""
    with open_raster(path) as src:
        transform = None if src.transform == Affine.identity() else src.transform
        return src.read(), transform


def add_tile(writer: PreparedWriter, image: np.ndarray, label: np.ndarray, *, domain: str, split: str, tile: str,
             source_file: str, transform: Affine | None) -> None:
    """Cut one tile into its 512 windows and add each one."""
    for window in tile_windows(*label.shape):
        y0, y1, x0, x1 = window
        writer.add(SampleArrays(
            sample_id=window_id(domain, tile, window), domain=domain, split=split,
            image=np.ascontiguousarray(image[:, y0:y1, x0:x1]), label=np.ascontiguousarray(label[y0:y1, x0:x1]),
            source_file=source_file, window=(x0, y0, x1, y1),
            transform=None if transform is None else transform @ Affine.translation(x0, y0)))


# ----------------------------------------------------------------------------- fakes

def fake_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(4×H×W uint8 R, G, B, NIR image, H×W isprs6 class map) with every class present in blocks."""
    classes = np.zeros((height, width), dtype=np.uint8)
    block = max(8, min(height, width) // 12)
    for _ in range(40):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        h, w = (int(v) for v in rng.integers(block // 2, 2 * block, 2))
        classes[y:y + h, x:x + w] = rng.integers(0, 6)
    for value in range(6):  # every class at a known place: a 6-pixel-wide bar per class along the top
        classes[2:8, 2 + 8 * value:8 + 8 * value] = value
    image = _FAKE_SIGNATURE[classes].transpose(2, 0, 1)
    image = image + rng.integers(-12, 13, image.shape, dtype=np.int16)
    return np.clip(image, 1, 255).astype(np.uint8), classes


def eroded(classes: np.ndarray) -> np.ndarray:
    """The class map with pixels next to another class set to ignore (ISPRS' `noBoundary` labels)."""
    out = classes.copy()
    edge = np.zeros(classes.shape, dtype=bool)
    edge[1:, :] |= classes[1:, :] != classes[:-1, :]
    edge[:-1, :] |= classes[:-1, :] != classes[1:, :]
    edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    edge[:, :-1] |= classes[:, :-1] != classes[:, 1:]
    out[edge] = IGNORE_INDEX
    return out


def colour_label(classes: np.ndarray) -> np.ndarray:
    """3×H×W RGB colour label of an isprs6 class map (ignore → black)."""
    table = np.zeros((256, 3), dtype=np.uint8)  # one lookup per pixel (a full-size tile has 36 M of them)
    for colour, index in PALETTE.items():
        table[index] = colour
    return table[classes].transpose(2, 0, 1)


def write_tif(path: Path, array: np.ndarray, transform: Affine | None = None, world_file: bool = False) -> None:
    """A plain (un-georeferenced) TIFF as the ISPRS files are, optionally with a `.tfw` world file. Deflate at
    its fastest level: the fake is written in every test session, and the level changes no pixel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_georef(), rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2],
                                       count=array.shape[0], dtype="uint8", compress="deflate", zlevel=1) as dst:
        dst.write(array)
    if world_file and transform is not None:
        a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
        # World files give the centre of the top-left pixel.
        lines = [a, d, b, e, c + a / 2 + b / 2, f + d / 2 + e / 2]
        path.with_suffix(".tfw").write_text("\n".join(f"{v:.10f}" for v in lines) + "\n")
