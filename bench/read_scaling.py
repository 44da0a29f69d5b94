"""Benchmark: how reading prepared samples scales with threads, stage by stage, in one run.

    python bench/read_scaling.py [--images 64] [--threads 1,2,4,8] [--pin]

Beside a GPU, `run` reads ahead with the thread count it measures on each split's first images
(`read_ahead.calibrated_read_ahead`); this says which stage of a read stops scaling. The 1024² LoveDA-layout
fake of `run_vs_decode.py` is prepared by the real preparer; each stage then runs over every target image and
label (`crossearth/r2u`'s target split) with a pool of N threads, after one pass that warms the page cache.
Stages: `bytes` (read the file), `sha256` (read and hash), `memory decode` (read, then decode from memory with
rasterio's MemoryFile, GDAL's /vsimem/), `path decode` (rasterio opens the path itself), `sample` (the
harness's `split[i]`: read, hash, decode from memory), and with `--pin` `sample + pin` (then copied into
pinned memory, as for a CUDA device). Printed: images per second per stage and thread count, each count's
speed-up over one thread, and the count `--read-threads auto` would keep from those rates
(`read_ahead.pick_read_threads`: the smallest within 5 % of the fastest; `run` measures on files read for the
first time, this bench on a warm page cache).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import rasterio
import torch
from rasterio.io import MemoryFile
from run_vs_decode import write_raw

import rsdg_bench as rb
from rsdg_bench.datasets.prepared import quiet_georef, quiet_georef_everywhere
from rsdg_bench.datasets.read_ahead import pick_read_threads
from rsdg_bench.prep import get_preparer


def decode_from_memory(path: Path) -> None:
    with quiet_georef(), MemoryFile(path.read_bytes()) as memory, memory.open() as src:
        src.read()


def decode_from_path(path: Path) -> None:
    with quiet_georef(), rasterio.open(path) as src:
        src.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", default="1,2,4,8", help="comma-separated thread counts (default 1,2,4,8)")
    parser.add_argument("--pin", action="store_true", help="also time samples copied into pinned memory (CUDA)")
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]
    torch.set_num_threads(1)
    quiet_georef_everywhere()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        get_preparer("loveda").prepare(write_raw(Path(scratch), args.images), data, progress=False)
        split = rb.open_split("crossearth/r2u", "target", data_root=data, for_training=False).for_inference()
        files = sorted(p for p in (data / "loveda").rglob("*") if p.suffix in {".tif", ".png"} and "val" in str(p)
                       and "urban" in str(p).lower())
        if len(files) != 2 * len(split):
            raise SystemExit(f"expected an image and a label per sample, found {len(files)} files for {len(split)}")

        def pinned(index: int) -> None:
            for value in split[index].values():
                if isinstance(value, torch.Tensor):
                    value.pin_memory()

        stages: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
            "bytes": (lambda path: path.read_bytes(), files),
            "sha256": (lambda path: hashlib.sha256(path.read_bytes()).digest(), files),
            "memory decode": (decode_from_memory, files),
            "path decode": (decode_from_path, files),
            "sample": (lambda index: split[index], list(range(len(split)))),
        }
        if args.pin:
            stages["sample + pin"] = (pinned, list(range(len(split))))
        print(f"{len(split)} samples of 1024² (image and label files), thread counts {counts}")
        for name, (work, items) in stages.items():
            speeds = []
            for threads in counts:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(work, items))  # warm: page cache, GDAL drivers, pinned blocks
                    started = time.perf_counter()
                    list(pool.map(work, items))
                    speeds.append(len(split) / (time.perf_counter() - started))
            shown = ", ".join(f"{n}: {s:.0f} img/s ({s / speeds[0]:.1f}×)" for n, s in zip(counts, speeds, strict=True))
            print(f"{name:>14}: {shown}; auto keeps {pick_read_threads(dict(zip(counts, speeds, strict=True)))}")


if __name__ == "__main__":
    main()
