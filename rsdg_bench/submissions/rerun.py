"""Re-running a sample of a submission: K samples per split, drawn here, evaluated again with the bundle's
adapter and weights, and compared with the per-image matrices the records hold.

The draw is seeded by a random seed chosen at verify time (printed, so a maintainer can repeat it), so a
submitter cannot know which samples will be checked: a record whose per-image matrices were made up for
some images fails wherever those are drawn, and with K of N samples drawn, a submission that fakes a
fraction f of its images passes with probability about (1 − f)^K per split.

Tolerance policy: on CPU the harness is deterministic (same code, weights and data give the same bits), so
the default demands identical per-image matrices. GPU kernels may differ between cards and library versions
by a few pixels at class boundaries; `tolerance` allows per-image matrices that differ in at most that
fraction of an image's pixels (e.g. 1e-4), and the check always reports how many images differed and the
largest fraction of pixels that did. This is the one step that executes the bundle's code: run it in a
sandbox you trust with that code (a container without credentials).
"""

from __future__ import annotations

import copy
import math
import random
import secrets
import tempfile
from pathlib import Path

import numpy as np
import torch

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.evaluator.evaluation import evaluate_split_counts
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import decode_per_image
from rsdg_bench.run.runner import load_for_task
from rsdg_bench.submissions.bundle import Bundle
from rsdg_bench.submissions.verify import Check, Verification


def rerun_samples(verification: Verification, count: int, data_root: Path, checkpoints: Path | None = None,
                  seed: int | None = None, tolerance: float = 0.0, device: torch.device = torch.device("cpu"),
                  catalog: TaskCatalog | None = None) -> Check:
    """Re-evaluate `count` drawn samples of every record's split; the check (also appended to `verification`)."""
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and 0.0 <= tolerance <= 1.0):
        raise RsdgError(f"tolerance {tolerance!r} is not a fraction 0..1 (nan would pass every image)",
                        "give e.g. 1e-4, or 0 for identical matrices")
    seed = secrets.randbits(32) if seed is None else seed
    try:
        detail = _rerun(verification, count, Path(data_root), checkpoints, seed, tolerance, device,
                        catalog or TaskCatalog())
        check = Check("re-run", True, detail)
        verification.rerun_samples = count
    except RsdgError as exc:
        check = Check("re-run", False, f"{exc.problem} (seed {seed})")
    verification.checks.append(check)
    return check


def _rerun(verification: Verification, count: int, data_root: Path, checkpoints: Path | None, seed: int,
           tolerance: float, device: torch.device, catalog: TaskCatalog) -> str:
    manifest = verification.manifest
    if manifest is None or not verification.records:
        raise RsdgError("nothing to re-run: the bundle did not pass its first checks")
    rng = random.Random(seed)
    images = splits = 0
    worst = 0.0
    mismatched: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rsdg-rerun-") as scratch, Bundle(verification.bundle) as bundle:
        spec = _adapter_spec(bundle, Path(scratch))
        weights = _weights(bundle, Path(scratch), checkpoints)
        for where, record in verification.records:
            sha = record.model.checkpoint.get("sha256")
            if sha not in weights:
                raise RsdgError(f"no checkpoint with sha256 {str(sha)[:12]}… for {where}: pass the folder holding "
                                "the submitted weights with --checkpoints DIR")
            task = catalog.tasks[record.task.id]
            data = TaskData(data_root, task, phase="evaluate")
            model = ModelSpec(spec, {k: str(v) for k, v in record.model.options.items()}, checkpoint=weights[sha])
            adapter, _ = load_for_task(model, task, data, Path(scratch))
            adapter.to(device)
            ref = next(r for role, r in task.evaluation_splits()
                       if r.slug == record.evaluated.slug and role == record.evaluated.role)
            split = data.open(ref)
            drawn = sorted(rng.sample(range(len(split)), min(count, len(split))))
            subset = copy.copy(split)
            subset.rows = split.rows.iloc[drawn].reset_index(drop=True)
            again = evaluate_split_counts(adapter, subset, task, device, progress=False).per_image.dense()
            stored = decode_per_image(record.per_image_matrices[ref.slug], drawn).reshape(len(drawn), -1)
            for position, index in enumerate(drawn):
                differing = np.abs(again[position] - stored[position]).sum() / 2
                pixels = max(int(stored[position].sum()), 1)
                worst = max(worst, differing / pixels)
                if not differing / pixels <= tolerance:  # written so that a NaN can never pass
                    mismatched.append(f"{ref.slug} sample {split.rows['sample_id'].iloc[index]}")
            images += len(drawn)
            splits += 1
    summary = (f"{images} samples of {splits} splits re-run (seed {seed}, tolerance {tolerance:g}); largest "
               f"difference {worst:.2e} of an image's pixels")
    if mismatched:
        raise RsdgError(f"{len(mismatched)} of {images} re-run samples differ from their records, e.g. "
                        f"{', '.join(mismatched[:3])}; {summary}")
    return summary


def _adapter_spec(bundle: Bundle, scratch: Path) -> str:
    """The adapter to build: a bundled file adapter written out to `scratch`, else its registered name."""
    source = bundle.manifest().adapter
    if source.kind != "file":
        return source.name
    folder = scratch / "adapter"
    for rel in source.files:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bundle.read(f"adapter/{rel}"))
    file, _, cls = (source.entry or "").partition(":")
    return f"{folder / file}:{cls}"


def _weights(bundle: Bundle, scratch: Path, folder: Path | None) -> dict[str, Path]:
    """sha256 → checkpoint file: the bundle's own weights, and every file of `folder`."""
    found: dict[str, Path] = {}
    for sha, member in bundle.manifest().checkpoints.items():
        if member is not None:
            target = scratch / "weights" / Path(member).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bundle.read(member))
            found[sha256_file(target)] = target
    if folder is not None:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                found.setdefault(sha256_file(path), path)
    return found
