"""Benchmark: `rsdg-bench tasks list` (every installed task YAML read, includes resolved, validated) against
`rsdg-bench --help` (the interpreter and the CLI alone), interleaved in one run.

    python bench/startup.py [--repeats 7]

Printed: the median wall time of each and `ratio` = tasks list / --help (1.0 would mean reading the
catalog costs nothing beyond starting the CLI).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rsdg_bench.cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    help_times, list_times = [], []
    for _ in range(args.repeats):  # interleaved, so a busy moment of the box hits both
        help_times.append(timed(["--help"]))
        list_times.append(timed(["tasks", "list"]))
    help_s, list_s = statistics.median(help_times), statistics.median(list_times)
    print(f"--help {help_s:.3f} s; tasks list {list_s:.3f} s (medians of {args.repeats})")
    print(f"ratio {list_s / help_s:.2f}")


if __name__ == "__main__":
    main()
