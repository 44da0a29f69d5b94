"""Class schemas: the label space a task predicts, with names and display colours.

A schema lives in `tasks/classes/<id>.yaml`. Index i of `classes` is label value i in prepared data;
255 is always "ignore". Colours are the dataset's own palette where it has one, so prediction maps
look like the paper's figures.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rsdg_bench.base.errors import TaskError
from rsdg_bench.base.yaml_load import load_yaml

IGNORE_INDEX = 255


class ClassInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    colour: tuple[int, int, int]
    short: str | None = None  # the abbreviation the papers' tables print (CrossEarth's "Bldg"), for display

    @field_validator("colour")
    @classmethod
    def _in_byte_range(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in value):
            raise ValueError(f"colour {value} has a channel outside 0..255")
        return value


class ClassSchema(BaseModel):
    """An ordered list of classes; the order is the label encoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    description: str = ""
    ignore_index: int = IGNORE_INDEX
    classes: tuple[ClassInfo, ...] = Field(min_length=1, max_length=255)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def display_name(self, name: str) -> str:
        """How a table heads a class: the papers' abbreviation where the schema gives one, else its name
        with spaces."""
        info = next((c for c in self.classes if c.name == name), None)
        return info.short if info is not None and info.short else name.replace("_", " ")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise TaskError(
                f"class {name!r} is not in class schema {self.id!r}",
                f"use one of: {', '.join(self.names)}",
            ) from None


@cache
def load_class_schema(schema_id: str) -> ClassSchema:
    """Read `tasks/classes/<schema_id>.yaml` from the installed package."""
    folder = Path(str(resources.files("rsdg_bench.tasks"))) / "classes"
    path = folder / f"{schema_id}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise TaskError(f"unknown class schema {schema_id!r}", f"use one of: {', '.join(known)}")
    try:
        return ClassSchema.model_validate(load_yaml(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise TaskError(f"class schema file {path} is malformed: {exc}", "fix the YAML") from exc
