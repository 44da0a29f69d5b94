"""Benchmark for a GPU: `run` with smp's U-Net ResNet-18 on 512² windows, one image per forward pass against
batched, as images per second and GPU utilisation, in one run, with the two bounds it cannot pass.

    python bench/cuda_batching.py [--device cuda] [--images 32] [--settings 1x1,1x4,8x1] [--precisions fp32]
                                  [--read-threads auto] [--workers 0] [--repeats 2] [--cpu-check 2] [--profile]

The 1024² LoveDA-layout fake of `run_vs_decode.py` is prepared by the real preparer, and `crossearth/r2u`'s
target split is evaluated with its inference changed to 512² windows at stride 512 (four per image, no
resize). Each setting `BxW` is `run --batch-size B --window-batch W`: B equal-size images and W windows per
forward pass (B×W windows in all), for each of `--precisions` and `--read-threads` (threads reading ahead;
`auto` is the harness's choice for the device). The network is built with random weights (nothing can be
downloaded); its speed is the trained network's. Each setting is run once to warm up, then `--repeats`
times; the best is kept. While it runs, `nvidia-smi` is sampled every 100 ms and the mean utilisation is
printed (when `nvidia-smi` exists). Printed: images per second per setting and `ratio` = the best batched
setting's images per second over `1x1`'s, per precision and read threads.

The two bounds, measured in the same run: `read ceiling`, the images per second of reading the split ahead
(decode, checks, pinning) with nothing else running, per read-thread count; `model ceiling`, the images per
second of the network alone on 32 windows already on the device (IEEE float32, TF32 as PyTorch allows it
by default, and bf16 autocast).

It also says whether the numbers stay put. Per setting, `moved` is half the summed absolute difference of
its confusion matrix from the first setting's (a lower bound on the pixels whose class changed: batched
convolutions may pick other kernels, whose rounding can flip a near tie). `--cpu-check N` evaluates the first
N images on the CPU in float32 and compares with the device's 1x1 float32 matrices the same way. Last, the
class map and the confusion count on the device are compared with the CPU's compiled loops on random
scores with ties: those must agree exactly. `--profile` prints cProfile's top functions for the last setting
(on Python 3.12 and later cProfile sees every thread, the reading ones too). On the CPU (`--device cpu`) it
is a smoke check of this script.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from run_vs_decode import write_raw

import rsdg_bench as rb
from rsdg_bench.base.allocator import keep_freed_blocks
from rsdg_bench.datasets.read_ahead import read_ahead, read_threads_for
from rsdg_bench.evaluator.evaluation import autocast, float32_arithmetic
from rsdg_bench.evaluator.inference import class_indices
from rsdg_bench.models.registry import resolve_adapter
from rsdg_bench.prep import get_preparer
from rsdg_bench.protocol.task_schema import InferenceSpec, Task
from rsdg_bench.scoring.metrics import confusion_counts

WINDOW = 512


class UtilisationSampler:
    """`nvidia-smi`'s GPU utilisation, sampled every 100 ms between `start` and `stop` (None without it)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        self.process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                         "-lms", "100"], stdout=subprocess.PIPE, text=True)

    def stop(self) -> float | None:
        if self.process is None:
            return None
        self.process.terminate()
        output, _ = self.process.communicate()
        samples = [float(line.split(",")[0]) for line in output.splitlines() if line.strip()]
        return sum(samples) / len(samples) if samples else None


def total_matrix(evaluation: rb.Evaluation) -> np.ndarray:
    """The confusion matrices of every evaluated split, summed."""
    return sum(evaluation.confusion_matrices.values())


def moved(matrix: np.ndarray, reference: np.ndarray) -> int:
    """Half the summed absolute difference of two confusion matrices: at least this many pixels changed class."""
    return int(np.abs(matrix - reference).sum()) // 2


def kernel_parity(device: torch.device) -> tuple[bool, bool]:
    """(class maps equal, confusion counts equal): the device's scoring against the CPU's compiled loops on
    random float32 scores of 2 × 7 × 1024² with ties (scores rounded to a coarse grid)."""
    generator = torch.Generator().manual_seed(0)
    scores = (torch.randn(2, 7, 1024, 1024, generator=generator) * 4).round() / 4
    label = torch.randint(0, 7, (2, 1024, 1024), generator=generator, dtype=torch.uint8)
    label[:, :16] = 255  # an ignored band, as prepared labels have
    on_cpu = class_indices(scores, 1, "parity")
    on_device = class_indices(scores.to(device), 1, "parity")
    same_classes = torch.equal(on_cpu, on_device.cpu())
    same_counts = True
    for image in range(2):
        on_cpu_counts = confusion_counts(label[image], on_cpu[image], 7)
        device_counts = confusion_counts(label[image].to(device), on_device[image], 7)
        same_counts &= all(np.array_equal(a, b) for a, b in zip(on_cpu_counts, device_counts, strict=True))
    return same_classes, same_counts


def read_ceiling(task: Task, data: Path, threads: int, batch: int, device: torch.device) -> float:
    """Images per second of reading the target split ahead as `run` does (pinned for CUDA), nothing else; the
    second of two passes (the first fills the page cache and the pinned-memory pool, as a warm-up run does)."""
    split = rb.open_split(task, "target", data_root=data, for_training=False).for_inference()
    for _ in range(2):
        started = time.perf_counter()
        with read_ahead(split, list(range(len(split))), batch, threads, pin_memory=device.type == "cuda") as batches:
            for _ in batches:
                pass
    return len(split) / (time.perf_counter() - started)


def model_ceiling(module: torch.nn.Module, device: torch.device, arithmetic: str) -> float:
    """Images of 1024² (four 512² windows) per second through `module` alone, 32 windows per pass already on
    the device (2 on the CPU), in `arithmetic`: ieee (float32), tf32 (PyTorch's default for cuDNN), bf16
    (autocast)."""
    on_gpu = device.type != "cpu"
    repeats = 20 if on_gpu else 1
    windows = torch.randn(32 if on_gpu else 2, 3, WINDOW, WINDOW, device=device)
    precision = {"ieee": "fp32", "tf32": "tf32", "bf16": "bf16"}[arithmetic]
    with torch.inference_mode(), float32_arithmetic(precision), autocast(precision, device):
        for _ in range(3 if on_gpu else 1):
            module(windows)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            module(windows)
        synchronize(device)
    return repeats * len(windows) / 4 / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=32, help="target images of 1024² (default 32)")
    parser.add_argument("--settings", default="1x1,1x4,8x1",
                        help="comma-separated BxW: images per batch × windows per forward pass (default 1x1,1x4,8x1)")
    parser.add_argument("--precisions", default="fp32", help="comma-separated, of fp32, tf32, bf16, fp16 (default fp32)")
    parser.add_argument("--read-threads", default="auto",
                        help="comma-separated thread counts reading ahead, or auto (the harness's; default auto)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0: read-ahead threads)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-check", type=int, default=2, help="images compared with the CPU in float32 (0: none)")
    parser.add_argument("--profile", action="store_true",
                        help="print where the main thread spends the last setting's time (cProfile, top 25)")
    args = parser.parse_args()
    keep_freed_blocks()  # as `rsdg-bench run` does in its own process (`rb.evaluate` leaves a caller's alone)
    settings = [tuple(int(n) for n in item.split("x")) for item in args.settings.split(",")]
    precisions = args.precisions.split(",")
    device = torch.device(args.device)
    thread_counts = [read_threads_for(device) if item == "auto" else int(item) for item in args.read_threads.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        get_preparer("loveda").prepare(write_raw(Path(scratch), args.images), data, progress=False)
        protocol = rb.load_task("crossearth/r2u")
        task = protocol.model_copy(update={"inference": InferenceSpec(mode="slide", crop=WINDOW, stride=WINDOW)})
        adapter = resolve_adapter("smp")(arch="unet", encoder="resnet18")  # declares fp32, bf16 and fp16
        print(f"{args.images} images of 1024² in {WINDOW}² windows on {device} "
              f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
              f"loader workers {args.workers}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}")
        for threads in thread_counts:
            print(f"read ceiling, {threads} threads: {read_ceiling(task, data, threads, 8, device):.1f} img/s")
        first: np.ndarray | None = None
        for precision in precisions:
            for threads in thread_counts:
                speeds: dict[tuple[int, int], float] = {}
                for batch, windows in settings:
                    def evaluate() -> rb.Evaluation:
                        evaluation = rb.evaluate(adapter, task, data_root=data, device=device, batch_size=batch,
                                                 window_batch=windows, precision=precision, num_workers=args.workers,
                                                 read_threads=threads, progress=False)
                        synchronize(device)
                        return evaluation

                    matrix = total_matrix(evaluate())  # also the warm-up: kernels chosen, memory pooled
                    first = matrix if first is None else first
                    sampler, times = UtilisationSampler(), []
                    sampler.start()
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        evaluate()
                        times.append(time.perf_counter() - started)
                    utilisation = sampler.stop()
                    speeds[(batch, windows)] = args.images / min(times)
                    shown = f"{utilisation:.0f} %" if utilisation is not None else "n/a (no nvidia-smi)"
                    print(f"{precision}, {threads} read threads, batch {batch} × windows {windows}: "
                          f"{speeds[(batch, windows)]:.1f} img/s, GPU utilisation {shown}, "
                          f"moved {moved(matrix, first)} of {int(first.sum())} pixels")
                if (1, 1) in speeds and len(speeds) > 1:
                    best = max((s for s in speeds if s != (1, 1)), key=speeds.get)
                    print(f"{precision}, {threads} read threads: ratio {speeds[best] / speeds[(1, 1)]:.2f} "
                          f"(batch {best[0]} × windows {best[1]} over 1 × 1)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            evaluate()
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        for arithmetic in ("ieee", "tf32", "bf16"):
            print(f"model ceiling, {arithmetic}: {model_ceiling(adapter.module, device, arithmetic):.1f} img/s")
        if args.cpu_check and device.type != "cpu":
            check = {name: total_matrix(rb.evaluate(adapter, task, data_root=data, device=where, limit=args.cpu_check,
                                                    progress=False))
                     for name, where in (("cpu", torch.device("cpu")), ("device", device))}
            print(f"cpu check, {args.cpu_check} images in float32: moved {moved(check['device'], check['cpu'])} "
                  f"of {int(check['cpu'].sum())} pixels")
        same_classes, same_counts = kernel_parity(device)
        print(f"kernel parity on {device}: class map equal {same_classes}, confusion counts equal {same_counts}")


if __name__ == "__main__":
    main()
