"""Errors a user can act on.

Every error the harness raises for bad input says two things: what is wrong (naming the file, key or
value) and how to fix it. The CLI prints both and exits non-zero without a traceback.
"""

from __future__ import annotations


class RsdgError(Exception):
    """Base class: a problem the user can fix, with the fix spelled out."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem}\n  fix: {self.fix}"


class DataError(RsdgError):
    """Raw or prepared data is missing, incomplete or not what it claims to be."""


class TaskError(RsdgError):
    """A task or suite YAML is malformed, unknown or inconsistent."""


class AdapterError(RsdgError):
    """A model adapter cannot be found, loaded, or broke its contract."""


class SplitAccessError(RsdgError):
    """Code asked for a split it must not see (a target split during training)."""


class ResultsError(RsdgError):
    """A result record is malformed or does not agree with its own confusion matrices."""


class SubmissionError(RsdgError):
    """Prediction maps or a submission bundle are malformed, incomplete or do not match the tasks and data."""
