"""How a backbone preset is put to a task: the protocols (linear probe, frozen or fine-tuned UPerNet, LoRA) as data.

Each protocol is a versioned YAML file in the task catalog's `protocols/` folder: what trains (`encoder`: frozen,
full or lora), the decoder (`head`: linear or upernet), whether a frozen encoder's features are cached, LoRA's
rank, and the training values it sets over the task's `training:` block (optimizer, learning rate, weight decay,
schedule; iterations too where it gives them). Everything else (crop, batch, iterations, augmentation, seed) is
the task's, so presets are compared under one data protocol. The protocol's name and version go into the
model's identity, hence into every record and checkpoint name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.yaml_load import load_yaml
from rsdg_bench.protocol.task_schema import TrainingSpec, package_tasks_dir

# The training fields a protocol may set; the task keeps the rest (its data protocol).
PROTOCOL_TRAINING_FIELDS = frozenset({"optimizer", "lr", "weight_decay", "schedule", "final_lr", "decay_fraction",
                                      "schedule_iterations", "schedule_step", "iterations", "epochs"})
# The values that belong to a schedule: a protocol that names its schedule takes these at their defaults unless it
# gives them, so the same protocol decays the same way on every task (not over a task's own horizon or epochs).
_SCHEDULE_DEFAULTS = {"final_lr": None, "decay_fraction": 1.0, "schedule_iterations": None, "schedule_step": "iteration"}


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(gt=0)
    alpha: int = Field(gt=0)  # no dropout: the adapted encoder runs in eval mode (its pretrained statistics)


class EncoderProtocol(BaseModel):
    """One protocol file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    description: str
    encoder: Literal["frozen", "full", "lora"]
    head: Literal["linear", "upernet"]
    cache_features: bool = False
    lora: LoraSpec | None = None
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("training")
    @classmethod
    def _known_training_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - PROTOCOL_TRAINING_FIELDS
        if unknown:
            raise ValueError(f"a protocol sets only {sorted(PROTOCOL_TRAINING_FIELDS)} of the training block, not "
                             f"{sorted(unknown)} (those are the task's)")
        return value

    def model_post_init(self, context: Any) -> None:
        if (self.encoder == "lora") != (self.lora is not None):
            raise ValueError("`lora:` goes with `encoder: lora`, and only with it")
        if self.cache_features and self.encoder != "frozen":
            raise ValueError("only a frozen encoder's features can be cached")

    def apply(self, spec: TrainingSpec) -> TrainingSpec:
        """The task's training protocol with this protocol's values over it, validated as a task's is."""
        changes = dict(self.training)
        if "iterations" in changes:
            changes.setdefault("epochs", None)
        if "epochs" in changes:
            changes.setdefault("iterations", None)
        if "schedule" in changes:
            changes = {**_SCHEDULE_DEFAULTS, **changes}
        try:
            return TrainingSpec.model_validate({**spec.model_dump(), **changes})
        except ValidationError as exc:
            raise AdapterError(f"protocol {self.name} gives an invalid training block over the task's: {exc}") from exc


def protocols_folder() -> Path:
    return package_tasks_dir() / "protocols"


@cache
def load_protocols() -> dict[str, EncoderProtocol]:
    """Every protocol file, by name; a malformed one is an error naming the file."""
    protocols: dict[str, EncoderProtocol] = {}
    for path in sorted(protocols_folder().glob("*.yaml")):
        try:
            protocol = EncoderProtocol.model_validate(load_yaml(path.read_text(encoding="utf-8")))
        except (ValidationError, ValueError, yaml.YAMLError) as exc:
            raise AdapterError(f"protocol file {path} is malformed: {exc}",
                               "fix the file; see docs/foundation-models.md") from exc
        if protocol.name != path.stem:
            raise AdapterError(f"protocol file {path} names itself {protocol.name!r}", f"name it {path.stem!r}, as its file")
        protocols[protocol.name] = protocol
    return protocols


def get_protocol(name: str) -> EncoderProtocol:
    protocols = load_protocols()
    if name not in protocols:
        raise AdapterError(f"no protocol {name!r}", f"use one of: {', '.join(sorted(protocols))}")
    return protocols[name]
