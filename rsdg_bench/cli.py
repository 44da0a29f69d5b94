"""The `rsdg-bench` command line.

Every subcommand is a thin layer over a library function; errors the user can fix print as
`error: <what>` plus `fix: <how>` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__
from .errors import RsdgError
from .io import check_writable
from .paths import default_data_root, default_results_root

EPILOG = """\
a first tour:
  rsdg-bench demo                                   # everything below, on synthetic data, in minutes
  rsdg-bench fake toyearth --out raw/               # write a small raw download to try things on
  rsdg-bench prepare toyearth --raw raw/ToyEarth    # raw download -> canonical prepared data
  rsdg-bench tasks list --suite demo                # the protocols (task YAMLs)
  rsdg-bench train --task demo/u2a --model smp      # train a source-only model under the task's protocol
  rsdg-bench run --suite demo --model smp           # evaluate it on the unseen target domains
  rsdg-bench leaderboard build --reported           # static site (+ the papers' numbers) from the records
  rsdg-bench submission pack --model NAME --suite demo --out model.zip   # hand results to a leaderboard
  rsdg-bench predict --task demo/u2a --out preds/   # prediction maps, for hidden labels (`score` scores them)

data root: --data-root, else $RSDG_DATA, else ~/.local/share/rsdg-bench/data
results:   --results,   else $RSDG_RESULTS, else ./rsdg-results
"""


def _model_args(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RsdgError(f"--model-arg {pair!r} is not key=value", "write e.g. --model-arg encoder=resnet18")
        options[key.strip()] = value.strip()
    return options


def _positive_int(text: str) -> int:
    """argparse type: an integer above 0 (a limit or a count)."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: an integer of 0 or more (a count where 0 means none)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def _data_root(args: argparse.Namespace) -> Path:
    return Path(args.data_root).expanduser() if args.data_root else default_data_root()


def _results_root(args: argparse.Namespace) -> Path:
    return Path(args.results).expanduser() if args.results else default_results_root()


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


# --------------------------------------------------------------------------- prepare / fake

def cmd_prepare(args: argparse.Namespace) -> int:
    from .prep import available_preparers, get_preparer

    if args.list or not args.name:
        for name, cls in available_preparers().items():
            print(f"{name:20s} {cls.summary}")
        return 0
    if args.verify:
        return _verify_prepared(args)
    if args.from_hf:
        from .hub_dataset import import_prepared

        out = import_prepared(Path(args.from_hf), _data_root(args), args.name)
        print(f"restored {args.name} from {args.from_hf} -> {out}")
        _report_prepared(_data_root(args), args.name)
        return 0
    preparer = get_preparer(args.name, verify_checksums=not args.no_checksum, max_pixels=args.max_pixels,
                            max_raw_bytes=None if args.max_raw_gib is None else int(args.max_raw_gib * 2 ** 30),
                            private_labels=Path(args.private_labels) if args.private_labels else None,
                            workers=args.workers)
    if args.raw is None:
        raise RsdgError("prepare needs --raw", "pass the downloaded archive or its folder: --raw PATH")
    out = preparer.prepare(Path(args.raw), _data_root(args), progress=not args.quiet)
    print(f"prepared {args.name} -> {out}")
    _report_prepared(_data_root(args), args.name)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .hub_dataset import export_prepared

    out = export_prepared(_data_root(args), args.name, Path(args.out))
    print(f"{args.name} -> {out} (a Hub dataset repo: data/*.parquet, rsdg/, README.md); "
          f"restore with `rsdg-bench prepare {args.name} --from-hf {out}`")
    return 0


def _report_prepared(data_root: Path, name: str) -> None:
    """Split sizes against the published ones, the class histogram, and the preparer's notes."""
    import numpy as np

    from .prepared import PreparedDataset

    dataset = PreparedDataset.open(data_root, name)
    card = dataset.card
    for domain, splits in card.split_counts.items():
        for split, count in splits.items():
            published = card.published_counts.get(domain, {}).get(split)
            by_count = {n: source for source, n in card.published_alternatives.get(domain, {}).get(split, {}).items()}
            check = ("" if published is None else "  (= published)" if published == count else
                     f"  (= published by {by_count[count]}; {published} elsewhere)" if count in by_count else
                     f"  (published: {published})")
            print(f"  {domain}/{split}: {count} samples{check}")
    if mismatches := card.count_mismatches():
        print(f"warning: {len(mismatches)} split(s) differ from the published sizes; results on this data are not "
              "comparable with the papers' (expected for fakes and partial downloads)")
    manifest = dataset.manifest
    schemas = {card.classes_of(d).id: card.classes_of(d) for d in card.domains}
    for schema_id, schema in schemas.items():
        rows = manifest[manifest["domain"].map(lambda d: card.classes_of(d).id) == schema_id]
        if rows.empty:
            continue
        pixels = np.sum(np.stack(rows["class_counts"].to_numpy()), axis=0)
        total = max(int(pixels.sum()), 1)
        label = "" if len(schemas) == 1 else f" ({schema_id})"
        print(f"  class histogram{label} (labelled pixels): " + ", ".join(
            f"{c.name} {100 * int(n) / total:.1f}%" for c, n in zip(schema.classes, pixels, strict=True)))
    for note in card.notes:
        print(f"  note: {note}")
    for pair, count in card.footprint_overlaps.items():
        print(f"  warning: spatial leakage: {count} sample pair(s) of {pair} overlap on the ground")
    if not card.footprint_overlaps and "geometry" in dataset.manifest.columns:
        print("  leakage audit: no footprints of different splits overlap")


def _verify_prepared(args: argparse.Namespace) -> int:
    from .prepared import PreparedDataset

    dataset = PreparedDataset.open(_data_root(args), args.name)
    bad = dataset.verify_files()
    if bad:
        print(f"{len(bad)} of {2 * len(dataset.manifest)} files of {args.name} are missing or changed:")
        for rel in bad[:20]:
            print(f"  {dataset.root / rel}")
        print(f"fix: re-run `rsdg-bench prepare {args.name} --raw <download>`")
        return 1
    print(f"ok  {args.name}: {len(dataset.manifest)} samples, every image and label matches its sha256")
    return 0


def cmd_fake(args: argparse.Namespace) -> int:
    from .prep import get_preparer

    if args.list or not args.name:
        return cmd_prepare(argparse.Namespace(list=True, name=None))
    if not args.out:
        raise RsdgError("fake needs --out DIR", f"e.g. rsdg-bench fake {args.name} --out raw/")
    preparer = get_preparer(args.name)
    written = preparer.make_fake(Path(args.out), seed=args.seed, archive=args.archive)
    print(f"wrote a fake raw {args.name} download -> {written}")
    # A fake archive cannot match the real one's published checksum.
    skip = " --no-checksum" if args.archive and any(preparer.archives.values()) else ""
    print(f"next: rsdg-bench prepare {args.name} --raw {written}{skip}")
    return 0


# --------------------------------------------------------------------------- tasks

def _require_known_places(tasks, where: str) -> None:
    """Refuse tasks whose splits name a dataset or domain that does not exist (a typo passes the schema)."""
    from .task_places import unknown_places

    problems = [line for task in tasks for line in unknown_places(task)]
    if problems:
        raise RsdgError(f"{len(problems)} split(s) {where} name no existing place:\n  " + "\n  ".join(problems),
                        "fix the dataset/domain names (`rsdg-bench prepare --list` shows the datasets)")


def cmd_tasks(args: argparse.Namespace) -> int:
    from .task_schema import TaskCatalog, load_task_file, task_json_schema

    if args.action == "schema":
        print(json.dumps(task_json_schema(), indent=2))
        return 0
    if args.action == "validate" and args.ids:
        loaded = {}
        for path in args.ids:
            if Path(path).name.startswith("_"):
                print(f"skip {path}  (an include fragment: checked through the tasks that include it)")
            else:
                loaded[path] = load_task_file(Path(path))
        _require_known_places(loaded.values(), f"in {', '.join(args.ids)}")
        for path, task in loaded.items():
            print(f"ok  {path}  ({task.id}, hash {task.hash[:12]})")
        return 0
    catalog = TaskCatalog()
    if args.action == "validate":
        _require_known_places(catalog.tasks.values(), "in the task catalog")
        print(f"ok  {len(catalog.tasks)} tasks and {len(catalog.suites)} suites are valid")
        return 0
    if args.action == "show":
        if not args.ids:
            raise RsdgError("tasks show needs a task id", "e.g. rsdg-bench tasks show demo/u2a")
        for task_id in args.ids:
            task = catalog.task(task_id)
            print(f"# {catalog.task_files[task.id]}\n# hash {task.hash}")
            print(json.dumps(task.model_dump(mode="json"), indent=2))
        return 0
    tasks = catalog.suite_tasks(args.suite) if args.suite else [catalog.tasks[t] for t in sorted(catalog.tasks)]
    for task in tasks:
        targets = ", ".join(t.slug for t in task.targets)
        print(f"{task.id:22s} {task.name:12s} {task.gap:20s} {task.source.slug} -> {targets}")
    if not args.suite and catalog.suites:
        print("\nsuites: " + ", ".join(f"{s.id} ({len(s.tasks)} tasks)" for s in catalog.suites.values()))
    return 0


# --------------------------------------------------------------------------- train / run

def _device(args: argparse.Namespace):
    from .distributed import resolve_device

    return resolve_device(args.device)


def cmd_train(args: argparse.Namespace) -> int:
    from .runner import ModelSpec, default_checkpoint_dir
    from .task_schema import TaskCatalog
    from .training import TrainOverrides, build_trainable, train_adapter
    from .training_history import history_paths

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RsdgError("train runs in one process; it does not shard under torchrun",
                        "run `rsdg-bench train` without torchrun (evaluation with `run` does shard)")
    task = TaskCatalog().task(args.task)
    model = ModelSpec(args.adapter or args.model, _model_args(args.model_arg))
    adapter = build_trainable(model, task, _data_root(args))
    out = Path(args.out) if args.out else default_checkpoint_dir(_results_root(args), adapter.name) / f"{task.checkpoint_key}.pt"
    what, flag = ("checkpoint folder", "--out") if args.out else ("results folder", "--results (or RSDG_RESULTS)")
    check_writable(out.parent, what, flag)
    report = train_adapter(
        adapter, task, _data_root(args), out,
        overrides=TrainOverrides(args.iterations, args.batch_size, args.val_interval, args.lr),
        device=_device(args), num_workers=args.workers, progress=not args.quiet)
    selection = "" if report.best_selection_value is None else \
        (f" (selected at iteration {report.best_iteration}, selection-split {report.selection_metric} "
         f"{_fmt(report.best_selection_value)})")
    if report.resumed_from:
        print(f"resumed an interrupted run at iteration {report.resumed_from}")
    print(f"checkpoint -> {report.checkpoint}{selection}")
    print(f"history    -> {history_paths(report.checkpoint)['csv']} (and .json, .svg: loss and selection per iteration)")
    print(f"read only: {', '.join(sorted(set(report.opened_splits)))}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .distributed import join_from_environment, leave_process_group
    from .registry import resolve_adapter
    from .runner import ModelSpec, run_tasks
    from .task_schema import TaskCatalog

    catalog = TaskCatalog()
    if args.task:
        tasks = [catalog.task(t) for t in args.task]
    elif args.suite:
        tasks = catalog.suite_tasks(args.suite)
    else:
        raise RsdgError("run needs --suite or --task", "e.g. rsdg-bench run --suite demo --model smp")
    model = ModelSpec(args.adapter or args.model, _model_args(args.model_arg),
                      checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                      checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                      backbone_checkpoint=Path(args.backbone_checkpoint) if args.backbone_checkpoint else None,
                      random_init=args.random_init, display_name=args.name)
    resolve_adapter(model.adapter)  # an unknown adapter fails once, here, not once per task
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
    if not group.is_main:
        return 1 if failed else 0
    done = [Path(p) for o in outcomes for p in (*o.written, *o.skipped)]
    if done:
        _print_records(done, settings.results_root)
        print()
    _print_outcomes(outcomes)
    if args.limit is not None:
        print(f"smoke run (--limit {args.limit}): records are marked as such and never reach a leaderboard")
    print(f"results -> {settings.results_root}")
    return 1 if failed else 0


def _ready_tasks(args: argparse.Namespace, tasks: list, model) -> list:
    """Pre-flight the whole selection before evaluating anything: every dataset to prepare and all missing
    weights in one error; with --only-ready, the tasks that can run, after that list."""
    from .preflight import check_selection

    readiness = check_selection(tasks, model, _data_root(args), _results_root(args))
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
    from .runner import RunSettings

    return RunSettings(_data_root(args), _results_root(args), num_workers=args.workers, limit=args.limit,
                       force=args.force, progress=not args.quiet, window_batch=args.window_batch,
                       batch_size=args.batch_size, precision=args.precision, save_predictions=args.save_predictions,
                       **overrides)


def _submit(args: argparse.Namespace, tasks: list, model) -> int:
    from .launchers import JobResources, collect, submit_tasks

    settings = _run_settings(args)
    settings = replace(settings, data_root=settings.data_root.resolve(), results_root=settings.results_root.resolve())
    resources = JobResources(timeout_min=args.job_minutes, gpus_per_node=args.job_gpus, cpus_per_task=args.job_cpus,
                             mem_gb=args.job_mem_gb, slurm_partition=args.slurm_partition,
                             slurm_account=args.slurm_account)
    jobs = submit_tasks(tasks, model, settings, args.launcher, args.device, resources)
    for task, job in zip(tasks, jobs, strict=True):
        print(f"{task.id:22s} job {job.job_id}")
    print(f"job logs -> {settings.results_root / 'jobs'}")
    if not args.wait:
        print("records will appear in the results folder as jobs finish; `rsdg-bench results show` lists them")
        return 0
    outcomes = collect(jobs)
    _print_outcomes(outcomes)
    return 1 if any(o.error for o in outcomes) else 0


# --------------------------------------------------------------------------- results / leaderboard

def cmd_results(args: argparse.Namespace) -> int:
    from .results import ResultStore, recompute

    store = ResultStore(_results_root(args))
    if args.action == "export":
        return _export_results(args, store.root)
    paths = [record for p in args.paths for record in _record_paths(Path(p))] or store.paths()
    if args.action == "recompute":
        if not args.paths:
            raise RsdgError("results recompute needs record paths", "pass the JSON files to recompute")
        for path in paths:
            recompute(path)
            print(f"recomputed {path}")
        return 0
    if not paths:
        print(f"no result records under {store.root}")
        return 0
    refused = _print_records(paths, store.root)
    if refused:
        print(f"{refused} of {len(paths)} records refused (see above); the others are sound")
        return 1
    return 0


def _record_paths(path: Path) -> list[Path]:
    """The records a user-given path names: the file itself, or every record inside a folder (a results folder,
    its `records/`, or one task's folder). A path that does not exist is an error, not a refused record."""
    if path.is_dir():
        found = sorted(path.rglob("*.json"))
        if not found:
            raise RsdgError(f"{path} holds no result records (*.json)",
                            "give a record file or a results folder that `rsdg-bench run` wrote into")
        return found
    if not path.exists():
        raise RsdgError(f"no result record at {path}",
                        "give a record's path, or list a folder's records with `rsdg-bench results show --results DIR`")
    return [path]


def _export_results(args: argparse.Namespace, results_root: Path) -> int:
    from .hub_export import export_results, push_to_hub

    if args.format != "parquet":
        raise RsdgError(f"unknown export format {args.format!r}", "use --format parquet")
    if not args.out:
        raise RsdgError("results export needs --out DIR", "e.g. rsdg-bench results export --format parquet --out hub/")
    folder, rows, refused = export_results(results_root, Path(args.out), progress=not args.quiet)
    print(f"{rows} records -> {folder} (Parquet + README card; datasets.load_dataset({str(folder)!r}) reads it)"
          + (f"; {len(refused)} refused, listed in the card" if refused else ""))
    if args.push_to_hub:
        print(f"pushed -> {push_to_hub(folder, args.push_to_hub, private=args.private)}")
    return 0


def _print_records(paths: list[Path], results_root: Path) -> int:
    """A table of records (each checked against its confusion matrix on load), scores in percent; per-place
    accuracies (classification) follow the model name. For classification OA is the accuracy. A record that
    fails its checks is listed with the reason and the rest are shown; returns how many failed."""
    from .errors import ResultsError
    from .results import ResultStore

    store = ResultStore(results_root)
    print(f"{'task':22s} {'split':28s} {'role':6s} {'mIoU':>6s} {'OA':>6s} {'AA':>6s} {'mF1':>6s}  model")
    refused = 0
    for path in paths:
        try:
            record = store.load(path)
        except ResultsError as exc:
            refused += 1
            print(f"refused: {exc}")
            continue
        for slug, metrics in record.metrics.items():
            smoke = "  [smoke]" if record.smoke else ("  [not the published split]" if record.evaluated.partial_data else "")
            smoke += "  [oracle: chose with the labels]" if record.model.peeks_at_labels else ""
            smoke += "  [scored from prediction maps]" if record.model.get("scored_from") else ""
            print(f"{record.task.id:22s} {slug:28s} {record.evaluated.role:6s} "
                  f"{_fmt(metrics['miou']):>6s} {_fmt(metrics['oa']):>6s} {_fmt(metrics['aa']):>6s} "
                  f"{_fmt(metrics['mf1']):>6s}  {record.model.display_name}{smoke}{_place_scores(metrics)}")
    return refused


def _place_scores(metrics: dict) -> str:
    if metrics.get("group_acc") is None:
        return ""
    return (f"  (per-place accuracy: mean {_fmt(metrics['domain_acc'])}, worst {_fmt(metrics['worst_domain_acc'])}, "
            f"{len(metrics['group_acc'])} places)")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .api import build_leaderboard

    results = _results_root(args)
    if not results.is_dir() and not (args.reported or args.submissions):
        raise RsdgError(f"no results folder at {results}",
                        "point --results at the folder `rsdg-bench run` wrote into (add --reported to build the "
                        "papers' reported tables alone)")
    check_writable((Path(args.out) if args.out else _results_root(args) / "site").absolute().parent,
                   "folder the site goes in", "--out")
    site = build_leaderboard(_results_root(args), args.out, reported=args.reported, only_protocol=args.only_protocol,
                             submissions=Path(args.submissions) if args.submissions else None,
                             data_root=_data_root(args), baseline=args.baseline, rank_shared=args.rank_shared,
                             progress=not args.quiet)
    print(f"{site.tasks} tasks, {site.models} models, {site.left_out} records left out"
          + (f", {site.reported_rows} reported rows" if args.reported else ""))
    if args.baseline and not site.baseline_found:
        print(f"note: no row is named {args.baseline!r}, so no gains are shown; the row names are on the suite "
              "pages (a reported row's label includes its backbone, e.g. 'Rein (ViT-L)')", file=sys.stderr)
    print(f"leaderboard -> {site.page.resolve()}")
    return 0


# --------------------------------------------------------------------------- adapters

def cmd_adapter(args: argparse.Namespace) -> int:
    from .registry import available_adapters

    if args.action == "list":  # built-ins read from their source; a plug-in is imported, and says why it fails
        from .adapter_facts import adapter_facts

        print(f"{'adapter':16s} {'kinds':40s} {'trainable':9s} origin")
        for name, origin in sorted(available_adapters().items()):
            try:
                facts = adapter_facts(name)
                kinds, trainable = ", ".join(sorted(facts.kinds)), "yes" if facts.trainable else "no"
            except RsdgError as exc:
                kinds, trainable = f"(cannot import: {exc.problem})", "?"
            print(f"{name:16s} {kinds:40s} {trainable:9s} {origin}")
        return 0
    if not args.name:
        raise RsdgError(f"adapter {args.action} needs an adapter name", f"e.g. rsdg-bench adapter {args.action} smp")
    if args.action == "new":
        return _new_adapter(args)
    from .conformance import check_adapter
    from .registry import resolve_adapter
    from .task_schema import TaskCatalog

    bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
    device = _device(args)
    report = check_adapter(resolve_adapter(args.name), TaskCatalog().task(args.task) if args.task else None, bands,
                           _model_args(args.model_arg), Path(args.checkpoint) if args.checkpoint else None, device)
    print(f"checking {report.adapter.name} on {device}: task {report.task.id} ({report.task.kind}), "
          f"bands {', '.join(report.bands)}")
    for result in report.results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name:26s} {result.detail}")
    print(f"{len(report.results) - report.failed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def _new_adapter(args: argparse.Namespace) -> int:
    from .scaffold import new_adapter

    def numbers(text: str, option: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise RsdgError(f"{option} {text!r} is not a comma-separated list of numbers",
                            f"e.g. {option} 123.675,116.28,103.53") from exc

    bands = [b.strip() for b in (args.bands or "red,green,blue").split(",") if b.strip()]
    folder = new_adapter(args.name, Path(args.out), bands, numbers(args.mean, "--mean"), numbers(args.std, "--std"),
                         args.kind or ["segmentation"], args.size_divisor, bands_by_name=args.bands_by_name)
    print(f"adapter package -> {folder}")
    print(f"next:\n  pip install -e {folder}\n  rsdg-bench adapter check {args.name}\n"
          f"  (before installing: rsdg-bench adapter check {folder}/rsdg_{args.name}/adapter.py:"
          f"{''.join(p.capitalize() for p in args.name.split('_'))}Adapter)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import next_commands, run_demo

    workdir = Path(args.workdir)
    page = run_demo(workdir, iterations=args.iterations, progress=not args.quiet)
    print(f"\nleaderboard page: {page.resolve()}")
    print(f"prepared data:    {(workdir / 'data').resolve()}\nresults:          {(workdir / 'results').resolve()}")
    print("The demo keeps its own folders; pass them to go on (or set RSDG_DATA and RSDG_RESULTS):")
    for command in next_commands(workdir):
        print(f"  {command}")
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-root", help="prepared data folder (default: $RSDG_DATA or ~/.local/share/rsdg-bench/data)")
    common.add_argument("--results", help="results folder (default: $RSDG_RESULTS or ./rsdg-results)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default="smp", help="adapter name: a built-in (see `adapter list`) or a plug-in")
    model.add_argument("--adapter", help="adapter from a file instead: path/to/file.py:ClassName")
    model.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="adapter option, repeatable (smp: arch=unet encoder=resnet18 mean=... std=... encoder_weights=FILE)")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    model.add_argument("--workers", type=_non_negative_int, default=0,
                       help="DataLoader worker processes (default 0: two threads of this process read samples "
                            "ahead of the model, which on CPU is faster than handing images between processes)")

    parser = argparse.ArgumentParser(
        prog="rsdg-bench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Benchmark harness for remote-sensing domain generalization: prepare data, run source→target "
                    "protocols, publish per-class leaderboards.")
    parser.add_argument("--version", action="version", version=f"rsdg-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens (-v: each step, e.g. records skipped or written and why; -vv: debug)")
    parser.add_argument("-q", "--quiet-log", action="store_true", help="log errors only (warnings are shown by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", parents=[common], help="turn a raw download into prepared data",
                       description="Verify a raw download (archive or unpacked folder) and write the canonical prepared "
                                   "dataset into the data root, atomically; an interrupted prepare resumes.")
    p.add_argument("name", nargs="?", help="dataset name (see --list)")
    p.add_argument("--raw", help="the downloaded archive, or the folder holding the archives as downloaded or unpacked")
    p.add_argument("--no-checksum", action="store_true",
                   help="skip the published-checksum check of archives (for archives you re-packed yourself, "
                        "or the fakes of `rsdg-bench fake`)")
    p.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="the most pixels (height × width) one raw image may have; each dataset sets a limit "
                        "that its release keeps, so a corrupt file claiming a huge size is refused unread")
    p.add_argument("--max-raw-gib", type=_positive_float, metavar="G",
                   help="the most GiB the dataset's archives may unpack to (each dataset sets one; the disk's "
                        "free space is checked as well)")
    p.add_argument("--private-labels", metavar="DIR",
                   help="for an organizer: the labels the release keeps private (openearthmap_sar: "
                        "DIR/test/labels/<scene>.tif), so that split is prepared labelled and submitted prediction "
                        "maps can be scored on it (docs/submissions.md); never publish such a prepared copy")
    p.add_argument("--workers", type=_positive_int, default=len(os.sched_getaffinity(0)),
                   help="threads that encode, write and hash the samples while tiles are read (the prepared "
                        "files, manifest and journal are the same bytes for any count; default: the cores, "
                        f"{len(os.sched_getaffinity(0))} here)")
    p.add_argument("--list", action="store_true", help="list the datasets that can be prepared")
    p.add_argument("--verify", action="store_true", help="re-hash an already prepared dataset's files against its manifest")
    p.add_argument("--from-hf", metavar="DIR",
                   help="restore the prepared dataset from an `rsdg-bench export NAME --format hf` folder (a Hub "
                        "dataset repo, downloaded): same files, same manifest sha256")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("export", parents=[common], help="write a prepared dataset as a Hugging Face Hub dataset repo",
                       description="Write a prepared dataset whose licence allows redistribution (CC0, MIT, CC BY "
                                   "without NoDerivatives) as a Hub dataset repo: Parquet files per domain and split "
                                   "with the stored image and label bytes and their sha256, the card and the manifest; "
                                   "`prepare NAME --from-hf DIR` reads it back to the same manifest sha256.")
    p.add_argument("name", help="prepared dataset name")
    p.add_argument("--format", default="hf", choices=["hf"], help="hf: a Hugging Face Hub dataset repo layout")
    p.add_argument("--out", required=True, help="the folder to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("fake", help="write a small fake of a dataset's raw download",
                       description="Write a small copy of a dataset's raw layout (same archive, folder and file names, "
                                   "dtypes and label encodings), to try prepare and the pipeline without the download.")
    p.add_argument("name", nargs="?", help="dataset name, as for prepare (see --list)")
    p.add_argument("--list", action="store_true", help="list the datasets that have a fake (all that can be prepared)")
    p.add_argument("--out", help="folder to write into (required unless --list)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the fake's content (default 0; the same seed gives the same bytes)")
    p.add_argument("--archive", action="store_true", help="write the zip archive as downloaded, not the unpacked folder")
    p.set_defaults(func=cmd_fake)

    p = sub.add_parser("tasks", help="list, show, validate tasks; print the task JSON Schema",
                       description="Tasks are YAML protocols (source -> targets). `validate` with file paths checks "
                                   "your own YAMLs; without, it checks every installed task and suite.")
    p.add_argument("action", choices=["list", "show", "validate", "schema"])
    p.add_argument("ids", nargs="*", help="task ids (show) or YAML files (validate)")
    p.add_argument("--suite", help="list only this suite's tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("train", parents=[common, model], help="train a source-only model under a task's protocol",
                       description="Train on the task's source split, select on its selection split (targets are never "
                                   "read), and save the checkpoint as <results>/checkpoints/<adapter>/<checkpoint_key>.pt.")
    p.add_argument("--task", required=True, help="task id; its training: block is the protocol")
    p.add_argument("--iterations", type=int, help="override the protocol's iterations (smoke runs, the demo)")
    p.add_argument("--batch-size", type=int, help="override the protocol's batch size")
    p.add_argument("--val-interval", type=int, help="override how often the selection split is scored")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--out", help="checkpoint path (default under the results folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", parents=[common, model], help="evaluate a model on tasks and write result records",
                       description="Evaluate on every target split of each task (and the source selection split where the "
                                   "task asks for it); one JSON record per split. Completed records are skipped; a failing "
                                   "task is reported and the rest still runs (exit status 1 if any failed).")
    p.add_argument("--suite", help="suite id, or `all` (every benchmark task; the demo only by name)")
    p.add_argument("--only-ready", action="store_true",
                   help="evaluate the selected tasks whose data is prepared and whose weights are found, after "
                        "listing the others (without it, a selection with any such task stops before evaluating)")
    p.add_argument("--task", action="append", help="task id (repeatable), instead of --suite")
    p.add_argument("--checkpoint", help="one checkpoint file for every task")
    p.add_argument("--checkpoints", "--checkpoint-dir", dest="checkpoint_dir",
                   help="folder of checkpoints, one per source setting: <checkpoint_key>.pt as `train` writes them, or "
                        "the authors' released file names for adapters that know them (crossearth); default "
                        "<results>/checkpoints/<adapter>")
    p.add_argument("--backbone-checkpoint",
                   help="frozen backbone weights (file or folder) for checkpoints saved without them (crossearth: "
                        "dinov2_converted.pth / dinov2_converted_1024x1024.pth)")
    p.add_argument("--random-init", action="store_true", help="no weights (plumbing tests); never on a leaderboard")
    p.add_argument("--name", help="display name of the model on the leaderboard")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N samples per split (smoke run, marked as such)")
    p.add_argument("--force", action="store_true", help="recompute records that already exist")
    p.add_argument("--save-predictions", type=_non_negative_int, default=0, metavar="K",
                   help="keep image / ground truth / prediction PNGs of the first K samples of each split (shown on "
                        "the leaderboard's task pages)")
    p.add_argument("--window-batch", type=_positive_int, default=1,
                   help="sliding windows per forward pass (speed only; raise it on a GPU; default 1)")
    p.add_argument("--batch-size", type=_positive_int, default=1,
                   help="samples per batch: consecutive equal-size images share one forward pass (speed; on a "
                        "GPU raise it; batch-independent adapters give the same matrices; default 1)")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16", "fp16"], default="fp32",
                   help="arithmetic of the adapter's forward: fp32 is IEEE float32 on every device; tf32 lets "
                        "CUDA's convolutions and matrix products round to TF32; bf16 / fp16 autocast (tf32 and "
                        "fp16 on CUDA only; for adapters that declare it, e.g. smp). Not fp32 gives other "
                        "numbers: the record, its key and the leaderboard row name the precision (default fp32)")
    cluster = p.add_argument_group("cluster jobs (one job per task, through submitit)")
    cluster.add_argument("--launcher", choices=["none", "slurm", "local"], default="none",
                         help="submit each task as a Slurm job (or a local subprocess job) instead of running here")
    cluster.add_argument("--wait", action="store_true", help="wait for the jobs and print their outcomes")
    cluster.add_argument("--slurm-partition")
    cluster.add_argument("--slurm-account")
    cluster.add_argument("--job-minutes", type=_positive_int, default=240, help="time limit per job (default 240)")
    cluster.add_argument("--job-gpus", type=_non_negative_int, default=1, help="GPUs per job (default 1)")
    cluster.add_argument("--job-cpus", type=_positive_int, default=8, help="CPUs per job (default 8)")
    cluster.add_argument("--job-mem-gb", type=_positive_int, default=32, help="memory per job in GB (default 32)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("results", parents=[common], help="show result records, recompute their metrics, or export them",
                       description="`show` lists records (checking each against its confusion matrix); `recompute` "
                                   "rewrites a record's metrics from its stored confusion matrices; `export --format "
                                   "parquet --out DIR [--push-to-hub ORG/NAME]` writes them as a Hugging Face Hub "
                                   "dataset repo (one row per record: model, task, hash, metrics, per-class IoU, "
                                   "matrix, provenance) that datasets.load_dataset(DIR) reads.")
    p.add_argument("action", choices=["show", "recompute", "export"])
    p.add_argument("paths", nargs="*", help="record files, or folders of records (default: every record in the results "
                                            "folder)")
    p.add_argument("--format", default="parquet", help="export: parquet (a Hugging Face Hub dataset repo layout)")
    p.add_argument("--out", help="export: the folder to write")
    p.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help='export: also upload the folder as a Hub dataset repo (pip install "rsdg-bench[hub]"; a token)')
    p.add_argument("--private", action="store_true", help="export: make a new Hub repo private")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("leaderboard", parents=[common], help="build the static leaderboard site from result records",
                       description="`build` reads every record of the results folder (refusing, one by one and with "
                                   "the reason, any that fails its checks), recomputes each number from the stored "
                                   "confusion matrices, and writes a static site (index, one page per suite and "
                                   "task, CSV/Markdown/LaTeX exports), swapped in whole. Open its index.html; nothing "
                                   "external is loaded.")
    p.add_argument("action", choices=["build"])
    p.add_argument("--out", help="site folder (default <results>/site)")
    p.add_argument("--reported", action="store_true",
                   help="also show the papers' reported numbers (leaderboards/reported/*.yaml), marked as reported")
    p.add_argument("--submissions", metavar="DIR",
                   help="also show the submission bundles in DIR: each is verified (no code runs) against the "
                        "installed tasks and the prepared data of --data-root; verified ones get a badge, refused "
                        "ones are listed with the failing check (docs/submissions.md)")
    p.add_argument("--only-protocol", action="store_true",
                   help="leave out records whose weights were not trained by the task's full protocol (off-protocol "
                        "or unknown training, e.g. released weights); without it they are shown with a badge")
    p.add_argument("--baseline", metavar="ROW",
                   help="show every row's gain over this row (a model's name, or a reported row's label as the pages "
                        "show it, e.g. 'Rein (ViT-L)') on each suite and task where it has a score")
    p.add_argument("--rank-shared", action="store_true",
                   help="add a column ranking every row, complete or not, on the tasks it has (by default rows "
                        "missing tasks are shown but not ranked)")
    p.set_defaults(func=cmd_leaderboard)

    from .submissions.commands import add_commands

    add_commands(sub, common, model)

    p = sub.add_parser("adapter", help="list adapters, run the conformance suite on one, or start a new one",
                       description="`check NAME` builds the adapter with random weights (or --checkpoint) and runs shape, "
                                   "dtype, K, NaN/Inf, determinism, batch-independence and band-count checks on synthetic "
                                   "input. `new NAME` writes a plug-in package (pyproject with the entry point, the "
                                   "adapter with its input contract from --bands/--mean/--std, a conformance test) that "
                                   "passes `check` as written; see docs/adapters.md.")
    p.add_argument("action", choices=["list", "check", "new"])
    p.add_argument("name", nargs="?", help="adapter name or path/to/file.py:Class")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="check: adapter option, repeatable, as for run (smp: arch=unet encoder=resnet18)")
    p.add_argument("--task", default=None,
                   help="check: the task whose classes set K and whose source bands the input has (default: demo/u2a "
                        "for a segmentation model, else the first task of a kind the adapter declares)")
    p.add_argument("--bands", default=None,
                   help="check: band names of the synthetic input (default: the bands the adapter names, else the "
                        "task's source bands); new: the bands the adapter takes (default red,green,blue)")
    p.add_argument("--checkpoint", help="check with these weights instead of random init")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default): where the checks run")
    p.add_argument("--out", default=".", help="new: the folder to write the package into (default .)")
    p.add_argument("--mean", default="123.675,116.28,103.53",
                   help="new: per-band mean in the prepared data's units (default ImageNet's, 0..255)")
    p.add_argument("--std", default="58.395,57.12,57.375", help="new: per-band std (default ImageNet's, 0..255)")
    p.add_argument("--kind", action="append", choices=["segmentation", "change_detection"], default=None,
                   help="new: task kinds it does, repeatable (default segmentation; time series and classification "
                        "adapters implement predict_series / classify instead, see docs/adapters.md)")
    p.add_argument("--size-divisor", type=_positive_int, default=1, help="new: input sides are padded to a multiple of this")
    p.add_argument("--bands-by-name", action="store_true",
                   help="new: the harness picks --bands by name and refuses data without them (a multispectral model); "
                        "default: the model takes the first N stored bands in order, as RGB models take IRRG tiles")
    p.set_defaults(func=cmd_adapter)

    p = sub.add_parser("demo", help="the whole pipeline on synthetic data, then print the leaderboard's path",
                       description="Fake ToyEarth raw data, prepare it, train a small U-Net on the urban domain, evaluate it "
                                   "on three unseen domains, and build the leaderboard. About 3 minutes on 2 CPU cores.")
    p.add_argument("--workdir", default="rsdg-demo", help="folder for the demo's data and results (default ./rsdg-demo)")
    p.add_argument("--iterations", type=_positive_int, default=None, help="training iterations (default: the demo's own setting)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
    return parser


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log records of the `rsdg_bench` loggers to stderr: warnings by default, `-v` info, `-vv` debug, `-q`
    errors only. Results and tables go to stdout as before; the log says what happened on the way."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logger = logging.getLogger("rsdg_bench")
    logger.setLevel(level)
    if not any(getattr(h, "rsdg_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.rsdg_cli = True
        logger.addHandler(handler)


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet_log)
    try:
        return args.func(args)
    except RsdgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished records and prepared samples are kept, re-run to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rsdg-bench tasks list | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's final flush goes nowhere
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a disk that filled or turned read-only mid-command: name it, never a traceback
        if exc.errno not in _DISK_ERRNOS:
            raise
        error = RsdgError(f"cannot write {exc.filename or 'a file'}: {exc.strerror}",
                          "free space there or make it writable (or point --data-root / --results elsewhere) and "
                          "re-run: finished records and prepared samples are kept")
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
