"""Synthetic but valid result records at a suite's published split sizes, for the benches that need many
(`verify_bundle.py`, `leaderboard_scale.py`). Each record goes through `record_building.record_from_evaluation`, the
constructor `run` uses, so it passes every check a real one does; its per-image matrices have about 2K
non-zero cells per image (K classes), so records are as large as real ones."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

from rsdg_bench.models.code_identity import code_identity
from rsdg_bench.models.registry import resolve_adapter
from rsdg_bench.prep import available_preparers
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.record_building import RunContext, record_from_evaluation
from rsdg_bench.records.results import ResultStore
from rsdg_bench.scoring.sparse_counts import SparseCountRows
from rsdg_bench.scoring.split_counts import SplitCounts


class SyntheticSplit:
    """What the record constructor reads of a split: its reference, sample ids and scenes (16 per tile)."""

    def __init__(self, ref, images: int) -> None:
        self.ref = ref
        self.rows = pd.DataFrame({"sample_id": [f"img{i:06d}" for i in range(images)]})

    def __len__(self) -> int:
        return len(self.rows)

    def scenes(self) -> tuple[list[str], str]:
        return [f"tile{i // 16:04d}" for i in range(len(self))], "source file"


def published(dataset: str, domain: str, split: str) -> int:
    """The split's published size (500 where the preparer does not state one)."""
    counts = available_preparers()[dataset].published_counts
    return counts.get(domain, {}).get(split) or 500


def write_records(results: Path, suite: str, models: list[str], seed: int = 0) -> int:
    """One record per model × task × evaluated split of `suite` into `results`; returns how many."""
    generator = torch.Generator().manual_seed(seed)
    code = code_identity(resolve_adapter("smp"))
    store, written = ResultStore(results), 0
    for number, name in enumerate(models):
        model = {"adapter": "smp", "options": {}, "code": code, "display_name": name,
                 "checkpoint": {"path": None, "sha256": f"{number:064x}", "random_init": False},
                 "training": {"status": "unknown"}}
        for task in TaskCatalog().suite_tasks(suite):
            k = task.class_schema.num_classes
            for role, ref in task.evaluation_splits():
                images = published(ref.dataset, ref.domain, ref.split)
                counts = torch.randint(0, 5000, (images, k, k), generator=generator)
                counts *= torch.rand(images, k, k, generator=generator) < 2 / k
                card = SimpleNamespace(published_counts={}, accepted_counts=lambda d, s, n=images: [n])
                store.write(record_from_evaluation(
                    key=f"{number:04d}-{role}-{ref.domain}-{ref.split}", task=task, model=model, normalization={},
                    role=role, split=SyntheticSplit(ref, images), card=card, manifest_sha256="cd" * 32,
                    counts=SplitCounts(SparseCountRows.from_dense(counts), SparseCountRows(images, k)),
                    predictions=None, context=RunContext(torch_version=torch.__version__), wall_time_s=1.0))
                written += 1
    return written
