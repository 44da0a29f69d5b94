"""Check that every split a task reads names a place that exists: a dataset rsdg-bench can prepare and one of
its domains. (Split names are not checked here: preparers do not declare every split they write; a wrong one
fails when a run opens it, naming the splits that exist.)

A misspelt domain passes the task schema (it is a well-formed name) and would only fail when a run opens the
prepared data, after minutes of work; `tasks validate` catches it here, from the preparers' class attributes
alone (nothing is prepared or read).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rsdg_bench.protocol.task_schema import SplitRef, Task

if TYPE_CHECKING:
    from rsdg_bench.prep import Preparer


def unknown_places(task: Task) -> list[str]:
    """One line per split of `task` that names an unknown dataset or domain; empty when all exist."""
    from rsdg_bench.prep import available_preparers

    preparers = available_preparers()
    problems = []
    for ref in task.splits():
        problem = _unknown_place(ref, preparers)
        if problem:
            problems.append(f"{task.id}: {ref.slug}: {problem}")
    return problems


def _unknown_place(ref: SplitRef, preparers: dict[str, type[Preparer]]) -> str | None:
    if ref.dataset not in preparers:
        return f"no dataset {ref.dataset!r}{_suggest(ref.dataset, preparers)} (datasets: {', '.join(preparers)})"
    preparer = preparers[ref.dataset]
    if ref.domain not in preparer.domains:
        return (f"{ref.dataset} has no domain {ref.domain!r}{_suggest(ref.domain, preparer.domains)} "
                f"(its domains: {', '.join(preparer.domains)})")
    return None


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
