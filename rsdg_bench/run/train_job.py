"""One training, as `rsdg-bench train` runs it: here, under torchrun, or as a cluster job through submitit.

`train_here` is the whole of it in this process (under torchrun, this process's share of each step). A job
submitted by `launchers.submit_training` runs `train_in_job` on the compute node: with several tasks per
node (`--job-processes N`, one per GPU) it first exports the torch.distributed variables submitit knows
(rank, world size, the first node as master, a port drawn from the job id), so the job's processes form the
same process group torchrun would give them, and the numbers are those of `torchrun --nproc_per_node N`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rsdg_bench.base.io import check_writable
from rsdg_bench.evaluator.distributed import join_from_environment, leave_process_group
from rsdg_bench.models.adapters import Adapter
from rsdg_bench.models.model_spec import ModelSpec, default_checkpoint_dir, seed_checkpoint_name
from rsdg_bench.protocol.task_schema import Task, TaskCatalog
from rsdg_bench.train.training import TrainOverrides, TrainReport, build_trainable, train_adapter


@dataclass(frozen=True)
class TrainJob:
    """What one training needs, all of it picklable (a cluster job receives it): the task by id (the job
    reads the installed task, as `run` jobs do), the model, the folders, the protocol's overrides and the
    device by name (resolved where the job runs, not where it was submitted)."""

    task_id: str
    model: ModelSpec
    data_root: Path
    results_root: Path
    out: Path | None = None
    overrides: TrainOverrides = TrainOverrides()
    device: str = "auto"
    workers: int = 0
    progress: bool = True

    def checkpoint(self, task: Task, adapter: Adapter) -> Path:
        """`out`, else `<results>/checkpoints/<adapter>/<checkpoint stem>[.seed<N>].pt` (`task` is this job's; the
        stem is the checkpoint key unless the adapter names its training stages apart)."""
        if self.out is not None:
            return self.out
        return default_checkpoint_dir(self.results_root, adapter.name) / seed_checkpoint_name(
            adapter.checkpoint_stem(task), self.overrides.seed)


def train_here(job: TrainJob) -> TrainReport | None:
    """Train in this process (under torchrun: its share); the report on the main process, None on the others."""
    task = TaskCatalog().task(job.task_id)
    group, device = join_from_environment(job.device)
    try:
        adapter = build_trainable(job.model, task, job.data_root, seed=job.overrides.seed)
        out = job.checkpoint(task, adapter)
        what, flag = ("checkpoint folder", "--out") if job.out else ("results folder", "--results (or RSDG_RESULTS)")
        check_writable(out.parent, what, flag)
        report = train_adapter(adapter, task, job.data_root, out, overrides=job.overrides, device=device,
                               num_workers=job.workers, progress=job.progress, group=group)
        group.barrier()  # a training that ended well: every rank past its last collective before any leaves
    finally:
        leave_process_group()
    return report if group.is_main else None


def train_in_job(job: TrainJob) -> TrainReport | None:
    """What a submitted training job runs on its node (see the module docstring)."""
    import submitit

    environment = submitit.JobEnvironment()
    if environment.num_tasks > 1:
        # every process sees all of the node's GPUs and takes the one of its local rank (`join_from_environment`)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return train_here(job)
