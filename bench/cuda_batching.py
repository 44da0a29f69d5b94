"""Benchmark for a GPU: `run` with smp's U-Net ResNet-18 on 512² windows, one image per forward pass against
batched, as images per second and GPU utilisation, in one run.

    python bench/cuda_batching.py [--device cuda] [--images 32] [--settings 1x1,1x4,8x1] [--precision fp32]
                                  [--repeats 2]

The 1024² LoveDA-layout fake of `run_vs_decode.py` is prepared by the real preparer, and `crossearth/r2u`'s
target split is evaluated with its inference changed to 512² windows at stride 512 (four per image, no
resize). Each setting `BxW` is `run --batch-size B --window-batch W`: B equal-size images and W windows per
forward pass (B×W windows in all). The network is built with random weights (nothing can be downloaded);
its speed is the trained network's. Each setting is run once to warm up, then `--repeats` times; the best
is kept. While it runs, `nvidia-smi` is sampled every 100 ms and the mean utilisation is printed (when
`nvidia-smi` exists). Printed: images per second per setting and `ratio` = the best batched setting's
images per second over `1x1`'s. On the CPU (`--device cpu`) it is a smoke check of this script.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import rsdg_bench as rb
from rsdg_bench.prep import get_preparer
from rsdg_bench.registry import resolve_adapter
from rsdg_bench.task_schema import InferenceSpec
from run_vs_decode import write_raw

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=32, help="target images of 1024² (default 32)")
    parser.add_argument("--settings", default="1x1,1x4,8x1",
                        help="comma-separated BxW: images per batch × windows per forward pass (default 1x1,1x4,8x1)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    settings = [tuple(int(n) for n in item.split("x")) for item in args.settings.split(",")]
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        get_preparer("loveda").prepare(write_raw(Path(scratch), args.images), data, progress=False)
        protocol = rb.load_task("crossearth/r2u")
        task = protocol.model_copy(update={"inference": InferenceSpec(mode="slide", crop=WINDOW, stride=WINDOW)})
        adapter = resolve_adapter("smp")(arch="unet", encoder="resnet18")  # declares fp32, bf16 and fp16
        speeds: dict[tuple[int, int], float] = {}
        print(f"{args.images} images of 1024² in {WINDOW}² windows on {device} "
              f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), {args.precision}")
        for batch, windows in settings:
            def evaluate() -> None:
                rb.evaluate(adapter, task, data_root=data, device=device, batch_size=batch, window_batch=windows,
                            precision=args.precision, progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            evaluate()  # warm-up: kernels chosen, memory pooled
            sampler, times = UtilisationSampler(), []
            sampler.start()
            for _ in range(args.repeats):
                started = time.perf_counter()
                evaluate()
                times.append(time.perf_counter() - started)
            utilisation = sampler.stop()
            speeds[(batch, windows)] = args.images / min(times)
            shown = f"{utilisation:.0f} %" if utilisation is not None else "n/a (no nvidia-smi)"
            print(f"batch {batch} × windows {windows}: {speeds[(batch, windows)]:.1f} img/s, GPU utilisation {shown}")
        if (1, 1) in speeds and len(speeds) > 1:
            best = max((s for s in speeds if s != (1, 1)), key=speeds.get)
            print(f"ratio {speeds[best] / speeds[(1, 1)]:.2f} (batch {best[0]} × windows {best[1]} over 1 × 1)")


if __name__ == "__main__":
    main()
