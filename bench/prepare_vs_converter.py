"""Benchmark: `prepare potsdam` against mmseg's converter logic on the same raw tiles, in one run.

    python bench/prepare_vs_converter.py [--full-size 2] [--repeats 1] [--workers N]

The Potsdam fake (`prep/potsdam.py`) is written with `--full-size` tiles at the real 6000² (the other 36 at
560×530). Each side runs in a fresh process (one thread for numpy / GDAL), which reports its wall time and
its own peak resident memory:
- **reference**: the converter's steps as mmseg's `tools/dataset_converters/potsdam.py` takes them, in one
  process: read each tile whole, turn the colour label into class indices by comparing a weighted sum of
  the channels with each class colour's, cut the 512² windows (last one clamped to the edge) and write
  each window as a PNG (Pillow at zlib level 1, the fast level OpenCV, which mmcv writes with, uses by
  default), the label windows once for both image products
  ("write-once": the converter itself writes them once per product it is run on);
- **ours**: `get_preparer("potsdam", workers=N).prepare(raw, data)` (`prepare --workers`, default the
  cores), which also verifies and journals every write, hashes each file for the manifest, and writes the
  dataset card and index.
Printed: both times and peaks, and `ratio` = reference time / our time (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
Path("/proc/self/clear_refs").write_text("5")  # a fresh high-water mark: the child's own peak
side, raw, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
started = time.perf_counter()
if side == "ours":
    from rsdg_bench.prep import get_preparer
    get_preparer("potsdam", workers=int(sys.argv[4])).prepare(raw, out, progress=False)
else:
    sys.path.insert(0, sys.argv[5])
    from prepare_vs_converter import converter_logic
    converter_logic(raw, out)
elapsed = time.perf_counter() - started
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "peak_mib": int(peak.split()[1]) / 1024}))
"""


def converter_logic(raw: Path, out: Path) -> None:
    """The converter's steps (see the module docstring), for the 38 labelled tiles of the fake."""
    import numpy as np
    import rasterio
    from PIL import Image

    from rsdg_bench.datasets.windows import window_grid

    colours = np.array([[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0],
                        [0, 0, 0]])  # the isprs6 class order, then the eroded boundary
    weights = np.array([1, 10, 100])
    tiles = sorted(p.name.removeprefix("top_potsdam_").removesuffix("_label_noBoundary.tif")
                   for p in (raw / "5_Labels_all_noBoundary").glob("*.tif"))
    for tile in tiles:
        products = {"rgb": raw / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif",
                    "irrg": raw / "3_Ortho_IRRG" / f"top_potsdam_{tile}_IRRG.tif",
                    "label": raw / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif"}
        for product, path in products.items():
            with rasterio.open(path) as src:
                array = src.read().transpose(1, 2, 0)
            if product == "label":
                flat = array.reshape(-1, 3).astype(np.int64) @ weights
                indices = np.full(flat.shape, 255, dtype=np.uint8)
                for index, colour in enumerate(colours):
                    indices[flat == colour @ weights] = index if index < 6 else 255
                array = indices.reshape(array.shape[:2])
            folder = out / product
            folder.mkdir(parents=True, exist_ok=True)
            for y0, y1, x0, x1 in window_grid(array.shape[0], array.shape[1], 512, 512):
                Image.fromarray(np.ascontiguousarray(array[y0:y1, x0:x1])).save(
                    folder / f"{tile}_{x0}_{y0}_{x1}_{y1}.png", compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", type=int, default=2, help="tiles written at 6000² (default 2)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="our prepare's writer threads (`prepare --workers`; default: the cores)")
    args = parser.parse_args()
    from rsdg_bench.prep import get_preparer
    from rsdg_bench.prep.potsdam import TRAIN_TILES, VAL_TILES

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GDAL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        full = tuple((VAL_TILES + TRAIN_TILES)[:args.full_size])
        raw = get_preparer("potsdam").make_fake(root / "raw", full_size_tiles=full)
        figures: dict[str, list[dict]] = {"reference": [], "ours": []}
        for repeat in range(args.repeats):
            for side in ("reference", "ours"):  # interleaved, so a busy moment of the box hits both
                out = root / f"{side}{repeat}"
                done = subprocess.run([sys.executable, "-c", CHILD, side, str(raw), str(out), str(args.workers),
                                       str(Path(__file__).parent)], capture_output=True, text=True,
                                      env=environment, check=True)
                figures[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
        best = {side: min(runs, key=lambda f: f["seconds"]) for side, runs in figures.items()}
        print(f"38 Potsdam tiles ({len(full)} at 6000², the rest 560×530), best of {args.repeats}; "
              f"ours with {args.workers} writer threads, the reference in one process")
        for side, f in best.items():
            print(f"{side:9s} {f['seconds']:7.1f} s, peak {f['peak_mib']:6.0f} MiB")
        print(f"ratio {best['reference']['seconds'] / best['ours']['seconds']:.2f}")


if __name__ == "__main__":
    main()
