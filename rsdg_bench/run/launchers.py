"""Fanning tasks out as cluster jobs through submitit; the jobs' records meet in the shared results folder.

`rsdg-bench run --launcher slurm ...` submits one job per task (each job runs `run_tasks([task], ...)`, so
resume keys, smoke marking and failure isolation behave exactly as in one process). `rsdg-bench train
--launcher slurm ...` submits the training as one job of `--job-processes` processes (`train_job`), which
share each step as torchrun's would. `--launcher local` runs the same jobs as local subprocesses through
submitit's local executor, which is how it is tested here (no cluster is reachable). Job logs go to
`<results>/jobs/<job id>/`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.evaluator.distributed import resolve_device
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.run.runner import RunSettings, TaskOutcome, run_tasks
from rsdg_bench.run.train_job import TrainJob, train_in_job

Launcher = Literal["slurm", "local"]


@dataclass(frozen=True)
class JobResources:
    """What each job asks the scheduler for (slurm_* fields are ignored by the local launcher)."""

    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    slurm_partition: str | None = None
    slurm_account: str | None = None

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "gpus_per_node": self.gpus_per_node,
                                  "cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb}
        if self.slurm_partition:
            params["slurm_partition"] = self.slurm_partition
        if self.slurm_account:
            params["slurm_account"] = self.slurm_account
        return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise RsdgError("--launcher needs the submitit package, which is not installed",
                        'pip install "rsdg-bench[cluster]" (or pip install submitit)') from None
    return submitit


def run_in_job(tasks: list[Task], model: ModelSpec, settings: RunSettings, device_name: str) -> list[TaskOutcome]:
    """What a job runs: the device is resolved here, on the compute node, not where the job was submitted
    (a login node without GPUs would otherwise send every job to the CPU)."""
    return run_tasks(tasks, model, replace(settings, device=resolve_device(device_name)))


def submit_tasks(tasks: list[Task], model: ModelSpec, settings: RunSettings, launcher: Launcher,
                 device_name: str, resources: JobResources = JobResources()) -> list[Any]:
    """Submit one job per task; returns the submitit jobs (`job.job_id`, `job.result()`).

    `device_name` (`auto`, `cpu`, `cuda`, …) is resolved by each job on its own node; `settings.device` is
    ignored.
    """
    executor = _executor(settings.results_root, launcher)
    executor.update_parameters(**resources.parameters())
    job_settings = replace(settings, progress=False)
    jobs = []
    for task in tasks:
        executor.update_parameters(name=f"rsdg-{task.id.replace('/', '-')}")
        jobs.append(executor.submit(run_in_job, [task], model, job_settings, device_name))
    return jobs


def submit_training(job: TrainJob, launcher: Launcher, resources: JobResources = JobResources(),
                    processes: int = 1) -> Any:
    """Submit one training job of `processes` processes on one node (one per GPU); returns the submitit job,
    whose `results()[0]` is the main process's `TrainReport`."""
    executor = _executor(job.results_root, launcher)
    executor.update_parameters(**resources.parameters(), tasks_per_node=processes,
                               name=f"rsdg-train-{job.task_id.replace('/', '-')}")
    return executor.submit(train_in_job, job)


def _executor(results_root: Path, launcher: Launcher) -> Any:
    """submitit's executor for `launcher`, its logs under `<results>/jobs/<job id>/`."""
    submitit = _submitit()
    try:
        return submitit.AutoExecutor(folder=results_root / "jobs" / "%j",
                                     cluster="local" if launcher == "local" else "slurm")
    except RuntimeError as exc:
        raise RsdgError(f"cannot submit to {launcher}: {exc}",
                        "run on a machine with sbatch (a Slurm login node), or use --launcher local") from exc


def collect(jobs: list[Any]) -> list[TaskOutcome]:
    """Wait for every job; a job that died outright becomes a failed outcome, not an exception."""
    outcomes = []
    for job in jobs:
        try:
            outcomes.extend(job.result())
        except Exception as exc:  # submitit re-raises the job's failure or the scheduler's
            outcomes.append(TaskOutcome(f"job {job.job_id}", error=f"{type(exc).__name__}: {exc}"))
    return outcomes
