"""Benchmark: small prepared GeoTIFFs in strips against one padded 256² tile, in one run.

    python bench/small_rasters.py [--repeats 200]

`prepared._write_raster` stores a GeoTIFF tiled (GDAL's 256² blocks) unless both of its sides are at most
`SMALL_RASTER` px, where it writes strips: a small patch in a tiled file fills a whole 256² block, padding
included, that every write compresses and every read decompresses. For patch shapes the seed datasets
prepare (OSCD's 75² patches of 3 and 13 bands, uint16), and sizes around the threshold, this encodes and
decodes the same array both ways, in memory, single-threaded, interleaved, and prints the strip / tile time
ratios (below 1: strips are faster). Pixels are random, so compression is near its worst case.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from affine import Affine
from rasterio.io import MemoryFile

SHAPES = [(3, 75, 75), (13, 75, 75), (3, 96, 96), (13, 128, 128), (3, 200, 200), (13, 256, 256)]


def encode(array: np.ndarray, tiled: bool) -> bytes:
    bands, height, width = array.shape
    with MemoryFile(ext=".tif") as memory:
        with memory.open(driver="GTiff", height=height, width=width, count=bands, dtype=array.dtype.name,
                         compress="zstd", tiled=tiled, transform=Affine(10, 0, 0, 0, -10, 0),
                         crs="EPSG:32631") as dst:
            dst.write(array)
        return memory.read()


def decode(data: bytes) -> np.ndarray:
    with MemoryFile(data) as memory, memory.open() as src:
        return src.read()


def timed(call, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':>16s}  {'tile write':>10s}  {'strip/tile write':>16s}  {'tile read':>9s}  {'strip/tile read':>15s}")
    for shape in SHAPES:
        array = rng.integers(0, 3000, shape).astype(np.uint16)
        files = {tiled: encode(array, tiled) for tiled in (True, False)}
        assert all(np.array_equal(decode(data), array) for data in files.values())
        write = {tiled: 0.0 for tiled in files}
        read = {tiled: 0.0 for tiled in files}
        for _ in range(3):  # interleaved, so a slow spell of the machine weighs on both
            for tiled, data in files.items():
                write[tiled] += timed(lambda: encode(array, tiled), args.repeats // 3)
                read[tiled] += timed(lambda: decode(data), args.repeats // 3)
        print(f"{'×'.join(map(str, shape)):>16s}  {write[True] / 3 * 1e3:8.2f}ms  {write[False] / write[True]:16.2f}  "
              f"{read[True] / 3 * 1e3:7.2f}ms  {read[False] / read[True]:15.2f}")


if __name__ == "__main__":
    main()
