"""Helpers for the fake raw downloads: zipping folders into archives named as the real ones."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path


def zip_folders(root: Path, out: Path, folders: list[str], keep_folder: bool = True) -> Path:
    """Zip each `root/<folder>` into `out/<folder>.zip` (with the folder as the archive's top entry when
    `keep_folder`, else its content at the archive root), remove `root`, and return `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        source = root / folder
        if not source.is_dir():
            continue
        with zipfile.ZipFile(out / f"{folder}.zip", "w", compression=zipfile.ZIP_STORED) as zf:
            for path in sorted(source.rglob("*")):
                base = root if keep_folder else source
                zf.write(path, path.relative_to(base).as_posix())
    shutil.rmtree(root)
    return out


def write_raster(path: Path, array, driver: str = "PNG", **options) -> Path:
    """Write a C×H×W uint8 array without georeferencing in the named GDAL format (JPEG via a copy, as GDAL
    writes JPEG only from another dataset). PNGs are deflated at the fastest level unless `options` say
    otherwise: fakes are written in every test session, and the level changes no pixel."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as raster_copy

    from rsdg_bench.datasets.prepared import quiet_georef

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"height": array.shape[1], "width": array.shape[2], "count": array.shape[0], "dtype": "uint8"}
    with quiet_georef():
        if driver == "JPEG":
            with MemoryFile() as memory, memory.open(driver="GTiff", **profile) as mem:
                mem.write(array)
                raster_copy(mem, path, driver="JPEG", **options)
        else:
            if driver == "PNG":
                options = {"ZLEVEL": 1, **options}
            with rasterio.open(path, "w", driver=driver, **profile, **options) as dst:
                dst.write(array)
    return path


def blocky_classes(rng, height: int, width: int, num_values: int, cells: tuple[int, int] = (4, 4)):
    """An H×W uint8 map of random values in [0, num_values) constant over a grid of cells."""
    import numpy as np

    grid = rng.integers(0, num_values, cells)
    rows = np.minimum(np.arange(height) * cells[0] // height, cells[0] - 1)
    cols = np.minimum(np.arange(width) * cells[1] // width, cells[1] - 1)
    return grid[rows][:, cols].astype(np.uint8)


def zip_tree(root: Path, archive: Path) -> Path:
    """Zip everything under `root` (paths relative to it) into `archive`, remove `root`, return `archive`."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(root).as_posix())
    shutil.rmtree(root)
    return archive
