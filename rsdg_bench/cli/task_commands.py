"""`tasks`: list, show and validate the task YAMLs, print their JSON Schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rsdg_bench.base.errors import RsdgError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list, show, validate tasks; print the task JSON Schema",
                       description="Tasks are YAML protocols (source -> targets). `validate` with file paths checks "
                                   "your own YAMLs; without, it checks every installed task and suite.")
    p.add_argument("action", choices=["list", "show", "validate", "schema"])
    p.add_argument("ids", nargs="*", help="task ids (show) or YAML files (validate)")
    p.add_argument("--suite", help="list only this suite's tasks")
    p.set_defaults(func=cmd_tasks)



def _require_known_places(tasks, where: str) -> None:
    """Refuse tasks whose splits name a dataset or domain that does not exist (a typo passes the schema)."""
    from rsdg_bench.protocol.task_places import unknown_places

    problems = [line for task in tasks for line in unknown_places(task)]
    if problems:
        raise RsdgError(f"{len(problems)} split(s) {where} name no existing place:\n  " + "\n  ".join(problems),
                        "fix the dataset/domain names (`rsdg-bench prepare --list` shows the datasets)")


def cmd_tasks(args: argparse.Namespace) -> int:
    from rsdg_bench.protocol.task_schema import TaskCatalog, load_task_file, task_json_schema

    if args.action == "schema":
        print(json.dumps(task_json_schema(), indent=2))
        return 0
    if args.action == "validate" and args.ids:
        loaded = {}
        for path in args.ids:
            if Path(path).name.startswith("_"):
                print(f"skip {path}  (an include fragment: checked through the tasks that include it)")
            else:
                loaded[path] = load_task_file(Path(path))
        _require_known_places(loaded.values(), f"in {', '.join(args.ids)}")
        for path, task in loaded.items():
            print(f"ok  {path}  ({task.id}, hash {task.hash[:12]})")
        return 0
    catalog = TaskCatalog()
    if args.action == "validate":
        _require_known_places(catalog.tasks.values(), "in the task catalog")
        print(f"ok  {len(catalog.tasks)} tasks and {len(catalog.suites)} suites are valid")
        return 0
    if args.action == "show":
        if not args.ids:
            raise RsdgError("tasks show needs a task id", "e.g. rsdg-bench tasks show demo/u2a")
        for task_id in args.ids:
            task = catalog.task(task_id)
            print(f"# {catalog.task_files[task.id]}\n# hash {task.hash}")
            print(json.dumps(task.model_dump(mode="json"), indent=2))
        return 0
    tasks = catalog.suite_tasks(args.suite) if args.suite else [catalog.tasks[t] for t in sorted(catalog.tasks)]
    for task in tasks:
        targets = ", ".join(t.slug for t in task.targets)
        print(f"{task.id:22s} {task.name:12s} {task.gap:20s} {task.source.slug} -> {targets}")
    if not args.suite and catalog.suites:
        print("\nsuites: " + ", ".join(f"{s.id} ({len(s.tasks)} tasks)" for s in catalog.suites.values()))
    return 0
