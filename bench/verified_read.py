"""Benchmark: what hashing every prepared file as it is read costs, in one run.

    python bench/verified_read.py [--dataset potsdam] [--repeats 3]

`PreparedDataset.read_image` / `read_label` read a file's bytes once, check their sha256 against the
manifest (a file changed after prepare keeps the manifest, so only its bytes can tell) and decode them from
memory (docs/reliability.md). The reference is the plain decode of the same files by path, unchecked. Both
read every image and label of the dataset's prepared fake, interleaved, single-threaded; the ratio is
verified / plain time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rsdg_bench.datasets.prepared import PreparedDataset, read_raster
from rsdg_bench.prep import get_preparer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="potsdam")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        raw = get_preparer(args.dataset).make_fake(Path(scratch) / "raw")
        get_preparer(args.dataset).prepare(raw, Path(scratch) / "data", progress=False)
        dataset = PreparedDataset.open(Path(scratch) / "data", args.dataset)
        rows = dataset.manifest.to_dict("records")
        files = [(row["image"], row["image_sha256"]) for row in rows]
        files += [(row["label"], row["label_sha256"]) for row in rows if row.get("label")]
        plain, verified = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for rel, _sha in files:
                read_raster(dataset.root / rel)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            for rel, sha in files:
                dataset._read_verified(rel, sha)
            verified.append(time.perf_counter() - start)
        size = sum((dataset.root / rel).stat().st_size for rel, _ in files) / 2 ** 20
        print(f"{args.dataset}: {len(files)} files, {size:.1f} MiB; best of {args.repeats}")
        print(f"plain decode {min(plain):.3f} s, hashed + decoded from memory {min(verified):.3f} s")
        print(f"ratio {min(verified) / min(plain):.2f}")


if __name__ == "__main__":
    main()
