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
largest fraction of pixels that did.

This is the one step that executes the bundle's code, and it runs it in a child process confined by
`sandbox.py` (no network, read-only access to the staged images, the adapter and its weights only, one
writable folder, time and memory limits): the parent stages the drawn samples' images (never a label), the
child (`sandboxed_predict`) predicts them, and the parent counts the predictions against the labels it alone
reads. With `trust_code` the same child runs unconfined, for machines where no sandbox can be made.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import atomic_write_json, sha256_file
from rsdg_bench.protocol.task_data import SegmentationSplit, TaskData
from rsdg_bench.protocol.task_schema import SplitRef, Task, TaskCatalog
from rsdg_bench.records.results import ResultRecord, decode_per_image
from rsdg_bench.scoring.metrics import confusion_counts
from rsdg_bench.submissions.bundle import Bundle
from rsdg_bench.submissions.sandbox import Limits, child_writable_folder, require_sandbox, run_child
from rsdg_bench.submissions.sandboxed_predict import DONE_FILE, JOB_FILE
from rsdg_bench.submissions.verify import Check, Verification


def rerun_samples(verification: Verification, count: int, data_root: Path, checkpoints: Path | None = None,
                  seed: int | None = None, tolerance: float = 0.0, device: torch.device = torch.device("cpu"),
                  catalog: TaskCatalog | None = None, trust_code: bool = False, limits: Limits = Limits()) -> Check:
    """Re-evaluate `count` drawn samples of every record's split; the check (also appended to `verification`)."""
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and 0.0 <= tolerance <= 1.0):
        raise RsdgError(f"tolerance {tolerance!r} is not a fraction 0..1 (nan would pass every image)",
                        "give e.g. 1e-4, or 0 for identical matrices")
    if not trust_code:  # before anything is staged: a clear refusal, not a failed check
        require_sandbox()
    seed = secrets.randbits(32) if seed is None else seed
    try:
        detail = _rerun(verification, count, Path(data_root), checkpoints, seed, tolerance, device,
                        catalog or TaskCatalog(), trust_code, limits)
        check = Check("re-run", True, detail)
        verification.rerun_samples = count
    except RsdgError as exc:
        check = Check("re-run", False, f"{exc.problem} (seed {seed})")
    verification.checks.append(check)
    return check


def _rerun(verification: Verification, count: int, data_root: Path, checkpoints: Path | None, seed: int,
           tolerance: float, device: torch.device, catalog: TaskCatalog, trust_code: bool, limits: Limits) -> str:
    manifest = verification.manifest
    if manifest is None or not verification.records:
        raise RsdgError("nothing to re-run: the bundle did not pass its first checks")
    rng = random.Random(seed)
    images = splits = 0
    worst = 0.0
    mismatched: list[str] = []
    with child_writable_folder("rsdg-rerun-") as scratch, Bundle(verification.bundle) as bundle:
        job_root = scratch / "job"
        spec = _adapter_spec(bundle, job_root)
        weights = _weights(bundle, job_root, checkpoints)
        staged = []  # every record's job first, so one sandboxed child (one torch start-up) predicts them all
        for number, (where, record) in enumerate(verification.records):
            sha = record.model.checkpoint.get("sha256")
            if sha not in weights:
                raise RsdgError(f"no checkpoint with sha256 {str(sha)[:12]}… for {where}: pass the folder holding "
                                "the submitted weights with --checkpoints DIR")
            task = catalog.tasks[record.task.id]
            data = TaskData(data_root, task, phase="evaluate")
            ref = next(r for role, r in task.evaluation_splits()
                       if r.slug == record.evaluated.slug and role == record.evaluated.role)
            split = data.open(ref)
            drawn = sorted(rng.sample(range(len(split)), min(count, len(split))))
            _stage(job_root, number, task, data, ref, split, drawn, spec, record, weights[sha], device)
            staged.append((where, record, task, ref, split, drawn))
        predictions = _predict_confined(job_root, scratch / "out", data_root, trust_code, limits, device)
        for number, (where, record, task, ref, split, drawn) in enumerate(staged):
            stored = decode_per_image(record.per_image_matrices[ref.slug], drawn).reshape(len(drawn), -1)
            k = task.class_schema.num_classes
            for position, index in enumerate(drawn):
                label = split.label(index)
                predicted = _prediction(predictions / f"record-{number}", position, label.shape, k, where)
                again = confusion_counts(label, predicted, k)[0]
                differing = np.abs(again.reshape(-1) - stored[position]).sum() / 2
                pixels = max(int(stored[position].sum()), 1)
                worst = max(worst, differing / pixels)
                if not differing / pixels <= tolerance:  # written so that a NaN can never pass
                    mismatched.append(f"{ref.slug} sample {split.rows['sample_id'].iloc[index]}")
            images += len(drawn)
            splits += 1
    summary = (f"{images} samples of {splits} splits re-run (seed {seed}, tolerance {tolerance:g}"
               f"{', unconfined: --trust-code' if trust_code else ', in a sandbox'}); largest difference "
               f"{worst:.2e} of an image's pixels")
    if mismatched:
        raise RsdgError(f"{len(mismatched)} of {images} re-run samples differ from their records, e.g. "
                        f"{', '.join(mismatched[:3])}; {summary}")
    return summary


def _stage(job_root: Path, number: int, task: Task, data: TaskData, ref: SplitRef, split: SegmentationSplit,
           drawn: list[int], spec: str, record: ResultRecord, checkpoint: Path, device: torch.device) -> Path:
    """The child's job folder for one record: its drawn samples' images as the evaluator reads them (no label:
    only each label's shape), the adapter spec and options, and where its weights are."""
    job = job_root / f"record-{number}"
    (job / "inputs").mkdir(parents=True)
    unlabelled = data.open(ref, labelled=False).for_inference()
    samples = []
    for position, index in enumerate(drawn):
        sample = unlabelled[index]
        image = f"inputs/{position}.npy"
        np.save(job / image, sample["image"].numpy(), allow_pickle=False)
        staged = {"image": image, "label_shape": list(sample["label"].shape), "sample_id": sample["sample_id"]}
        if "days" in sample:
            staged["days"] = f"inputs/{position}-days.npy"
            np.save(job / staged["days"], sample["days"].numpy(), allow_pickle=False)
        samples.append(staged)
    weights = checkpoint if checkpoint.is_relative_to(job_root) else _copied(checkpoint, job)
    job_file = {"task_id": task.id, "task_hash": task.hash, "adapter": spec,
                "options": {k: str(v) for k, v in record.model.options.items()},
                "checkpoint": os.path.relpath(weights, job), "source_bands": data.band_names(task.source),
                "device": device.type, "threads": 1,
                "splits": [{"slug": ref.slug, "band_names": split.band_names, "samples": samples}]}
    atomic_write_json(job / JOB_FILE, job_file)
    return job


def _copied(checkpoint: Path, job: Path) -> Path:
    """A checkpoint from the maintainer's --checkpoints folder, copied into the job (the child reads nothing
    else of the maintainer's disk)."""
    target = job / "weights" / checkpoint.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, target)
    return target


def _predict_confined(job_root: Path, out: Path, data_root: Path, trust_code: bool, limits: Limits,
                      device: torch.device) -> Path:
    """Run the child on every staged job; the folder of its predictions (`record-N/`), or an error with the end
    of what it printed."""
    out.mkdir()
    done = run_child([sys.executable, "-m", "rsdg_bench.submissions.sandboxed_predict", str(job_root), str(out)],
                     job_root, out, limits, trust_code, hidden=[data_root], gpu=device.type == "cuda")
    if done.returncode != 0 or not (out / DONE_FILE).is_file():
        said = (done.stderr or done.stdout or "").strip().splitlines()[-12:]
        raise RsdgError("the bundle's adapter failed in the re-run" + (" sandbox" if not trust_code else "")
                        + f" (exit {done.returncode}): " + " | ".join(line[:300] for line in said))
    return out


def _prediction(folder: Path, position: int, shape: tuple[int, ...], k: int, where: str) -> np.ndarray:
    """One prediction the child wrote, read as data: plain .npy (no pickle), bounded, the label's shape,
    integer classes in [0, K)."""
    path = folder / f"0-{position}.npy"
    if not path.is_file() or path.stat().st_size > 8 * int(np.prod(shape, dtype=np.int64)) + 4096:
        raise RsdgError(f"{where}: the re-run wrote no prediction, or an oversized one, for drawn sample {position}")
    prediction = np.load(path, allow_pickle=False)
    if prediction.shape != tuple(shape) or prediction.dtype.kind not in "iu":
        raise RsdgError(f"{where}: the re-run's prediction {position} is {prediction.dtype} {prediction.shape}, "
                        f"not integer classes of shape {tuple(shape)}")
    if prediction.size and (prediction.min() < 0 or prediction.max() >= k):
        raise RsdgError(f"{where}: the re-run's prediction {position} has classes outside [0, {k})")
    return prediction.astype(np.uint8)


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
