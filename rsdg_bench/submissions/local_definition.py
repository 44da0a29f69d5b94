"""Judging a submitted record under the maintainer's own task definition, never the copy it carries.

A record holds its task block (class names, which classes the headline averages, the metric convention, the
resolved YAML) and the hash of the definition. The hash alone proves nothing about the block beside it: a
bundle can keep the hash and change the headline classes, then restamp metrics and digest so that every
check made under the record's own block passes. Here the record's block is only *compared* with the
installed task's (`Task.record_block`, found by id), and every stored number is recomputed from the
record's matrices under the installed definition (the `metrics` check), so a forged headline fails twice:
its block is not the installed one, and its numbers are not what the matrices give under the real headline.
"""

from __future__ import annotations

import json

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.protocol.task_schema import Task, TaskCatalog
from rsdg_bench.records.results import ResultRecord, TaskBlock, check_metrics


def _decisive(block: dict) -> dict[str, object]:
    """What in a task block decides a number: the classes, the headline's classes, the primary metric, the
    kind, the metric convention and the ignore handling (display text and fields added later at their
    defaults do not; the hash is the task-versions check's)."""
    metrics = (block.get("resolved") or {}).get("metrics") or {}
    return {"class_names": block.get("class_names"), "headline_classes": block.get("headline_classes"),
            "primary": block.get("primary"), "kind": block.get("kind"),
            "convention": metrics.get("convention", "mmseg"),
            "ignored_pixels": metrics.get("ignored_pixels", "excluded")}


def under_local_definition(record: ResultRecord, catalog: TaskCatalog) -> ResultRecord:
    """The record with its task block replaced by the installed task's (by id): what its numbers are
    recomputed under. A record of a task not installed here is returned as it is (the task-versions check
    fails it)."""
    task = catalog.tasks.get(record.task.id)
    if task is None:
        return record
    return record.model_copy(update={"task": TaskBlock.model_validate(task.record_block())})


def check_metrics_locally(record: ResultRecord, catalog: TaskCatalog, where: str) -> None:
    """Raise unless every stored number is what the record's matrices give under the installed definition."""
    judged = under_local_definition(record, catalog)
    if len(judged.class_names) != len(record.class_names):
        raise RsdgError(f"{where}: {len(record.class_names)} classes; the installed {record.task.id} has "
                        f"{len(judged.class_names)}")
    check_metrics(judged, where)


def check_definition(record: ResultRecord, task: Task, where: str) -> None:
    """Raise RsdgError unless the record's copy of the task block agrees with the installed task in
    everything that decides a number (`_decisive`)."""
    local = _decisive(task.record_block())
    given = _decisive(record.task.model_dump(mode="json"))
    differing = [name for name in local if _canonical(given[name]) != _canonical(local[name])]
    if differing:
        shown = "; ".join(f"{name} {_short(given[name])}, installed {_short(local[name])}" for name in differing)
        raise RsdgError(f"{where}: its copy of {task.id} differs from the installed definition in {shown}")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "…"
