"""Benchmark: what the checked raster write costs a prepare, in one run.

    python bench/prepare_verify.py [--dataset potsdam] [--repeats 2]

`PreparedWriter` has GDAL encode each raster into memory and writes the bytes with an ordinary fsynced
write whose size it checks (GDAL's own writer does not always report a full disk; docs/reliability.md).
The reference is what it replaced: GDAL writing the file directly, unchecked. The dataset's fake is
prepared with each, into fresh folders, and both times and their ratio are reported (the manifests are
identical: the bytes are the same).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import rasterio
import torch

from rsdg_bench.datasets import prepared
from rsdg_bench.prep import get_preparer


def _unchecked_write(path: Path, array, transform, crs) -> None:
    """The reference: GDAL writes the file itself, nothing checks what reached the disk."""
    bands, height, width = array.shape
    png = path.suffix == ".png"
    profile = {"driver": "PNG" if png else "GTiff", "height": height, "width": width, "count": bands,
               "dtype": array.dtype.name}
    if not png:
        profile.update(compress="deflate", tiled=False)
        if transform is not None:
            profile.update(transform=transform, crs=crs)
    with prepared.quiet_georef(), rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def _prepare(name: str, raw: Path, out: Path) -> tuple[float, str]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    get_preparer(name).prepare(raw, out, progress=False)
    return time.perf_counter() - start, prepared.PreparedDataset.open(out, name).manifest_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="potsdam")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    checked = prepared._write_raster
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        raw = get_preparer(args.dataset).make_fake(work / "raw")
        ours, reference = [], []
        for _ in range(args.repeats):
            prepared._write_raster = checked
            ours.append(_prepare(args.dataset, raw, work / "a"))
            prepared._write_raster = _unchecked_write
            reference.append(_prepare(args.dataset, raw, work / "b"))
        prepared._write_raster = checked
        files = sum(1 for p in (work / "a" / args.dataset).rglob("*") if p.suffix in (".png", ".tif"))
    same = {sha for _, sha in ours} == {sha for _, sha in reference}
    best, base = min(t for t, _ in ours), min(t for t, _ in reference)
    print(f"{args.dataset} fake, {files} rasters written, best of {args.repeats}; same manifest: {same}")
    print(f"checked write {best:.2f} s   GDAL direct, unchecked {base:.2f} s   ratio {best / base:.2f}x")


if __name__ == "__main__":
    main()
