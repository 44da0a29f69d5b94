"""`train` and `run`: a model trained under a task's protocol, and evaluated into result records (here, under
torchrun, or as cluster jobs)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import check_writable
from rsdg_bench.cli.options import (
    chosen_model,
    data_root,
    model_spec,
    non_negative_int,
    percent,
    positive_int,
    results_root,
    seed_list,
)
from rsdg_bench.cli.results_commands import print_records


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, model: argparse.ArgumentParser,
             evaluation: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common, model], help="train a source-only model under a task's protocol",
                       description="Train on the task's source split, select on its selection split (targets are never "
                                   "read), and save the checkpoint as <results>/checkpoints/<adapter>/<checkpoint_key>.pt. "
                                   "Under torchrun (`torchrun --nproc_per_node N -m rsdg_bench.cli train ...`) N processes "
                                   "share each step of the protocol's global batch (NCCL on GPUs, gloo on the CPU).")
    p.add_argument("--task", required=True, help="task id; its training: block is the protocol")
    p.add_argument("--iterations", type=int, help="override the protocol's iterations (smoke runs, the demo)")
    p.add_argument("--batch-size", type=int, help="override the protocol's batch size")
    p.add_argument("--val-interval", type=int, help="override how often the selection split is scored")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--seed", type=int,
                   help="train again under another seed (initialization and draws): the same protocol, so not "
                        "off-protocol; the default checkpoint is <checkpoint_key>.seed<N>.pt, and the board shows the "
                        "spread over a model's seeds")
    p.add_argument("--seeds", type=seed_list, metavar="N|S,S,…",
                   help="train once per seed, one after the other (or one job each with --launcher): N for the seeds "
                        "0 … N−1, or a comma list (0,1,5); each checkpoint is <checkpoint_key>.seed<S>.pt, and "
                        "`run --seeds` evaluates them, so the board shows the mean ± std over seeds and their count")
    p.add_argument("--out", help="checkpoint path (default under the results folder); a name ending in .safetensors "
                                 "saves safetensors, the training record in its metadata")
    cluster = _cluster_options(p, "submit the training as a Slurm job (or a local subprocess job) instead of "
                                  "training here")
    cluster.add_argument("--job-processes", type=positive_int,
                         help="processes in the job, one per GPU, sharing each step as under torchrun (default: "
                              "--job-gpus, at least 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("profile", parents=[common, model],
                       help="measure what a model costs on tasks: parameters, GFLOPs, latency, throughput, memory",
                       description="Build the model for each task (random weights: compute does not depend on them), "
                                   "count its FLOPs on one image of the task's model-facing size, time it, and save the "
                                   "profile under <results>/profiles/; `leaderboard build` shows it beside the scores of "
                                   "the same adapter and options, and plots target score against GFLOPs.")
    p.add_argument("--task", action="append", required=True, help="task id (repeatable)")
    p.add_argument("--batch", type=positive_int, default=4, help="images per pass for the throughput (default 4)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes, after one warm-up (default 5)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("run", parents=[common, model, evaluation], help="evaluate a model on tasks and write result records",
                       description="Evaluate on every target split of each task (and the source selection split where the "
                                   "task asks for it); one JSON record per split. Completed records are skipped; a failing "
                                   "task is reported and the rest still runs (exit status 1 if any failed).")
    p.add_argument("--suite", help="suite id, or `all` (every benchmark task; the demo only by name)")
    p.add_argument("--only-ready", action="store_true",
                   help="evaluate the selected tasks whose data is prepared and whose weights are found, after "
                        "listing the others (without it, a selection with any such task stops before evaluating)")
    p.add_argument("--task", action="append", help="task id (repeatable), instead of --suite")
    p.add_argument("--train-missing", action="store_true",
                   help="first train, here and under each task's protocol (a preset's --protocol included), the "
                        "checkpoints a trainable model lacks, as `train` would; then evaluate them all (a backbone "
                        "preset in one command: run --model dinov2-vits14 --protocol linear_probe --train-missing)")
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N samples per split (smoke run, marked as such)")
    p.add_argument("--force", action="store_true", help="recompute records that already exist")
    p.add_argument("--seeds", type=seed_list, metavar="N|S,S,…",
                   help="evaluate the checkpoints `train --seeds` made (<checkpoint_key>.seed<S>.pt for each seed: N "
                        "for 0 … N−1, or a comma list); the board shows one row per model, the mean ± std over seeds")
    p.add_argument("--save-predictions", type=non_negative_int, default=0, metavar="K",
                   help="keep image / ground truth / prediction PNGs of the first K samples of each split (shown on "
                        "the leaderboard's task pages)")
    _cluster_options(p, "submit each task as a Slurm job (or a local subprocess job) instead of running here")
    p.set_defaults(func=cmd_run)


def _cluster_options(p: argparse.ArgumentParser, launcher_help: str) -> argparse._ArgumentGroup:
    """The submitit flags `run` and `train` share, declared once."""
    cluster = p.add_argument_group("cluster jobs (through submitit)")
    cluster.add_argument("--launcher", choices=["none", "slurm", "local"], default="none", help=launcher_help)
    cluster.add_argument("--wait", action="store_true", help="wait for the jobs and print their outcomes")
    cluster.add_argument("--slurm-partition")
    cluster.add_argument("--slurm-account")
    cluster.add_argument("--job-minutes", type=positive_int, default=240, help="time limit per job (default 240)")
    cluster.add_argument("--job-gpus", type=non_negative_int, default=1, help="GPUs per job (default 1)")
    cluster.add_argument("--job-cpus", type=positive_int, default=8, help="CPUs per job (default 8)")
    cluster.add_argument("--job-mem-gb", type=positive_int, default=32, help="memory per job in GB (default 32)")
    return cluster


def _job_resources(args: argparse.Namespace):
    from rsdg_bench.run.launchers import JobResources

    return JobResources(timeout_min=args.job_minutes, gpus_per_node=args.job_gpus, cpus_per_task=args.job_cpus,
                        mem_gb=args.job_mem_gb, slurm_partition=args.slurm_partition,
                        slurm_account=args.slurm_account)


def cmd_train(args: argparse.Namespace) -> int:
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.run.train_job import TrainJob, train_here
    from rsdg_bench.train.training import TrainOverrides

    _refuse_seeds_under_torchrun(args)
    if args.seeds and (args.seed is not None or args.out):
        raise RsdgError("--seeds trains several checkpoints: it takes neither --seed nor --out",
                        "drop --seed / --out (each seed's checkpoint is <checkpoint_key>.seed<S>.pt)")
    job = TrainJob(task_id=args.task, model=ModelSpec(*chosen_model(args)),
                   data_root=data_root(args), results_root=results_root(args), out=Path(args.out) if args.out else None,
                   overrides=TrainOverrides(args.iterations, args.batch_size, args.val_interval, args.lr, args.seed),
                   device=args.device, workers=args.workers, progress=not args.quiet and args.launcher == "none")
    status = 0
    for seed in args.seeds or [args.seed]:
        seeded = replace(job, overrides=replace(job.overrides, seed=seed))
        if args.seeds:
            print(f"seed {seed} ({args.seeds.index(seed) + 1} of {len(args.seeds)})")
        if args.launcher != "none":
            status = max(status, _submit_training(args, seeded))
            continue
        report = train_here(seeded)  # under torchrun: this process's share of each step; the report on rank 0
        if report is not None:
            _print_training(report)
    return status


def _submit_training(args: argparse.Namespace, job) -> int:
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.run.launchers import submit_training

    TaskCatalog().task(job.task_id)  # an unknown task fails here, not in the job
    job = replace(job, data_root=job.data_root.resolve(), results_root=job.results_root.resolve(),  # the job's
                  out=job.out.resolve() if job.out else None)  # working folder may be another
    processes = args.job_processes or max(args.job_gpus, 1)
    submitted = submit_training(job, args.launcher, _job_resources(args), processes)
    print(f"{job.task_id:22s} job {submitted.job_id} ({processes} process{'es' if processes > 1 else ''})")
    print(f"job logs -> {job.results_root / 'jobs'}")
    if not args.wait:
        print("the checkpoint appears when the job finishes; its log says where")
        return 0
    try:
        report = submitted.results()[0]  # the main process's (the others return None)
    except Exception as exc:  # submitit re-raises the job's failure or the scheduler's
        error = f"{type(exc).__name__}: {exc}".replace("\n", "\n    ")
        print(f"{job.task_id:22s} FAILED\n    {error}")
        return 1
    _print_training(report)
    return 0


def _print_training(report) -> None:
    """Where the checkpoint and its history went, what selected it, and which splits the training read."""
    from rsdg_bench.train.training_history import history_paths

    selection = "" if report.best_selection_value is None else \
        (f" (selected at iteration {report.best_iteration}, selection-split {report.selection_metric} "
         f"{percent(report.best_selection_value)})")
    if report.resumed_from:
        print(f"resumed an interrupted run at iteration {report.resumed_from}")
    print(f"checkpoint -> {report.checkpoint}{selection}")
    print(f"history    -> {history_paths(report.checkpoint)['csv']} (and .json, .svg: loss and selection per iteration)")
    print(f"read only: {', '.join(sorted(set(report.opened_splits)))}")


def cmd_profile(args: argparse.Namespace) -> int:
    from rsdg_bench.evaluator.compute_profile import input_size, measure, save
    from rsdg_bench.evaluator.distributed import resolve_device
    from rsdg_bench.models.model_spec import ModelSpec, build_for_task
    from rsdg_bench.protocol.task_data import TaskData
    from rsdg_bench.protocol.task_schema import TaskCatalog

    catalog = TaskCatalog()
    device = resolve_device(args.device)
    model = ModelSpec(*chosen_model(args))
    print(f"{'task':28s} {'params (M)':>10s} {'GFLOPs':>9s} {'latency ms':>10s} {'img/s':>8s} {'peak MiB':>9s}  device")
    for task_id in args.task:
        task = catalog.task(task_id)
        access = TaskData(data_root(args), task, phase="evaluate")
        adapter = build_for_task(model, task, access)
        adapter.to(device)
        rows = access.prepared(task.targets[0].dataset).rows(task.targets[0].domain, task.targets[0].split)
        first = (int(rows.iloc[0]["height"]), int(rows.iloc[0]["width"])) if len(rows) else None
        profile = measure(adapter, task, device, adapter.input_contract().num_bands, batch=args.batch,
                          repeats=args.repeats, size=input_size(task, first))
        path = save(results_root(args), profile)
        peak = "–" if profile.peak_memory_mib is None else f"{profile.peak_memory_mib:.0f}"
        print(f"{task.id:28s} {profile.parameters / 1e6:10.2f} {profile.gflops:9.2f} {profile.latency_ms:10.1f} "
              f"{profile.throughput:8.1f} {peak:>9s}  {profile.device} ({profile.input_size[0]}², {path})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rsdg_bench.models.registry import resolve_adapter
    from rsdg_bench.protocol.task_schema import TaskCatalog

    catalog = TaskCatalog()
    if args.task:
        tasks = [catalog.task(t) for t in args.task]
    elif args.suite:
        tasks = catalog.suite_tasks(args.suite)
    else:
        raise RsdgError("run needs --suite or --task", "e.g. rsdg-bench run --suite demo --model smp")
    model = model_spec(args)
    resolve_adapter(model.adapter)  # an unknown adapter fails once, here, not once per task
    _refuse_seeds_under_torchrun(args)
    if args.seeds and args.train_missing:
        raise RsdgError("--train-missing trains one checkpoint per task, under the protocol's seed",
                        "train the seeds first (`rsdg-bench train --seeds N`), then `run --seeds N`")
    if args.seeds:
        if args.checkpoint or args.random_init:
            raise RsdgError("--seeds evaluates each seed's checkpoint from the checkpoint folder",
                            "drop --checkpoint / --random-init (use --checkpoints DIR for another folder)")
        status = 0
        for seed in args.seeds:
            print(f"seed {seed} ({args.seeds.index(seed) + 1} of {len(args.seeds)})")
            status = max(status, _run_model(args, tasks, replace(model, seed=seed)))
        return status
    if args.train_missing:
        _train_missing(args, tasks, model)
    return _run_model(args, tasks, model)


def _train_missing(args: argparse.Namespace, tasks: list, model) -> None:
    """`run --train-missing`: each task whose checkpoint is not there trained first, in this process, under its
    protocol (no scaled-down flags: `train` takes those), so that the evaluation that follows finds it."""
    from rsdg_bench.models.model_spec import MissingWeights, find_checkpoint, seed_checkpoint_name
    from rsdg_bench.run.train_job import TrainJob, train_here

    if args.launcher != "none" or int(os.environ.get("WORLD_SIZE", "1")) > 1 or args.checkpoint or args.random_init:
        raise RsdgError("--train-missing trains in this process, into the checkpoint folder",
                        "drop --launcher / torchrun / --checkpoint / --random-init, or train first with `rsdg-bench train`")
    adapter = model.instantiate()
    for task in tasks:
        if isinstance(find_checkpoint(model, task, results_root(args), adapter), MissingWeights) and adapter.trainable:
            print(f"{task.id}: no checkpoint yet; training it under the task's protocol first")
            out = (model.checkpoint_dir / seed_checkpoint_name(adapter.checkpoint_stem(task), None)
                   if model.checkpoint_dir else None)  # where this run will look for it
            train_here(TrainJob(task_id=task.id, model=model, data_root=data_root(args), results_root=results_root(args),
                                out=out, device=args.device, workers=args.workers, progress=not args.quiet))


def _refuse_seeds_under_torchrun(args: argparse.Namespace) -> None:
    """`--seeds` runs one seed after another, each joining and leaving the process group: under torchrun, where
    a process group is joined once per process, launch one torchrun per seed (`--seed N`) instead."""
    if args.seeds and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RsdgError("--seeds runs its seeds one after another in this process; under torchrun each process joins "
                        "its process group once", "launch one torchrun per seed with --seed N (or use --launcher, "
                        "which submits one job per seed)")


def _run_model(args: argparse.Namespace, tasks: list, model) -> int:
    """`run` of one model over the selected tasks: here, under torchrun, or as jobs."""
    from rsdg_bench.evaluator.distributed import OTHER_RANK_FAILED, join_from_environment, leave_process_group
    from rsdg_bench.run.runner import run_tasks

    tasks = _ready_tasks(args, tasks, model)
    if args.launcher != "none":
        return _submit(args, tasks, model)
    group, device = join_from_environment(args.device)
    settings = _run_settings(args, device=device, group=group)
    check_writable(settings.results_root, "results folder", "--results (or RSDG_RESULTS)")  # before any evaluation
    try:
        outcomes = run_tasks(tasks, model, settings)
    finally:
        leave_process_group()
    failed = [o for o in outcomes if o.error]
    if not group.is_main:  # rank 0 prints the run; a rank prints the failures that were its own
        for outcome in failed:
            if not str(outcome.error).startswith(OTHER_RANK_FAILED):
                print(f"rank {group.rank}: {outcome.task_id} FAILED\n    " + str(outcome.error).replace("\n", "\n    "),
                      file=sys.stderr)
        return 1 if failed else 0
    done = [Path(p) for o in outcomes for p in (*o.written, *o.skipped)]
    if done:
        print_records(done, settings.results_root)
        print()
    _print_outcomes(outcomes)
    if args.limit is not None:
        print(f"smoke run (--limit {args.limit}): records are marked as such and never reach a leaderboard")
    print(f"results -> {settings.results_root}")
    return 1 if failed else 0


def _ready_tasks(args: argparse.Namespace, tasks: list, model) -> list:
    """Pre-flight the whole selection before evaluating anything: every dataset to prepare and all missing
    weights in one error; with --only-ready, the tasks that can run, after that list."""
    from rsdg_bench.run.preflight import check_selection

    readiness = check_selection(tasks, model, data_root(args), results_root(args))
    if not readiness.blocked:
        return tasks
    report = readiness.report(model, len(tasks))
    if not (args.only_ready and readiness.ready):
        ready = (f"add --only-ready to evaluate the {len(readiness.ready)} that can run now, or "
                 if readiness.ready else "")
        raise RsdgError(report, f"{ready}prepare and fetch what is listed, then run again")
    print(f"{report}\nevaluating the {len(readiness.ready)} tasks that can run (--only-ready)\n")
    return readiness.ready


def _print_outcomes(outcomes: list) -> None:
    """One line per task (written / skipped, or FAILED with its indented error)."""
    for outcome in outcomes:
        status = "FAILED" if outcome.error else f"{len(outcome.written)} written, {len(outcome.skipped)} already done"
        print(f"{outcome.task_id:22s} {status}")
        if outcome.error:
            print("    " + outcome.error.replace("\n", "\n    "))


def _run_settings(args: argparse.Namespace, **overrides):
    """RunSettings from the `run` flags; `overrides` sets what differs (device, process group, …)."""
    from rsdg_bench.run.runner import RunSettings

    return RunSettings(data_root(args), results_root(args), num_workers=args.workers, limit=args.limit,
                       force=args.force, progress=not args.quiet, window_batch=args.window_batch,
                       batch_size=args.batch_size, precision=args.precision, save_predictions=args.save_predictions,
                       compile=args.compile, read_threads=args.read_threads,
                       **overrides)


def _submit(args: argparse.Namespace, tasks: list, model) -> int:
    from rsdg_bench.run.launchers import collect, submit_tasks

    settings = _run_settings(args)
    settings = replace(settings, data_root=settings.data_root.resolve(), results_root=settings.results_root.resolve())
    jobs = submit_tasks(tasks, model, settings, args.launcher, args.device, _job_resources(args))
    for task, job in zip(tasks, jobs, strict=True):
        print(f"{task.id:22s} job {job.job_id}")
    print(f"job logs -> {settings.results_root / 'jobs'}")
    if not args.wait:
        print("records will appear in the results folder as jobs finish; `rsdg-bench results show` lists them")
        return 0
    outcomes = collect(jobs)
    _print_outcomes(outcomes)
    return 1 if any(o.error for o in outcomes) else 0
