"""How the weights behind a record were trained, against the task's protocol.

`rsdg-bench train` writes its training block into the checkpoint (`rsdg`: task, task hash, the training
spec as run, selection, seed, ...). `run` copies that block into each record's `model.training` with a
verdict, so a checkpoint trained for 60 iterations where the protocol says 1500 is never ranked unmarked
beside a full-protocol run:

- `protocol`: every field of the task's protocol that can move a number (iterations, batch size, optimizer,
  learning rate, weight decay, schedule and how it steps, loss, crop, augmentation) is what the checkpoint
  was trained with (a field a checkpoint predates counts at its default, the only value it could have had);
- `off-protocol`: at least one differs (`differences` names each, with the protocol's value);
- `unknown`: the checkpoint carries no training block (released or external weights): nothing says how
  it was trained;
- `no protocol`: the task defines no `training:`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rsdg_bench.protocol.label_subsets import labelled_count
from rsdg_bench.protocol.task_schema import Task, TrainingSpec, later_defaults

PROTOCOL_FIELDS = ("iterations", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "final_lr",
                   "decay_fraction", "schedule_step", "schedule_iterations", "loss", "crop", "augment", "label_fraction")
KEPT_FIELDS = (*PROTOCOL_FIELDS, "epochs", "seed", "architecture", "val_interval")
BADGES = {"off-protocol": "off-protocol", "unknown": "training unknown"}


def read_training_block(checkpoint: Path) -> dict[str, Any] | None:
    """The `rsdg` block a harness-trained checkpoint carries, or None. Tensors are memory-mapped, not read:
    a large released checkpoint costs no extra memory."""
    import torch  # here, not at module level: the leaderboard reads badges without torch

    from rsdg_bench.models.checkpoints import is_safetensors

    if is_safetensors(Path(checkpoint)):
        return _safetensors_block(Path(checkpoint))
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a legacy (non-zip) file cannot be mapped, a foreign one has no block: no record of training
        return None
    block = payload.get("rsdg") if isinstance(payload, dict) else None
    return block if isinstance(block, dict) else None


def _safetensors_block(checkpoint: Path) -> dict[str, Any] | None:
    """The training block `train` puts in a safetensors file's metadata (JSON), or None; no tensor is read."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(checkpoint), framework="pt") as handle:
            text = (handle.metadata() or {}).get("rsdg")
        block = json.loads(text) if text else None
    except (SafetensorError, OSError, ValueError):
        return None
    return block if isinstance(block, dict) else None


def training_provenance(task: Task, block: dict[str, Any] | None, source_samples: int,
                        protocol_spec: TrainingSpec | None = None) -> dict[str, Any]:
    """The record's `model.training`: the checkpoint's training block and its verdict against the task's
    protocol, or against `protocol_spec` where the model trains under its own values over the task's (a backbone
    preset's protocol: `Adapter.training_protocol`); epochs counted as iterations over `source_samples`, as
    `train` does."""
    if task.training is None:
        return {"status": "no protocol"}
    if block is None or not isinstance(block.get("training"), dict):
        return {"status": "unknown", "why": "the checkpoint carries no rsdg-bench training record "
                                            "(released or external weights)"}
    trained = block["training"]
    spec = protocol_spec or task.training
    protocol = spec.model_dump(mode="json")
    protocol["iterations"] = spec.total_iterations(labelled_count(source_samples, spec.label_fraction))
    trained = {**later_defaults("training"), **trained}  # an older block lacks the fields added since
    differences = [f"{name} {trained.get(name)} (protocol {protocol[name]})" for name in PROTOCOL_FIELDS
                   if trained.get(name) != protocol[name]]
    return {
        "status": "off-protocol" if differences else "protocol", "differences": differences,
        "trained_for": block.get("task_id"), "task_hash": block.get("task_hash"),
        "selection": block.get("selection"), "date": block.get("date"),
        **{name: trained.get(name) for name in KEPT_FIELDS if name in trained},
        "protocol_iterations": protocol["iterations"],
        **({"objective": block["objective"]} if block.get("objective") else {}),
        **({"label_subset": block["label_subset"]} if block.get("label_subset") else {}),
    }


def badge(training: dict[str, Any] | None) -> tuple[str, str] | None:
    """(short text, explanation) for a record's training status when it is not the full protocol: what the
    leaderboard shows beside the model; None for a full-protocol run or a task without protocol. A record
    made before training was recorded (None) is `unknown`."""
    if training is None:
        training = {"status": "unknown", "why": "the record predates training provenance"}
    if training.get("status") not in BADGES:
        return None
    status = training["status"]
    detail = "; ".join(training.get("differences", [])) if status == "off-protocol" else training.get("why", "")
    return BADGES[status], detail
