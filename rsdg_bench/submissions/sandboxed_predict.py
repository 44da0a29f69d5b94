"""The re-run's child process: the bundle's adapter predicts the drawn samples, inside the sandbox.

`python -m rsdg_bench.submissions.sandboxed_predict JOBS OUT` reads each `JOBS/record-N/job.json` (written by
`rerun.py`: the task's id and hash, the adapter spec, its options and checkpoint, the source bands, and per
split the drawn samples' staged images), builds the adapter as `run` does, evaluates each staged split through
the same `evaluate_split_counts` (normalization, inference options, the kind's scorer), and writes each
prediction to `OUT/record-N/<split>-<position>.npy`: one process (one torch start-up) for the whole bundle.
It sees no label: the staged samples carry an all-ignore label of the right shape, and the parent counts the
predictions against the real labels. Whatever the adapter does beyond predicting
(reading a label file, opening a socket, writing elsewhere) meets the sandbox (`sandbox.py`) and fails the
child, which the parent reports.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.evaluator.evaluation import evaluate_split_counts
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import TaskCatalog

JOB_FILE = "job.json"
DONE_FILE = "done.json"


@dataclass(frozen=True)
class StagedRef:
    slug: str


class StagedSplit:
    """The drawn samples of one split as the evaluator reads a split: images as staged, labels all ignored."""

    def __init__(self, job: Path, entry: dict[str, Any], band_names: list[str]) -> None:
        self.job = job
        self.ref = StagedRef(entry["slug"])
        self.samples = entry["samples"]
        self.band_names = band_names

    def for_inference(self) -> StagedSplit:
        return self

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> dict[str, Any]:
        staged = self.samples[position]
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.load(self.job / staged["image"], allow_pickle=False)),
            "label": torch.full(tuple(staged["label_shape"]), IGNORE_INDEX, dtype=torch.uint8),
            "sample_id": staged["sample_id"], "position": position}
        if staged.get("days"):
            sample["days"] = torch.from_numpy(np.load(self.job / staged["days"], allow_pickle=False))
        return sample


def predict_jobs(job_root: Path, out: Path) -> int:
    """Every staged record's job, in order; `DONE_FILE` once all are written."""
    written = 0
    for job_dir in sorted(job_root.glob("record-*"), key=lambda path: int(path.name.removeprefix("record-"))):
        (out / job_dir.name).mkdir()
        written += predict_job(job_dir, out / job_dir.name)
    (out / DONE_FILE).write_text(json.dumps({"predictions": written}), encoding="utf-8")
    return 0


def predict_job(job_dir: Path, out: Path) -> int:
    """One record's drawn samples predicted into `out`; how many."""
    job = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
    torch.set_num_threads(int(job.get("threads", 1)))
    task = TaskCatalog().tasks[job["task_id"]]
    if task.hash != job["task_hash"]:
        raise RuntimeError(f"task {task.id} in the sandbox is not the parent's (hash {task.hash} ≠ {job['task_hash']})")
    model = ModelSpec(job["adapter"], job["options"], checkpoint=job_dir / job["checkpoint"])
    adapter = model.instantiate()
    adapter.setup(task, job["source_bands"])
    adapter.load(job_dir / job["checkpoint"])
    device = torch.device(job.get("device", "cpu"))
    adapter.to(device)
    written = 0
    for index, entry in enumerate(job["splits"]):
        split = StagedSplit(job_dir, entry, entry["band_names"])

        def keep(sample: dict[str, Any], prediction: torch.Tensor, index: int = index) -> None:
            np.save(out / f"{index}-{sample['position']}.npy", prediction.numpy(), allow_pickle=False)

        evaluate_split_counts(adapter, split, task, device, progress=False,  # type: ignore[arg-type]
                              on_prediction=keep, read_threads=1)
        written += len(split)
    return written


if __name__ == "__main__":
    sys.exit(predict_jobs(Path(sys.argv[1]), Path(sys.argv[2])))
