"""Samples read ahead by threads of the evaluating process, in order: decoding overlaps the model without
loader worker processes.

A DataLoader worker is a process: every decoded image crosses into the main process through a fresh
shared-memory file (created, filled, mapped and page-faulted on both sides), which on a 1024² image costs
about as much as the model-free part of scoring it. Decoding a prepared file (rasterio / GDAL) and hashing
its bytes (hashlib) release the GIL, as torch's kernels do, so threads of the same process overlap them
with the model at no transfer cost (beside an H100, `--workers 6` gave 83–93 images/s where the threads gave
124–126: `bench/cuda_batching.py --workers 6`). Samples come out in the order of `indices` whatever order the
threads finish in, so every count is what reading them one by one gives.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from rsdg_bench.datasets.prepared import quiet_georef_everywhere

READ_THREADS = 2  # on the CPU: one thread decodes while the other waits on its file, or both while the model waits
MAX_READ_THREADS = 8  # beside a GPU: reads scaled to 8 threads on a 16-core H100 host, not beyond (bench/read_scaling.py)
BATCHES_AHEAD = 4  # bounded: at most this many decoded batches wait in memory


def read_threads_for(device: torch.device) -> int:
    """How many threads read ahead for a model on `device`. On the CPU the model's intra-op threads use the
    cores, so two (decoding overlaps the model, the cores are not oversubscribed). Beside a GPU the host's
    cores have nothing else to do than read: every core but the main thread's, up to `MAX_READ_THREADS`.
    On a 16-core H100 machine, eight threads read 1024² samples ahead at 270 images/s against 82 with two,
    where the network alone runs 137 (float32) to 363 (bf16) images/s (`bench/cuda_batching.py`)."""
    if device.type == "cpu":
        return READ_THREADS
    return max(READ_THREADS, min(MAX_READ_THREADS, len(os.sched_getaffinity(0)) - 1))


@contextlib.contextmanager
def read_ahead(dataset: Any, indices: Sequence[int], batch_size: int, threads: int = READ_THREADS,
               pin_memory: bool = False, then: Callable[[dict[str, Any]], dict[str, Any]] | None = None
               ) -> Iterator[Iterator[list[dict[str, Any]]]]:
    """Batches (lists) of `dataset[i]` for `indices` in order, `batch_size` at a time, each sample read by one
    of `threads` threads. At most `BATCHES_AHEAD` batches, or two samples per thread if that is more, are read
    ahead: every thread has work (when a batch was one thread's work, at most five threads could read at
    once), memory stays bounded. The reading thread also applies `then` to its sample (evaluation normalizes there on the
    CPU, beside the model) and, with `pin_memory`, pins its tensors (for a CUDA copy that does not block); an
    exception in either is raised where its batch is taken. Leaving the context cancels the reads not started
    and waits for the running ones, so no thread outlives the evaluation, whether it ended or failed."""
    quiet_georef_everywhere()  # `quiet_georef` swaps the process's warning filters, which threads must not race on

    def read(index: int) -> dict[str, Any]:
        sample: dict[str, Any] = dataset[index]
        if then is not None:
            sample = then(sample)
        if pin_memory:
            sample = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
        return sample

    ahead = max(BATCHES_AHEAD * batch_size, 2 * threads)
    upcoming = iter(indices)
    pending: deque[Future[dict[str, Any]]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rsdg-read") as pool:
        def fill() -> None:
            while len(pending) < ahead and (index := next(upcoming, None)) is not None:
                pending.append(pool.submit(read, index))

        def ordered() -> Iterator[list[dict[str, Any]]]:
            fill()
            while pending:
                batch = [pending[position].result() for position in range(min(batch_size, len(pending)))]
                for _ in batch:
                    pending.popleft()
                fill()
                yield batch

        try:
            yield ordered()
        finally:
            for future in pending:
                future.cancel()
