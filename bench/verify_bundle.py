"""Benchmark: `submission verify` (no re-run) on a bundle of the CrossEarth suite at its published split sizes.

    python bench/verify_bundle.py [--suite crossearth] [--repeats 3]

Synthetic but valid records are written for every evaluated split of every task of the suite, each with
the split's published number of images (per-image matrices with about 2K non-zero cells per image, so the
records are as large as real ones), through the one record constructor `run` uses. They are packed with
`submission pack` and verified with `submission verify`'s checks. No data is prepared here, so the two
data checks fail fast (on a maintainer's machine they open each dataset's card and manifest once). The
reference, in the same run, is the floor any verifier pays: reading every record member and parsing its
JSON. Printed: records, bundle size, pack and verify time, and verify / parse.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from synthetic_records import write_records

from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.submissions.bundle import Bundle, pack
from rsdg_bench.submissions.verify import verify_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="crossearth")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        records = write_records(root / "results", args.suite, ["synthetic"])
        task_ids = [t.id for t in TaskCatalog().suite_tasks(args.suite)]
        started = time.perf_counter()
        pack(root / "results", "synthetic", task_ids, root / "bundle.zip", suite=args.suite)
        packing = time.perf_counter() - started
        parse, verify = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            with Bundle(root / "bundle.zip") as bundle:
                for name in bundle.record_members():
                    json.loads(bundle.read(name))
            parse.append(time.perf_counter() - started)
            started = time.perf_counter()
            verification = verify_bundle(root / "bundle.zip", root / "no-data")
            verify.append(time.perf_counter() - started)
        failed = sorted(c.name for c in verification.failed)
        size = (root / "bundle.zip").stat().st_size / 2 ** 20
        print(f"{len(task_ids)} tasks, {records} records, bundle {size:.1f} MiB; pack {packing:.1f} s")
        print(f"verify {min(verify):.2f} s, parse-only {min(parse):.2f} s (best of {args.repeats}); "
              f"failed without prepared data: {', '.join(failed)}")
        print(f"ratio {min(verify) / min(parse):.2f}")


if __name__ == "__main__":
    main()
