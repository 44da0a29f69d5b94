"""`results` and `leaderboard`: records shown, recomputed and exported; the static site built from them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import check_writable
from rsdg_bench.cli.options import data_root, percent, results_root


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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



def cmd_results(args: argparse.Namespace) -> int:
    from rsdg_bench.records.results import ResultStore, recompute

    store = ResultStore(results_root(args))
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
    refused = print_records(paths, store.root)
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


def _export_results(args: argparse.Namespace, results_folder: Path) -> int:
    from rsdg_bench.hub.hub_export import export_results, push_to_hub

    if args.format != "parquet":
        raise RsdgError(f"unknown export format {args.format!r}", "use --format parquet")
    if not args.out:
        raise RsdgError("results export needs --out DIR", "e.g. rsdg-bench results export --format parquet --out hub/")
    folder, rows, refused = export_results(results_folder, Path(args.out), progress=not args.quiet)
    print(f"{rows} records -> {folder} (Parquet + README card; datasets.load_dataset({str(folder)!r}) reads it)"
          + (f"; {len(refused)} refused, listed in the card" if refused else ""))
    if args.push_to_hub:
        print(f"pushed -> {push_to_hub(folder, args.push_to_hub, private=args.private)}")
    return 0


def print_records(paths: list[Path], results_folder: Path) -> int:
    """A table of records (each checked against its confusion matrix on load), scores in percent (`mf1` headed
    mDice, what it is; mFscore is – in a record written before it was stored); per-place accuracies
    (classification) follow the model name. For classification OA is the accuracy. A record that fails its
    checks is listed with the reason and the rest are shown; returns how many failed."""
    from rsdg_bench.base.errors import ResultsError
    from rsdg_bench.protocol.metric_table import BY_NAME, HEADLINE_NAMES
    from rsdg_bench.records.results import ResultStore

    store = ResultStore(results_folder)
    headlines = [BY_NAME[name] for name in HEADLINE_NAMES]
    print(f"{'task':22s} {'split':28s} {'role':6s} " + " ".join(f"{m.label:>7s}" for m in headlines) + "  model")
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
                  + " ".join(f"{percent(metrics.get(m.name)):>7s}" for m in headlines)
                  + f"  {record.model.display_name}{smoke}{_place_scores(metrics)}")
    return refused


def _place_scores(metrics: dict) -> str:
    if metrics.get("group_acc") is None:
        return ""
    return (f"  (per-place accuracy: mean {percent(metrics['domain_acc'])}, worst {percent(metrics['worst_domain_acc'])}, "
            f"{len(metrics['group_acc'])} places)")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from rsdg_bench.api import build_leaderboard

    results = results_root(args)
    if not results.is_dir() and not (args.reported or args.submissions):
        raise RsdgError(f"no results folder at {results}",
                        "point --results at the folder `rsdg-bench run` wrote into (add --reported to build the "
                        "papers' reported tables alone)")
    check_writable((Path(args.out) if args.out else results_root(args) / "site").absolute().parent,
                   "folder the site goes in", "--out")
    site = build_leaderboard(results_root(args), args.out, reported=args.reported, only_protocol=args.only_protocol,
                             submissions=Path(args.submissions) if args.submissions else None,
                             data_root=data_root(args), baseline=args.baseline, rank_shared=args.rank_shared,
                             progress=not args.quiet)
    print(f"{site.tasks} tasks, {site.models} models, {site.left_out} records left out"
          + (f", {site.reported_rows} reported rows" if args.reported else ""))
    if args.baseline and not site.baseline_found:
        print(f"note: no row is named {args.baseline!r}, so no gains are shown; the row names are on the suite "
              "pages (a reported row's label includes its backbone, e.g. 'Rein (ViT-L)')", file=sys.stderr)
    print(f"leaderboard -> {site.page.resolve()}")
    return 0
