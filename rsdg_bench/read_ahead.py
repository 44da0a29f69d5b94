"""Samples read ahead by threads of the evaluating process, in order: decoding overlaps the model without
loader worker processes.

A DataLoader worker is a process: every decoded image crosses into the main process through a fresh
shared-memory file (created, filled, mapped and page-faulted on both sides), which on a 1024² image costs
about as much as the model-free part of scoring it. Decoding a prepared file (rasterio / GDAL) and hashing
its bytes (hashlib) release the GIL, as torch's kernels do, so threads of the same process overlap them
with the model at no transfer cost. Samples come out in the order of `indices` whatever order the threads
finish in, so every count is what reading them one by one gives.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from .prepared import quiet_georef_everywhere

READ_THREADS = 2  # the box's cores: one thread decodes while the other waits on its file, or both while the model waits
BATCHES_AHEAD = 4  # bounded: at most this many decoded batches wait in memory


@contextlib.contextmanager
def read_ahead(dataset: Any, indices: Sequence[int], batch_size: int, threads: int = READ_THREADS,
               pin_memory: bool = False, then: Callable[[dict], dict] | None = None) -> Iterator[Iterator[list[dict]]]:
    """Batches (lists) of `dataset[i]` for `indices` in order, `batch_size` at a time, read by `threads` threads
    at most `BATCHES_AHEAD` batches ahead. The reading thread also applies `then` to each sample (evaluation
    normalizes there on the CPU, beside the model) and, with `pin_memory`, pins its tensors (for a CUDA copy
    that does not block); an exception in either is raised where its batch is taken. Leaving the context
    cancels the reads not started and waits for the running ones, so no thread outlives the evaluation,
    whether it ended or failed."""
    quiet_georef_everywhere()  # `quiet_georef` swaps the process's warning filters, which threads must not race on

    def read(batch: Sequence[int]) -> list[dict]:
        samples = [dataset[i] for i in batch]
        if then is not None:
            samples = [then(sample) for sample in samples]
        if pin_memory:
            samples = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                       for s in samples]
        return samples

    batches = [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rsdg-read") as pool:
        def ordered() -> Iterator[list[dict]]:
            for batch in batches:
                pending.append(pool.submit(read, batch))
                if len(pending) > BATCHES_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

        try:
            yield ordered()
        finally:
            for future in pending:
                future.cancel()
