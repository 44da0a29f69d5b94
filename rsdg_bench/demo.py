"""`rsdg-bench demo`: the whole pipeline on ToyEarth, in one folder, in a few minutes on a laptop CPU.

fake raw download → prepare → train a small U-Net on the urban domain (selected on urban/val) →
evaluate on the three unseen domains of the demo suite → leaderboard. The demo's folder is its own:
results from an earlier demo run there are cleared first, so the page shows this run only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from rsdg_bench.leaderboards.aggregate import build_board, with_suites
from rsdg_bench.leaderboards.render import write_site
from rsdg_bench.models.model_spec import ModelSpec, default_checkpoint_dir
from rsdg_bench.prep import get_preparer
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore
from rsdg_bench.run.runner import RunSettings, run_tasks
from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

DEMO_SUITE = "demo"
DEMO_ITERATIONS = 300
DEMO_THREADS = 2  # fixed, so a demo on a bigger machine sums in the same order as on the 2-core build machine
DEMO_MODEL = ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}, display_name="U-Net R18 (source-only)")


def next_commands(workdir: Path) -> list[str]:
    """Commands that work on the demo's data and results as they are left (tested), for the user to go on."""
    folders = f"--data-root {workdir / 'data'} --results {workdir / 'results'}"
    model = " ".join(f"--model-arg {k}={v}" for k, v in DEMO_MODEL.options.items())
    return [f"rsdg-bench run --suite {DEMO_SUITE} --model {DEMO_MODEL.adapter} {model} "
            f"--name '{DEMO_MODEL.display_name}' {folders}",
            f"rsdg-bench results show {folders}",
            f"rsdg-bench leaderboard build {folders}",
            f"rsdg-bench prepare toyearth --verify --data-root {workdir / 'data'}"]


def run_demo(workdir: Path, iterations: int | None = None, progress: bool = True,
             threads: int = DEMO_THREADS) -> Path:
    """Run the demo in `workdir`; return the leaderboard page. Threads and algorithms are fixed (`threads`
    intra-op threads, two unless told, and deterministic kernels), so two runs on one machine give identical
    numbers; the README's table is from two threads. Tests that run beside other processes pass one."""
    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run_demo(Path(workdir), iterations, progress)
    finally:  # the caller's settings back (a notebook goes on after the demo)
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic)


def _run_demo(workdir: Path, iterations: int | None, progress: bool) -> Path:
    data_root, results_root = workdir / "data", workdir / "results"
    if results_root.exists():
        shutil.rmtree(results_root)
    iterations = iterations or DEMO_ITERATIONS

    say = print if progress else (lambda *a, **k: None)
    say("[1/5] writing a raw ToyEarth download")
    preparer = get_preparer("toyearth", workers=len(os.sched_getaffinity(0)))
    raw = preparer.make_fake(workdir / "raw")
    say("[2/5] preparing it")
    preparer.prepare(raw, data_root, progress=progress)

    catalog = TaskCatalog()
    tasks = catalog.suite_tasks(DEMO_SUITE)
    first = tasks[0]
    say(f"[3/5] training {DEMO_MODEL.display_name} on {first.source.slug} for {iterations} iterations")
    adapter = build_trainable(DEMO_MODEL, first, data_root)
    checkpoint = default_checkpoint_dir(results_root, adapter.name) / f"{first.checkpoint_key}.pt"
    train_adapter(adapter, first, data_root, checkpoint,
                  overrides=TrainOverrides(iterations=iterations, val_interval=max(iterations // 3, 1)),
                  progress=progress)

    say(f"[4/5] evaluating on the {len(tasks)} tasks of the {DEMO_SUITE!r} suite")
    settings = RunSettings(data_root=data_root, results_root=results_root, progress=progress)
    outcomes = run_tasks(tasks, DEMO_MODEL, settings)
    for outcome in outcomes:
        if outcome.error:
            raise RuntimeError(f"demo task {outcome.task_id} failed: {outcome.error}")

    say("[5/5] building the leaderboard")
    board = with_suites(build_board(*ResultStore(results_root).load_valid()), TaskCatalog())
    for table in board.tasks:
        for model in table.scores:
            say(f"  {table.name:10s} source mIoU {100 * table.source_score(model):5.1f}  "
                f"unseen target mIoU {100 * table.target_mean(model):5.1f}  ({table.gap})")
    return write_site(board, results_root / "site", results_root=results_root)
