"""The `rsdg-bench` entry point: the parser assembled from the command groups, logging, and `main`, which turns
errors the user can fix into `error: <what>` plus `fix: <how>` (exit status 2), without a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from rsdg_bench import __version__
from rsdg_bench.base.errors import RsdgError, disk_error, is_disk_error
from rsdg_bench.cli import (
    adapter_commands,
    data_commands,
    demo_command,
    model_commands,
    results_commands,
    submission_commands,
    task_commands,
)
from rsdg_bench.cli.options import common_options, data_root, evaluation_options, model_options, results_root

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


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each command group registers its own subcommands, sharing the option groups of
    `options` (so every command that loads a model takes the same model and evaluation flags)."""
    common, model, evaluation = common_options(), model_options(), evaluation_options()
    parser = argparse.ArgumentParser(
        prog="rsdg-bench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Benchmark harness for remote-sensing domain generalization: prepare data, run source→target "
                    "protocols, publish per-class leaderboards.")
    parser.add_argument("--version", action="version", version=f"rsdg-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens (-v: each step, e.g. records skipped or written and why; -vv: debug)")
    parser.add_argument("-q", "--quiet-log", action="store_true", help="log errors only (warnings are shown by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data_commands.register(sub, common)
    task_commands.register(sub)
    model_commands.register(sub, common, model, evaluation)
    results_commands.register(sub, common)
    submission_commands.register(sub, common, model, evaluation)
    adapter_commands.register(sub)
    demo_command.register(sub)
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
        setattr(handler, "rsdg_cli", True)  # marks the CLI's own handler (read by getattr above)
        logger.addHandler(handler)


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
        if not is_disk_error(exc):
            raise
        print(f"error: {disk_error(exc, '--data-root / --results / --out', _output_folder(args))}", file=sys.stderr)
        return 2


def _output_folder(args: argparse.Namespace) -> Path | None:
    """Where the command writes (its --out, else its data root for `prepare`, else its results folder): named in
    a disk error that carries no file name."""
    if getattr(args, "out", None):
        return Path(args.out).parent
    if args.command == "prepare" and hasattr(args, "data_root"):
        return data_root(args)
    return results_root(args) if hasattr(args, "results") else None
