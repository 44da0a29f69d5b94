"""`predict`, `score` and `submission pack|verify`: prediction maps and model bundles for a leaderboard's
maintainer (docs/submissions.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import check_writable
from rsdg_bench.cli.options import chosen_device, data_root, model_spec, results_root
from rsdg_bench.cli.results_commands import print_records


def cmd_predict(args: argparse.Namespace) -> int:
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.submissions.predict_maps import predict_task
    from rsdg_bench.submissions.prediction_maps import PREDICTIONS_FILE

    task = TaskCatalog().task(args.task)
    out = Path(args.out)
    check_writable(out.absolute().parent, "folder the predictions go in", "--out")
    predict_task(task, model_spec(args), data_root(args), results_root(args), out, device=chosen_device(args),
                 num_workers=args.workers, progress=not args.quiet, window_batch=args.window_batch,
                 batch_size=args.batch_size, precision=args.precision, compile_backend=args.compile,
                 read_threads=args.read_threads)
    print(f"predictions -> {out} ({PREDICTIONS_FILE} lists every file with its sha256)")
    print(f"score them: rsdg-bench score --task {task.id} --predictions {out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.submissions.score_maps import score_predictions

    task = TaskCatalog().task(args.task)
    check_writable(results_root(args), "results folder", "--results (or RSDG_RESULTS)")
    paths = score_predictions(task, Path(args.predictions), data_root(args), results_root(args),
                              progress=not args.quiet)
    print_records(paths, results_root(args))
    print(f"results -> {results_root(args)} (records marked as scored from predictions)")
    return 0


def cmd_submission(args: argparse.Namespace) -> int:
    return {"pack": _pack, "verify": _verify}[args.action](args)


def _pack(args: argparse.Namespace) -> int:
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.submissions.bundle import pack

    if not args.model or not args.out:
        raise RsdgError("submission pack needs --model NAME and --out BUNDLE",
                        "e.g. rsdg-bench submission pack --model unet-r18 --suite demo --out unet.zip")
    catalog = TaskCatalog()
    task_ids = ([catalog.task(t).id for t in args.task] if args.task else
                [t.id for t in catalog.suite_tasks(args.suite)] if args.suite else None)
    out = Path(args.out)
    check_writable(out.absolute().parent, "folder the bundle goes in", "--out")
    report = pack(results_root(args), args.model, task_ids, out, suite=args.suite, folder=args.format == "dir",
                  adapter_spec=args.adapter, card=Path(args.card) if args.card else None,
                  include_weights=args.include_weights,
                  checkpoints=Path(args.checkpoints) if args.checkpoints else None)
    for path, why in report.left_out:
        print(f"left out {path}: {why}")
    print(f"{report.records} records of {len(report.tasks)} tasks -> {report.bundle}")
    print(f"check it as the maintainer will: rsdg-bench submission verify {report.bundle}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rsdg_bench.submissions.verification_log import record_verification
    from rsdg_bench.submissions.verify import verify_bundle

    if not args.bundle:
        raise RsdgError("submission verify needs the bundle", "e.g. rsdg-bench submission verify unet.zip")
    verification = verify_bundle(Path(args.bundle), data_root(args))
    if args.rerun:
        from rsdg_bench.submissions.rerun import rerun_samples  # torch and the adapter: only when asked to run them

        rerun_samples(verification, args.rerun, data_root(args),
                      Path(args.checkpoints) if args.checkpoints else None, args.seed, args.tolerance,
                      chosen_device(args), trust_code=args.trust_code)
    for check in verification.checks:
        print(check.line())
    if verification.passed:
        print(f"verified: {verification.badge()[1]}")
        try:
            print(f"logged -> {record_verification(verification, results_root(args))} (the leaderboard's badge "
                  "reads this log, built with the same --results)")
        except OSError as exc:  # a read-only results folder: the verdict stands, only the log entry is missing
            print(f"(not logged in {results_root(args)}: {exc.strerror or exc}; the leaderboard will show "
                  "'verified: recomputed')")
        return 0
    print(f"NOT verified: {len(verification.failed)} of {len(verification.checks)} checks failed")
    first = verification.failed[0]
    print(f"error: {args.bundle}: {first.name}: {first.detail.splitlines()[0] if first.detail else 'failed'}",
          file=sys.stderr)
    return 1


def fraction(text: str) -> float:
    """An argparse type: a finite number in [0, 1] (a fraction of an image's pixels). `nan`, `inf` and
    negatives are refused here: `nan` compares false with everything and would pass every image."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction 0..1, e.g. 1e-4") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction 0..1 (e.g. 1e-4; 0 demands identical "
                                         "matrices)")
    return value


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, model: argparse.ArgumentParser,
             evaluation: argparse.ArgumentParser) -> None:
    """Register `predict`, `score` and `submission` on the main parser."""
    p = sub.add_parser("predict", parents=[common, model, evaluation], help="write a model's prediction maps for a task",
                       description="Write one prediction map per sample of every split the task evaluates (uint8 PNG, "
                                   "or GeoTIFF with the sample's CRS and transform; one band per date for time series; "
                                   "a CSV for classification) and predictions.json (task hash, data manifest, every "
                                   "file's sha256). Reads inputs only: works on splits whose labels are not public. "
                                   "See docs/submissions.md.")
    p.add_argument("--task", required=True, help="task id (or the paper's name)")
    p.add_argument("--out", required=True, help="the predictions folder to write (swapped in whole)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("score", parents=[common], help="score prediction maps against the prepared labels",
                       description="Validate a predictions folder (sample ids, shapes, dtype, class range, CRS and "
                                   "transform, file hashes, task hash, inputs) and score it with the engine `run` uses: "
                                   "one record per split, marked as scored from predictions. An organizer scores "
                                   "hidden labels this way; see docs/submissions.md.")
    p.add_argument("--task", required=True, help="task id (or the paper's name)")
    p.add_argument("--predictions", required=True, help="the folder `rsdg-bench predict` wrote")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("submission", parents=[common], help="pack a model's results for a leaderboard, or verify a bundle",
                       description="`pack` writes one bundle (zip, or a folder with --format dir) of a model's records, "
                                   "its adapter source, checkpoint sha256s, pip freeze, harness version and a hashed "
                                   "manifest with the model card. `verify BUNDLE` checks it (one PASS/FAIL line per "
                                   "check; exit 0 only when all pass) and with --rerun K re-evaluates K drawn samples "
                                   "per split. See docs/submissions.md.")
    p.add_argument("action", choices=["pack", "verify"])
    p.add_argument("bundle", nargs="?", help="verify: the bundle (.zip or folder)")
    p.add_argument("--model", help="pack: the model's display name (or adapter name) in the results folder")
    p.add_argument("--suite", help="pack: the suite submitted (verify then checks it is complete)")
    p.add_argument("--task", action="append", help="pack: a task id instead of --suite (repeatable)")
    p.add_argument("--out", help="pack: the bundle to write")
    p.add_argument("--format", choices=["zip", "dir"], default="zip", help="pack: a .zip (default) or a folder")
    p.add_argument("--adapter", help="pack: the adapter's source, path/to/file.py:Class (for a file adapter)")
    p.add_argument("--card", help="pack: model card YAML (name, paper, url, code, weights, licence, contact, "
                                  "description)")
    p.add_argument("--include-weights", action="store_true", help="pack: put the checkpoints in the bundle")
    p.add_argument("--checkpoints", help="pack: where the checkpoints are (default: the paths the records name); "
                                         "verify --rerun: folder of the submitted weights")
    p.add_argument("--rerun", type=int, default=0, metavar="K",
                   help="verify: re-evaluate K samples per split, drawn at random: executes the bundle's adapter, "
                        "in a sandbox (bubblewrap: no network, no labels, one writable folder; docs/security.md)")
    p.add_argument("--trust-code", action="store_true",
                   help="verify --rerun: run the bundle's adapter unconfined where no sandbox can be made (only "
                        "for code you trust)")
    p.add_argument("--seed", type=int, help="verify --rerun: the draw's seed (default: a fresh random one, printed)")
    p.add_argument("--tolerance", type=fraction, default=0.0,
                   help="verify --rerun: the fraction of an image's pixels that may differ (GPU non-determinism; "
                        "default 0: identical)")
    p.add_argument("--device", default="auto", help="verify --rerun: cpu, cuda or auto")
    p.set_defaults(func=cmd_submission)
