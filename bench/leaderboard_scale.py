"""Benchmark: `leaderboard build` as the number of models grows, time and peak memory.

    python bench/leaderboard_scale.py [--models 5,20,50] [--suite crossearth]

Synthetic valid records (`synthetic_records.py`: published split sizes, about 2K non-zero cells per image)
are written for the largest count of models × every task of the suite; each count builds the site from the
records of its first N models, in a fresh process with one thread, which reports its CPU time and peak
resident memory (its high-water mark, reset at start: a forked child inherits the parent's). The
reference, in the same process, is reading and parsing every record's JSON (the floor of any board that
recomputes from the records): printed as `ratio` = build / parse, with the per-model cost so the growth
can be read off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from synthetic_records import write_records

MEASURE = """
import json, sys, time
from pathlib import Path
# A child forked from the (large) bench process inherits its peak memory: reset the high-water mark first.
Path("/proc/self/clear_refs").write_text("5")
results, out = Path(sys.argv[1]), Path(sys.argv[2])
started = time.process_time()
for path in sorted((results / "records").rglob("*.json")):
    json.loads(path.read_bytes())
parse = time.process_time() - started
from rsdg_bench.api import build_leaderboard
started = time.process_time()
board = build_leaderboard(results, out)
build = time.process_time() - started
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(json.dumps({"parse": parse, "build": build, "models": board.models, "tasks": board.tasks,
                  "torch": "torch" in sys.modules, "peak_mib": int(peak.split()[1]) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="5,20,50", help="comma-separated model counts")
    parser.add_argument("--suite", default="crossearth")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.models.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        names = [f"model-{i:03d}" for i in range(counts[-1])]
        write_records(root / "all", args.suite, names)
        size = sum(p.stat().st_size for p in (root / "all").rglob("*.json")) / 2 ** 20
        print(f"{counts[-1]} models × the {args.suite} suite: {size:.0f} MiB of records "
              f"({size / counts[-1]:.1f} MiB per model)")
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for count in counts:
            results = root / f"n{count}"
            for path in (root / "all" / "records").rglob("*.json"):
                if int(path.stem.split("-")[0]) < count:  # the first N models' records (keys start with the number)
                    target = results / path.relative_to(root / "all")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, target)
            done = subprocess.run([sys.executable, "-c", MEASURE, str(results), str(root / f"site{count}")],
                                  capture_output=True, text=True, env=environment, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{count:4d} models: build {figures['build']:7.1f} s CPU ({figures['build'] / count:.2f} s per model), "
                  f"parse {figures['parse']:5.1f} s, peak {figures['peak_mib']:6.0f} MiB"
                  f"{' (torch imported)' if figures['torch'] else ''}; "
                  f"ratio {figures['build'] / figures['parse']:.1f}")


if __name__ == "__main__":
    main()
