"""Building a result record from what evaluating a split counted: the one constructor `run` (a model's
predictions), `score` (prediction maps) and the benches use. Needs no torch: scoring files loads no model stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rsdg_bench.datasets.prepared import DatasetCard
from rsdg_bench.protocol.kind import get_kind
from rsdg_bench.protocol.task_schema import Role, Task
from rsdg_bench.records.results import (
    SCHEMA_VERSION,
    EvaluatedSplit,
    ModelBlock,
    ProvenanceBlock,
    ResultRecord,
    SampleIndex,
    TaskBlock,
    encode_per_image,
    metrics_block,
    provenance,
)
from rsdg_bench.scoring.split_counts import SplitCounts

if TYPE_CHECKING:
    from rsdg_bench.protocol.task_data import SegmentationSplit


@dataclass(frozen=True)
class RunContext:
    """Where and how the counts were made, as a record's provenance states it."""

    device: str = "cpu"
    world_size: int = 1
    torch_version: str | None = None  # None: no model ran in this process (`score` counts prediction files)
    limit: int | None = None  # a smoke run's sample limit (such records never reach a leaderboard)


def record_from_evaluation(*, key: str, task: Task, model: dict[str, Any], normalization: dict[str, Any], role: Role,
                           split: SegmentationSplit, card: DatasetCard, manifest_sha256: str, counts: SplitCounts,
                           predictions: list[dict[str, str]] | None, context: RunContext,
                           wall_time_s: float) -> ResultRecord:
    """The one constructor of a result record: what was evaluated (task, `model_block`, data, the input
    normalization) and what it counted, with the metrics computed from those counts. `run` and `score`
    (prediction maps) both build their records here."""
    ref = split.ref
    class_names = task.class_schema.names
    headline = task.headline_class_indices()
    matrix = counts.matrix().tolist()
    counts_ignored = task.metrics.ignored_pixels == "error"
    ignored = counts.ignored.total().tolist() if counts_ignored else None
    encoded = encode_per_image(counts.per_image, counts.ignored if counts_ignored else None)
    groups = get_kind(task.kind).sample_groups(split, task)
    scenes, scene_unit = split.scenes()
    return ResultRecord(
        schema_version=SCHEMA_VERSION, key=key,
        task=TaskBlock.model_validate(task.record_block()),
        model=ModelBlock.model_validate(model),
        evaluated=EvaluatedSplit(role=role, dataset=ref.dataset, domain=ref.domain, split=ref.split,
                                 num_samples=len(split),
                                 published_samples=card.published_counts.get(ref.domain, {}).get(ref.split),
                                 accepted_samples=card.accepted_counts(ref.domain, ref.split)[1:]),
        metrics={ref.slug: metrics_block(matrix, class_names, headline, encoded, groups, task.metrics.convention,
                                         ignored)},
        confusion_matrices={ref.slug: matrix}, per_image_matrices={ref.slug: encoded},
        groups={ref.slug: groups} if groups is not None else {},
        samples={ref.slug: SampleIndex(ids=[str(i) for i in split.rows["sample_id"]], scenes=scenes,
                                       scene_unit=scene_unit)},
        ignored_predictions={ref.slug: ignored} if ignored is not None else {},
        predictions={ref.slug: predictions} if predictions is not None else {},
        inference=task.inference.model_dump(mode="json"),
        normalization=normalization,
        smoke={"limit": context.limit} if context.limit is not None else None,
        provenance=ProvenanceBlock.model_validate(provenance(task_hash=task.hash, manifest_sha256=manifest_sha256,
                              checkpoint_sha256=model["checkpoint"].get("sha256"),
                              device=context.device, world_size=context.world_size,
                              torch_version=context.torch_version, wall_time_s=wall_time_s,
                              date=datetime.now(UTC).isoformat(timespec="seconds"), execution=counts.execution)),
    )
