"""Benchmark of the evaluator's host side: how often it waits for the device per batch, and how much of the
main thread's time per batch goes outside the model's forward pass, per task kind, in one run.

    python bench/host_overhead.py [--device cpu|cuda] [--batch-size 4] [--threads 2] [--repeats 3]

For each kind, the raw-layout fake of a dataset of that kind is prepared by the real preparer and a target
split of one of its tasks is evaluated with a random-init model: segmentation (ToyEarth, `demo/u2a`, smp's
U-Net R18), series (DynamicEarthNet, `codex/dynamicearthnet`, `smp-temporal`) and classification (FMoW,
`codex/fmow`, `timm-classifier`). Each is evaluated twice through `evaluation.evaluate_split_counts`:

- `per image`: every image's confusion counts made on their own (`metrics.confusion_counts`), the way the
  evaluator counts on the CPU, where the compiled loops are the fastest, and the way it counted on a GPU
  before issue 42;
- `batch`: the accelerator path (`inference.counts_on_device`), one count and one copy to the host per batch
  (`metrics.batch_confusion_counts`); forced on for this measurement when the device is the CPU.

Printed per kind and path: batches, the calls that wait for the device per batch (`host_syncs.HostSyncCounter`,
by name) and the main thread's milliseconds per batch outside the forward pass, two ways: `host ms` (wall time
of the split minus the time inside the adapter's entry point, synchronized on a GPU: it includes waiting for
the reading threads) and `cpu ms` (the main thread's own CPU time, `time.thread_time`, outside the entry
point: the work it does itself, without its waits); each the lowest of `--repeats` runs after one warm-up run
of the same split; and `ratio` = per-image waits / batch waits (on a GPU: on the CPU the per-image path's
compiled loops wait for nothing, and the batch path's count says what would wait on a GPU).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from rsdg_bench.base.host_syncs import HostSyncCounter
from rsdg_bench.evaluator import inference
from rsdg_bench.evaluator.evaluation import evaluate_split_counts
from rsdg_bench.models.model_spec import ModelSpec, build_for_task
from rsdg_bench.prep import get_preparer
from rsdg_bench.protocol.kind import get_kind
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog

CASES = (  # kind, dataset, task, model
    ("segmentation", "toyearth", "demo/u2a", ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"})),
    ("series", "dynamicearthnet", "codex/dynamicearthnet", ModelSpec("smp-temporal", {})),
    ("classification", "fmow", "codex/fmow", ModelSpec("timm-classifier", {"model": "resnet18"})),
)


def measure(task_id: str, model: ModelSpec, data_root: Path, device: torch.device, batch_size: int,
            batch_path: bool) -> tuple[int, Counter, float, float]:
    """(batches, waits by name, main-thread wall ms and CPU ms per batch outside the forward) of one target
    split."""
    task = TaskCatalog().task(task_id)
    access = TaskData(data_root, task, phase="evaluate")
    adapter = build_for_task(model, task, access)
    adapter.to(device)
    split = access.open(task.targets[0])
    entry = get_kind(task.kind).entry_point
    forward, inside, inside_cpu = getattr(adapter, entry), [0.0], [0.0]

    def timed(*args, **kwargs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        out = forward(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        inside[0] += time.perf_counter() - start
        inside_cpu[0] += time.thread_time() - start_cpu
        return out

    setattr(adapter, entry, timed)
    original = inference.counts_on_device
    inference.counts_on_device = (lambda device: True) if batch_path else (lambda device: False)
    try:
        start, start_cpu = time.perf_counter(), time.thread_time()
        with HostSyncCounter() as syncs:
            evaluate_split_counts(adapter, split, task, device, progress=False, batch_size=batch_size)
        total, total_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
    finally:
        inference.counts_on_device = original
    batches = math.ceil(len(split) / batch_size)
    return batches, syncs.calls, 1000 * (total - inside[0]) / batches, 1000 * (total_cpu - inside_cpu[0]) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of this process")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per kind and path, the lowest shown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        for _, dataset, _, _ in CASES:
            raw = get_preparer(dataset).make_fake(Path(folder) / "raw" / dataset)
            get_preparer(dataset).prepare(raw, root, progress=False)
        print(f"device {device}, batch size {args.batch_size}")
        print(f"{'kind':15s} {'path':9s} {'batches':>7s} {'waits/batch':>11s} {'host ms/batch':>13s} "
              f"{'cpu ms/batch':>12s}  waits by name")
        for kind, _, task_id, model in CASES:
            waits = {}
            for batch_path in (False, True):
                torch.manual_seed(0)
                measure(task_id, model, root, device, args.batch_size, batch_path)  # warm-up: compiled loops, caches
                runs = [measure(task_id, model, root, device, args.batch_size, batch_path) for _ in range(args.repeats)]
                batches, calls = runs[0][:2]
                host_ms, cpu_ms = min(run[2] for run in runs), min(run[3] for run in runs)
                path = "batch" if batch_path else "per image"
                waits[path] = sum(calls.values()) / batches
                print(f"{kind:15s} {path:9s} {batches:7d} {waits[path]:11.2f} {host_ms:13.2f} {cpu_ms:12.2f}  "
                      f"{dict(calls)}")
            if device.type == "cpu":  # the per-image path's compiled loops read host memory: nothing to wait for
                print(f"{kind:15s} ratio: on a GPU only (per-image counting on the CPU waits for no device)")
            else:
                print(f"{kind:15s} ratio (per-image waits / batch waits): {waits['per image'] / waits['batch']:.2f}")


if __name__ == "__main__":
    main()
