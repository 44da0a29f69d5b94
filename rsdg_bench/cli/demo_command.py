"""`demo`: the whole pipeline on synthetic data in one folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from rsdg_bench.cli.options import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on synthetic data, then print the leaderboard's path",
                       description="Fake ToyEarth raw data, prepare it, train a small U-Net on the urban domain, evaluate it "
                                   "on three unseen domains, and build the leaderboard. About 3 minutes on 2 CPU cores.")
    p.add_argument("--workdir", default="rsdg-demo", help="folder for the demo's data and results (default ./rsdg-demo)")
    p.add_argument("--iterations", type=positive_int, default=None, help="training iterations (default: the demo's own setting)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from rsdg_bench.demo import next_commands, run_demo

    workdir = Path(args.workdir)
    page = run_demo(workdir, iterations=args.iterations, progress=not args.quiet)
    print(f"\nleaderboard page: {page.resolve()}")
    print(f"prepared data:    {(workdir / 'data').resolve()}\nresults:          {(workdir / 'results').resolve()}")
    print("The demo keeps its own folders; pass them to go on (or set RSDG_DATA and RSDG_RESULTS):")
    for command in next_commands(workdir):
        print(f"  {command}")
    return 0
