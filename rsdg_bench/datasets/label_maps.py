"""Label maps: re-expressing one class schema in another, as data in `tasks/label_maps/<id>.yaml`.

Some protocols judge a model in a class space that is not the target dataset's own: CrossEarth scores
Potsdam→RescueNet in 5 classes (its Table 12) and LoveDA→OpenEarthMap in LoveDA's 7 (Table 13). The
prepared data keeps each dataset's native classes; a task names a label map on the split that needs
one, and `TaskData` applies it when reading labels. A map is *total*: every class of `from` appears
exactly once, mapped to a class of `to` or to `ignore`. Its content is part of the task hash, so an
edit to a map changes every number's key that depends on it.
"""

from __future__ import annotations

from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rsdg_bench.base.errors import TaskError
from rsdg_bench.base.yaml_load import load_yaml
from rsdg_bench.datasets.classes import IGNORE_INDEX, load_class_schema

if TYPE_CHECKING:  # numpy is imported where a label is mapped: reading tasks need not pay for it
    import numpy as np

IGNORE = "ignore"


class LabelMap(BaseModel):
    """`mapping[source class name] = target class name | "ignore"`, checked against both schemas."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    id: str
    description: str = ""
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    mapping: dict[str, str]

    @model_validator(mode="after")
    def _total_and_known(self) -> LabelMap:
        source_names = load_class_schema(self.source).names
        target_names = set(load_class_schema(self.target).names) | {IGNORE}
        missing = [n for n in source_names if n not in self.mapping]
        unknown = [n for n in self.mapping if n not in source_names]
        bad_targets = sorted({t for t in self.mapping.values() if t not in target_names})
        problems = []
        if missing:
            problems.append(f"source classes {missing} are not mapped (a map must be total)")
        if unknown:
            problems.append(f"{unknown} are not classes of {self.source!r}")
        if bad_targets:
            problems.append(f"targets {bad_targets} are neither classes of {self.target!r} nor {IGNORE!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def lookup(self) -> np.ndarray:
        """A 256-entry uint8 table: source label value → target label value (255 stays 255)."""
        import numpy as np

        source, target = load_class_schema(self.source), load_class_schema(self.target)
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for index, name in enumerate(source.names):
            mapped = self.mapping[name]
            table[index] = IGNORE_INDEX if mapped == IGNORE else target.index_of(mapped)
        return table

    def apply(self, label: np.ndarray) -> np.ndarray:
        """The label in the target schema (values outside the source classes become ignore)."""
        mapped: np.ndarray = self.lookup[label]
        return mapped


def label_maps_dir() -> Path:
    return Path(str(resources.files("rsdg_bench.tasks"))) / "label_maps"


@cache
def load_label_map(map_id: str) -> LabelMap:
    """Read and check `tasks/label_maps/<map_id>.yaml`."""
    path = label_maps_dir() / f"{map_id}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in label_maps_dir().glob("*.yaml"))
        raise TaskError(f"unknown label map {map_id!r}", f"use one of: {', '.join(known) or '(none)'}")
    try:
        data = load_yaml(path.read_text())
        label_map = LabelMap.model_validate(data)
    except (ValidationError, yaml.YAMLError) as exc:
        raise TaskError(f"label map {path} is malformed: {exc}", "fix the YAML; every source class needs one entry") from exc
    if label_map.id != map_id:
        raise TaskError(f"label map {path} has id {label_map.id!r}", f"its id must be the file name, {map_id!r}")
    return label_map
