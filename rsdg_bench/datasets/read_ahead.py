"""Samples read ahead by threads of the evaluating process, in order: decoding overlaps the model without
loader worker processes.

A DataLoader worker is a process: every decoded image crosses into the main process through a fresh
shared-memory file (created, filled, mapped and page-faulted on both sides), which on a 1024² image costs
about as much as the model-free part of scoring it. Decoding a prepared file (rasterio / GDAL) and hashing
its bytes (hashlib) release the GIL, as torch's kernels do, so threads of the same process overlap them
with the model at no transfer cost (beside an H100, `--workers 6` gave 83–93 images/s where the threads gave
124–126: `bench/cuda_batching.py --workers 6`). Samples come out in the order of `indices` whatever order the
threads finish in, so every count is what reading them one by one gives.

How many threads is measured beside an accelerator (`read_threads="auto"`, `default_read_threads`): the first
images of the run are read in chunks by 1, 2, 4 … threads, each chunk alone (the model waits for it, then
scores it as usual), and the smallest count within `READ_TOLERANCE` of the fastest reads the rest
(`calibrated_read_ahead`). More threads than the reading needs only compete with the main thread for the
GIL and the cores, so a count that does not read faster is not taken. The samples, their batches and their
order are those of a fixed count: only the speed can differ.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rsdg_bench.datasets.prepared import quiet_georef_everywhere

READ_THREADS = 2  # on the CPU: one thread decodes while the other waits on its file, or both while the model waits
MAX_READ_THREADS = 8  # beside a GPU: reads scaled to 8 threads on a 16-core H100 host, not beyond (bench/read_scaling.py)
BATCHES_AHEAD = 4  # bounded: at most this many decoded batches wait in memory
AUTO: Literal["auto"] = "auto"  # `read_threads="auto"`: the count measured on the run's first images
READ_TOLERANCE = 0.05  # a count within 5 % of the fastest reads as fast: the smallest such count is taken
CALIBRATION_SAMPLES = 16  # samples read per thread count when measuring: two per thread at MAX_READ_THREADS

ReadThreads = int | Literal["auto"]

log = logging.getLogger(__name__)


def read_threads_for(device: torch.device) -> int:
    """A fixed count of threads reading ahead for a model on `device` (`run` measures one beside a GPU instead:
    `default_read_threads`). On the CPU the model's intra-op threads use the cores, so two (decoding overlaps
    the model, the cores are not oversubscribed). Beside a GPU, every core but the main thread's, up to
    `MAX_READ_THREADS`: on a 16-core H100 machine, eight threads read 1024² samples ahead at 270 images/s
    against 82 with two, where the network alone runs 137 (float32) to 363 (bf16) images/s
    (`bench/cuda_batching.py`)."""
    if device.type == "cpu":
        return READ_THREADS
    return most_read_threads()


def most_read_threads() -> int:
    """The most threads worth reading with: every core but the main thread's, up to `MAX_READ_THREADS`, and
    never fewer than `READ_THREADS`."""
    return max(READ_THREADS, min(MAX_READ_THREADS, len(os.sched_getaffinity(0)) - 1))


def default_read_threads(device: torch.device) -> ReadThreads:
    """The read-thread setting when none is given: `READ_THREADS` on the CPU, where the model's intra-op
    threads need the cores that reading alone would take (a measurement of the reader alone would overstate
    what more threads give there); beside an accelerator `AUTO`, measured on the run's first images."""
    return READ_THREADS if device.type == "cpu" else AUTO


def candidate_counts(most: int) -> list[int]:
    """The thread counts a calibration tries: 1, 2, 4 … below `most`, then `most`."""
    counts = [1 << power for power in range(most.bit_length()) if 1 << power < most]
    return [*counts, most]


def pick_read_threads(rates: Mapping[int, float], tolerance: float = READ_TOLERANCE) -> int:
    """The smallest thread count whose reading rate (images/s) is within `tolerance` of the fastest: a count
    that reads no faster than a smaller one only competes with the main thread."""
    if not rates:
        raise ValueError("no reading rate was measured")
    fastest = max(rates.values())
    return min(count for count, rate in rates.items() if rate >= (1 - tolerance) * fastest)


@dataclass
class ReadThreadChoice:
    """A measured read-thread count, for the log and the record's `provenance.execution`: `rates` holds the
    images per second read by each count tried, on `samples_per_count` samples each (empty when the split was
    shorter than one chunk: then `READ_THREADS` read it, unmeasured); `threads` is set once the choice is made."""

    tolerance: float = READ_TOLERANCE
    rates: dict[int, float] = field(default_factory=dict)
    samples_per_count: int = 0
    threads: int | None = None

    def execution(self) -> dict[str, Any]:
        """The record's fields: the count that read the split's rest and how it was chosen."""
        return {"read_threads": self.threads,
                "read_threads_auto": {"tolerance": self.tolerance,
                                      "images_per_s": {str(n): round(rate, 1) for n, rate in self.rates.items()},
                                      "samples_per_count": self.samples_per_count}}


@contextlib.contextmanager
def calibrated_read_ahead(dataset: Any, indices: Sequence[int], batch_size: int, choice: ReadThreadChoice,
                          most: int | None = None, pin_memory: bool = False,
                          then: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                          clock: Callable[[], float] = time.perf_counter
                          ) -> Iterator[Iterator[list[dict[str, Any]]]]:
    """`read_ahead`'s batches, with the thread count measured on the first images (`choice` is filled in).

    For each of `candidate_counts(most)` (default `most_read_threads()`) while a whole chunk is left, a chunk
    of the next samples (`CALIBRATION_SAMPLES`, rounded up to whole batches) is read by that many threads with
    nothing else running (the model waits for it), timed with `clock`, then handed out batch by batch;
    `pick_read_threads` chooses from the rates and `read_ahead` reads the rest with that count. The chunks are
    the run's own samples in the run's own batches, read once: nothing is read twice and, every chunk reading
    files not read before, each count is timed on reads like the run's. A failed read is raised where its
    batch is taken, as in `read_ahead`."""
    quiet_georef_everywhere()
    read = _reader(dataset, then, pin_memory)
    size = choice.samples_per_count = batch_size * math.ceil(CALIBRATION_SAMPLES / batch_size)

    def batches() -> Generator[list[dict[str, Any]], None, None]:
        position = 0
        for count in candidate_counts(most or most_read_threads()):
            if len(indices) - position < size:
                break
            with ThreadPoolExecutor(max_workers=count, thread_name_prefix="rsdg-read") as pool:
                started = clock()
                futures = [pool.submit(read, index) for index in indices[position:position + size]]
                wait(futures)
                choice.rates[count] = size / max(clock() - started, 1e-9)
            position += size
            for start in range(0, size, batch_size):
                yield [future.result() for future in futures[start:start + batch_size]]
        choice.threads = pick_read_threads(choice.rates, choice.tolerance) if choice.rates else READ_THREADS
        if choice.rates:
            log.info("read threads: %d, the smallest within %.0f %% of the fastest (images/s by thread count: %s)",
                     choice.threads, 100 * choice.tolerance,
                     ", ".join(f"{n}: {rate:.1f}" for n, rate in choice.rates.items()))
        else:
            log.info("read threads: %d, not measured (fewer than %d samples)", choice.threads, size)
        with read_ahead(dataset, indices[position:], batch_size, choice.threads, pin_memory, then) as rest:
            yield from rest

    handed = batches()
    try:
        yield handed
    finally:
        handed.close()  # leaves the rest's `read_ahead`: its reads are cancelled or joined


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
    read = _reader(dataset, then, pin_memory)
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


def _reader(dataset: Any, then: Callable[[dict[str, Any]], dict[str, Any]] | None, pin_memory: bool
            ) -> Callable[[int], dict[str, Any]]:
    """What a reading thread does with one index: `dataset[index]`, then `then`, then pinning."""

    def read(index: int) -> dict[str, Any]:
        sample: dict[str, Any] = dataset[index]
        if then is not None:
            sample = then(sample)
        if pin_memory:
            sample = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
        return sample

    return read
