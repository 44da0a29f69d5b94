"""Benchmark of distributed training on the CPU: iterations per second of `rsdg-bench train` in one process
against the same global batch shared by two processes under torchrun (gloo), on the same cores, in one run.

    python bench/train_processes.py [--model-arg encoder=resnet18] [--short 4] [--long 16] [--batch-size 4]

The ToyEarth fake is prepared by the real preparer; `demo/u2a` is trained with smp's U-Net (random init, the
protocol's 128-px crops and AdamW) for `--short` and for `--long` iterations, without selection in between, in
each layout: one process with every core as torch threads, and `torchrun --nproc_per_node 2` with the cores
split between the processes (threads per process = cores / 2). Each layout's iterations per second come from
the difference of the two runs' wall times, which cancels the start-up (imports, the process group, reading the
task) and the final save; a ratio above 1 means two processes train faster than one on these cores. The
checkpoints of both layouts are the same model up to float sums (tests/test_distributed.py), so this measures
speed only.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rsdg_bench.prep import get_preparer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(command: list[str], threads: int) -> float:
    """Wall seconds of `command` with `threads` torch threads per process; fails loudly on a non-zero exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:6])} … failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-arg", default="encoder=resnet18")
    parser.add_argument("--short", type=int, default=4)
    parser.add_argument("--long", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as folder:
        data = Path(folder) / "data"
        preparer = get_preparer("toyearth")
        preparer.prepare(preparer.make_fake(Path(folder) / "raw"), data, progress=False)
        rates = {}
        for layout, processes in (("1 process", 1), ("2 processes", 2)):
            times = []
            for iterations in (args.short, args.long):
                out = Path(folder) / f"{processes}-{iterations}.pt"
                train = ["train", "--task", "demo/u2a", "--model", "smp", "--model-arg", args.model_arg,
                         "--iterations", str(iterations), "--val-interval", str(iterations), "--batch-size",
                         str(args.batch_size), "--data-root", str(data), "--device", "cpu", "--quiet", "--out", str(out)]
                launcher = [sys.executable, "-m", "rsdg_bench.cli"] if processes == 1 else [
                    sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(_free_port()), "-m", "rsdg_bench.cli"]
                times.append(_timed([*launcher, *train], max(args.cores // processes, 1)))
            rates[layout] = (args.long - args.short) / (times[1] - times[0])
            print(f"{layout:12s} {times[0]:7.1f} s for {args.short} it, {times[1]:7.1f} s for {args.long} it: "
                  f"{rates[layout]:.3f} it/s (global batch {args.batch_size})")
        print(f"ratio 2 processes / 1 process: {rates['2 processes'] / rates['1 process']:.2f} "
              f"(on {args.cores} cores, U-Net {args.model_arg})")


if __name__ == "__main__":
    main()
