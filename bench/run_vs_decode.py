"""Benchmark: `run` with a model that costs nothing, against decoding the same prepared files, in one run.

    python bench/run_vs_decode.py [--images 24] [--repeats 3] [--threads 2] [--workers 0] [--batch-size 1]
                                  [--model scores|constant]

A LoveDA-layout raw download of 1024² images (blocky classes with noise, as LoveDA's own fake but at the
real size) is prepared by the real preparer, then `crossearth/r2u`'s target split (loveda/urban/val, slide
1024/683 after resize to 1024: one window per image) is evaluated through `rsdg_bench.evaluate` with a
module that costs nothing: `scores` (the default) returns the same random scores, drawn once per image size,
so the harness sees scores that vary from pixel to pixel as a real model's do (which is what makes the
class map's cost: constant scores let a branchy argmax predict every branch); `constant` builds class 0's
logits in a new tensor at each call (the model of the issue's measurement: its allocation and fill are
counted in `run`). The reference is the pure decode of the same prepared image and label files
(rasterio, no checks). Printed: both times, images per second, and `ratio` = decode time / run time, i.e.
the share of decode throughput that `run` reaches (1.0 would mean the harness adds nothing), and the CPU
time each takes per image: with both cores busy, the ratio cannot pass 2 × decode CPU / run CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch import nn

import rsdg_bench as rb
from rsdg_bench.base.allocator import keep_freed_blocks
from rsdg_bench.datasets.prepared import PreparedDataset, quiet_georef, read_raster

SIZE = 1024


class Scores(nn.Module):
    """Random scores drawn once per input size and returned at every call: a real model's output, for free."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(()))
        self.drawn: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], self.num_classes, *x.shape[-2:])
        if shape not in self.drawn:
            self.drawn[shape] = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        return self.drawn[shape]


class Constant(nn.Module):
    """Logits that cost nothing to compute: class 0 everywhere (plus one parameter, so it has a state)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.new_zeros((x.shape[0], self.num_classes, *x.shape[-2:]))
        logits[:, 0] = 1.0
        return logits


def write_raw(root: Path, images: int) -> Path:
    """LoveDA's raw layout (`Train|Val/Rural|Urban/images_png|masks_png/<id>.png`) at 1024²."""
    raw = root / "loveda_raw"
    image_id = 0
    for split_dir, count in (("Train", 1), ("Val", images)):
        for domain_dir in ("Rural", "Urban"):
            for _ in range(count):
                rng = np.random.default_rng(image_id)
                mask = np.repeat(np.repeat(rng.integers(1, 8, (16, 16)), SIZE // 16, 0), SIZE // 16, 1).astype(np.uint8)
                colours = rng.integers(0, 256, (8, 3))
                image = np.clip(colours[mask].transpose(2, 0, 1) + rng.integers(-10, 11, (3, SIZE, SIZE)), 0, 255)
                for sub, array in (("images_png", image.astype(np.uint8)), ("masks_png", mask[None])):
                    folder = raw / split_dir / domain_dir / sub
                    folder.mkdir(parents=True, exist_ok=True)
                    with quiet_georef(), rasterio.open(folder / f"{image_id}.png", "w", driver="PNG", height=SIZE,
                                                       width=SIZE, count=array.shape[0], dtype="uint8") as dst:
                        dst.write(array)
                image_id += 1
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="target images (default 24)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2, the box's cores)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the run (`run --workers`)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per batch of the run (`run --batch-size`)")
    parser.add_argument("--model", choices=("scores", "constant"), default="scores",
                        help="scores: the same random scores at each call (default); constant: new constant logits")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_blocks()  # what `rsdg-bench run` does in its own process (`rb.evaluate` leaves a caller's alone)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        from rsdg_bench.prep import get_preparer

        get_preparer("loveda").prepare(write_raw(Path(scratch), args.images), data, progress=False)
        task = rb.load_task("crossearth/r2u")
        dataset = PreparedDataset.open(data, "loveda")
        rows = dataset.rows("urban", "val").to_dict("records")
        contract = rb.InputContract(num_bands=3, normalization=rb.Normalization((0.0,) * 3, (1.0,) * 3))
        model = (Scores if args.model == "scores" else Constant)(task.class_schema.num_classes)
        decode, run, decode_cpu, run_cpu = [], [], [], []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), _cpu_seconds()
            for row in rows:
                read_raster(dataset.root / row["image"])
                read_raster(dataset.root / row["label"])
            decode.append(time.perf_counter() - start)
            decode_cpu.append(_cpu_seconds() - cpu)
            start, cpu = time.perf_counter(), _cpu_seconds()
            rb.evaluate(model, task, input_contract=contract, data_root=data, device="cpu", progress=False,
                        num_workers=args.workers, batch_size=args.batch_size)
            run.append(time.perf_counter() - start)
            run_cpu.append(_cpu_seconds() - cpu)
        best_decode, best_run = min(decode), min(run)
        print(f"{len(rows)} images of {SIZE}², model {args.model}, {args.threads} threads, {args.workers} workers, "
              f"batch {args.batch_size}, best of {args.repeats}")
        print(f"pure decode {best_decode:.3f} s ({len(rows) / best_decode:.1f} img/s); "
              f"run {best_run:.3f} s ({len(rows) / best_run:.1f} img/s)")
        print(f"CPU per image (every thread, and loader processes): decode {1e3 * min(decode_cpu) / len(rows):.1f} ms, "
              f"run {1e3 * min(run_cpu) / len(rows):.1f} ms")
        print(f"ratio {best_decode / best_run:.2f}")


def _cpu_seconds() -> float:
    """CPU time of this process's threads and of its ended child processes (DataLoader workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


if __name__ == "__main__":
    main()
