"""Data-parallel evaluation under torchrun: exact shards, per-sample counts gathered across processes.

`torchrun --nproc_per_node N -m rsdg_bench.cli run ...` starts N processes. Process r evaluates samples
r, r+N, r+2N, … of every split: no padding, so no sample counts twice (torch's DistributedSampler pads by
default, which silently double-counts tiles). Each process's per-sample counts (held sparse) are gathered
by every process, so the numbers are exactly those of one process, and only rank 0 writes records. An
error on any rank, while a task is set up or a split evaluated, is shared, so every rank fails the task
together instead of waiting forever for the one that died, or going on out of step with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.scoring.sparse_counts import SparseCountRows

# How a rank says that another rank failed the split: the failing rank reports its own error
OTHER_RANK_FAILED = "another process of this distributed run failed"


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a run; the default is a single process and every collective is a no-op."""

    rank: int = 0
    world_size: int = 1
    collective_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> range:
        """This rank's sample indices: every world_size-th, starting at its rank."""
        return range(self.rank, count, self.world_size)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        shared = tensor.to(self.collective_device)
        dist.all_reduce(shared, op=dist.ReduceOp.SUM)
        return shared.to(tensor.device)

    def gather_rows(self, counts: SparseCountRows) -> SparseCountRows:
        """Every rank's rows of `counts` (each rank filled its own shard), on every rank."""
        if self.world_size == 1:
            return counts
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, counts.entries())
        return SparseCountRows.merged(counts.rows, counts.width, parts)

    def agree(self, value: int) -> bool:
        """True on every rank when every rank holds the same `value` (the sum of squares equals N·mean²)."""
        if self.world_size == 1:
            return True
        sums = self.sum(torch.tensor([value, value * value], dtype=torch.float64))
        return bool(sums[1].item() * self.world_size == sums[0].item() ** 2)

    def barrier(self) -> None:
        """Wait until every rank is here: after a run's last collective, so no rank tears the group down while
        another still finishes its part of that collective (gloo then aborts the slower rank)."""
        if self.world_size > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one."""
        if self.world_size == 1:
            return flag
        return bool(self.sum(torch.tensor([int(flag)], dtype=torch.int64)).item())

    @contextmanager
    def failing_together(self, doing: str) -> Iterator[None]:
        """Run the block on every rank, then raise on every rank if it raised on any: the failing rank its own
        error, the others one that points to it. So a rank that failed (to load its adapter, to open a split)
        never goes on to the next task's collectives while the others wait in this task's, where they would
        pair with the wrong ones. One all-reduce; alone, the block's error propagates as it is."""
        failure: Exception | SystemExit | None = None
        try:
            yield
        except (Exception, SystemExit) as exc:  # an adapter that calls sys.exit() fails its task here too
            failure = exc
        if self.any(failure is not None):
            if failure is not None:
                raise failure
            raise RsdgError(f"{OTHER_RANK_FAILED} {doing}", "see that rank's error on stderr")


def resolve_device(name: str) -> torch.device:
    """The torch device `--device` names: auto (CUDA when present, else the CPU), cpu, cuda, cuda:N or mps."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise RsdgError(f"unknown device {name!r}", "use --device cpu, cuda, cuda:N (a GPU's index), mps or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RsdgError(f"device {name!r} asked for, but CUDA is not available here", "use --device cpu")
    return torch.device(name)


def join_from_environment(device_name: str) -> tuple[ProcessGroup, torch.device]:
    """The process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK), or one process.

    Under torchrun each process takes the GPU of its local rank (NCCL) when CUDA is asked for and present,
    else the CPU (gloo).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessGroup(), resolve_device(device_name)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return ProcessGroup(rank, world_size, device), device


def leave_process_group() -> None:
    """Tear the torchrun process group down before the interpreter exits. Without it, gloo's threads can be
    destroyed while running at exit ("terminate called without an active exception") and a finished rank
    aborts, failing a run whose records were already written. (No barrier: every collective of a run is
    complete when `run_tasks` returns, and a rank leaving on an error must not wait for the others.)"""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
