"""The task-kind contract and its registry: one object per kind that knows how a sample of that kind is
read, scored, checked and trained.

Every kind is scored by the same confusion-matrix engine (`rsdg_bench.scoring.metrics`); a kind says only what one
sample contributes, which adapter entry point it calls and how that entry point's output is checked. The
harness (evaluation, training, conformance, the run's record, the task validator) asks the task's kind object
and never branches on the kind's name, so a new kind is one module plus a registration.

The contract lives here, with the tasks, because the task validator needs a kind's facts (its losses, whether
it predicts maps); the built-in kinds live with the evaluator (`rsdg_bench.evaluator.kinds`) and are declared
as entry points of the group `rsdg_bench.kinds` (pyproject.toml), so the schema finds them through `KINDS`
without importing the stage that implements them. Module-level imports stay light (no torch): listing tasks
must not pay for importing torch. The methods that compute import what they need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rsdg_bench.base.errors import TaskError
from rsdg_bench.base.registry import Registry

if TYPE_CHECKING:
    import torch

    from rsdg_bench.models.adapters import Adapter
    from rsdg_bench.protocol.task_data import SegmentationSplit
    from rsdg_bench.protocol.task_schema import Task

SampleScorer = Callable[[dict[str, Any]], tuple["torch.Tensor", "torch.Tensor"]]  # sample → (label, prediction), same shape
# Samples (one loader batch) → their (label, prediction) pairs, in order; predictions may stay on the device.
BatchScorer = Callable[[list[dict[str, Any]]], list[tuple["torch.Tensor", "torch.Tensor"]]]
# Normalizes one sample's image tensor under the adapter's input contract (band selection, float, mean/std).
SampleNormalizer = Callable[["torch.Tensor", dict[str, Any]], "torch.Tensor"]


class TaskKind:
    """One kind of task. Subclasses set the facts and implement the three model-facing steps."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # The adapter method this kind calls (`predict`, `predict_series`, `classify`); named in errors.
    entry_point: ClassVar[str]
    # One 2-D map per sample: the inference options (windows, resize, TTA) apply, and `run --save-predictions`
    # can paint the predictions.
    per_pixel_map: ClassVar[bool] = True
    # Samples carry a place (country, area), so per-place accuracies (`domain_acc`, `worst_domain_acc`) exist.
    grouped: ClassVar[bool] = False
    # Training losses the protocol may name (the Dice loss is per pixel).
    losses: ClassVar[frozenset[str]] = frozenset({"ce", "ce+dice", "ce+smp_dice"})
    # What model selection maximizes.
    selection_metric: ClassVar[str] = "miou"

    def check_task(self, task: Task) -> None:
        """Raise ValueError when the task asks for something this kind cannot do (called by the validator)."""
        if not self.per_pixel_map and task.inference != type(task.inference)():  # options other than the defaults
            raise ValueError(f"inference options (windows, resize, TTA) apply to 2-D maps; a {self.name} task "
                             "is predicted whole: drop `inference:`")
        if task.training is not None and task.training.loss not in self.losses:
            raise ValueError(f"a {self.name} task trains with loss {' or '.join(sorted(self.losses))} "
                             f"(not {task.training.loss!r})")

    def scorer(self, adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
               prepare: SampleNormalizer, window_batch: int = 1) -> SampleScorer:
        """The function that turns one sample into (label, prediction) of the same shape: what a kind
        implements unless it overrides `batch_scorer` (segmentation does, to stack equal-size images)."""
        raise NotImplementedError

    def batch_scorer(self, adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device,
                     prepare: SampleNormalizer, window_batch: int = 1) -> BatchScorer:
        """The function that scores a loader batch of samples. By default one sample at a time (`scorer`);
        a kind whose samples stack into one forward pass overrides it."""
        score = self.scorer(adapter, split, task, device, prepare, window_batch)
        return lambda samples: [score(sample) for sample in samples]

    def training_inputs(self, adapter: Adapter, task: Task, batch: dict[str, Any], band_names: list[str],
                        device: torch.device) -> tuple[torch.Tensor, ...]:
        """The arguments of the kind's entry point for one training batch, on `device`. By default the batch's
        images normalized under the adapter's contract (a kind whose input is not one B×C×H×W batch
        overrides this)."""
        return (adapter.input_contract().prepare(batch["image"].to(device), band_names, where=task.source.slug,
                                                 replicate_single_band=task.inputs.replicate_single_band),)

    def loss_view(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) as the per-pixel losses take them: B×K×H×W and B×H×W for per-pixel kinds, B×K
        and B for per-image ones. By default as the entry point gives them."""
        return logits, labels

    def training_logits(self, adapter: Adapter, task: Task, batch: dict[str, Any], band_names: list[str],
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of one training batch shaped for the loss (`loss_view`), through the entry point."""
        inputs = self.training_inputs(adapter, task, batch, band_names, device)
        return self.loss_view(getattr(adapter, self.entry_point)(*inputs), batch["label"].to(device))

    def map_predictor(self, adapter: Adapter) -> Callable[[torch.Tensor], torch.Tensor]:
        """B×C×H×W → B×K×H×W through this kind's entry point: the one view the conformance checks use."""
        raise NotImplementedError

    def sample_groups(self, split: SegmentationSplit, task: Task) -> list[str] | None:
        """Each sample's place, for per-place metrics (None when the kind has none)."""
        return split.groups(task.metrics.groups) if self.grouped else None


KINDS: Registry[TaskKind] = Registry("task kind", "rsdg_bench.kinds", TaskError, store=lambda cls: cls())
DEFAULT_KIND = "segmentation"  # what a task that names no kind is


def register_kind(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: make a task kind available under its `name` (one instance per kind)."""
    return KINDS.register(cls)


def get_kind(name: str) -> TaskKind:
    return KINDS.get(name)


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS.names())
