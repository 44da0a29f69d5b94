"""`prepare`, `export` and `fake`: raw downloads, prepared datasets and their Hub copies."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.cli.options import data_root, positive_float, positive_int


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("prepare", parents=[common], help="turn a raw download into prepared data",
                       description="Verify a raw download (archive or unpacked folder) and write the canonical prepared "
                                   "dataset into the data root, atomically; an interrupted prepare resumes.")
    p.add_argument("name", nargs="?", help="dataset name (see --list)")
    p.add_argument("--raw", help="the downloaded archive, or the folder holding the archives as downloaded or unpacked")
    p.add_argument("--no-checksum", action="store_true",
                   help="skip the published-checksum check of archives (for archives you re-packed yourself, "
                        "or the fakes of `rsdg-bench fake`)")
    p.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="the most pixels (height × width) one raw image may have; each dataset sets a limit "
                        "that its release keeps, so a corrupt file claiming a huge size is refused unread")
    p.add_argument("--max-raw-gib", type=positive_float, metavar="G",
                   help="the most GiB the dataset's archives may unpack to (each dataset sets one; the disk's "
                        "free space is checked as well)")
    p.add_argument("--private-labels", metavar="DIR",
                   help="for an organizer: the labels the release keeps private (openearthmap_sar: "
                        "DIR/test/labels/<scene>.tif), so that split is prepared labelled and submitted prediction "
                        "maps can be scored on it (docs/submissions.md); never publish such a prepared copy")
    p.add_argument("--workers", type=positive_int, default=len(os.sched_getaffinity(0)),
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



def cmd_prepare(args: argparse.Namespace) -> int:
    from rsdg_bench.prep import available_preparers, get_preparer

    if args.list or not args.name:
        for name, cls in available_preparers().items():
            print(f"{name:20s} {cls.summary}")
        return 0
    if args.verify:
        return _verify_prepared(args)
    if args.from_hf:
        from rsdg_bench.hub.hub_dataset import import_prepared

        out = import_prepared(Path(args.from_hf), data_root(args), args.name)
        print(f"restored {args.name} from {args.from_hf} -> {out}")
        _report_prepared(data_root(args), args.name)
        return 0
    preparer = get_preparer(args.name, verify_checksums=not args.no_checksum, max_pixels=args.max_pixels,
                            max_raw_bytes=None if args.max_raw_gib is None else int(args.max_raw_gib * 2 ** 30),
                            private_labels=Path(args.private_labels) if args.private_labels else None,
                            workers=args.workers)
    if args.raw is None:
        raise RsdgError("prepare needs --raw", "pass the downloaded archive or its folder: --raw PATH")
    out = preparer.prepare(Path(args.raw), data_root(args), progress=not args.quiet)
    print(f"prepared {args.name} -> {out}")
    _report_prepared(data_root(args), args.name)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rsdg_bench.hub.hub_dataset import export_prepared

    out = export_prepared(data_root(args), args.name, Path(args.out))
    print(f"{args.name} -> {out} (a Hub dataset repo: data/*.parquet, rsdg/, README.md); "
          f"restore with `rsdg-bench prepare {args.name} --from-hf {out}`")
    return 0


def _report_prepared(root: Path, name: str) -> None:
    """Split sizes against the published ones, the class histogram, and the preparer's notes."""
    import numpy as np

    from rsdg_bench.datasets.prepared import PreparedDataset

    dataset = PreparedDataset.open(root, name)
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
    from rsdg_bench.datasets.prepared import PreparedDataset

    dataset = PreparedDataset.open(data_root(args), args.name)
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
    from rsdg_bench.prep import get_preparer

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
