"""Reading prepared samples for a task, with the door to target splits shut during training.

`TaskData` is the only way the trainer and the evaluator reach prepared data. Opened for training it
serves the task's source and selection splits and raises SplitAccessError for anything else, so a
model cannot be tuned on the domains it is judged on. Every split it opens is logged in `opened`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import numpy as np

from rsdg_bench.base.errors import DataError, SplitAccessError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.label_maps import LabelMap, load_label_map
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.protocol.label_subsets import restrict_to_labelled
from rsdg_bench.protocol.task_schema import SplitRef, Task

Phase = Literal["train", "evaluate"]


class SegmentationSplit:
    """The samples of one dataset/domain/split: `image` (C×H×W float32, stored units; only `bands`, in that
    order, when given), `label` (H×W uint8, through the split's label map when it has one); `groups()` gives
    each sample's place.

    Time-series data (`timesteps` on the card) gives `image` T×C×H×W, `label` T×H×W and `days` (T int64:
    days since the first date of the series); image-level data gives `label` as a 0-d uint8 (the class).

    With `labelled=False` no label is read: `label` is all ignore, in the label's shape (for `predict`, which
    needs the inputs only, also of splits whose labels are not public).

    A map-style dataset as torch's DataLoader takes it (`len` and `[index]`, samples as tensors); opening a
    split, its rows and `label(index)` need no torch (`score` reads labels only), so torch is imported where a
    sample is served, and `isinstance(split, torch.utils.data.Dataset)` holds for `split_dataset.SplitDataset`
    (what `rsdg_bench.open_split` returns), not for this class.
    """

    def __init__(self, prepared: PreparedDataset, ref: SplitRef, limit: int | None = None,
                 label_map: LabelMap | None = None, bands: tuple[str, ...] | None = None,
                 labelled: bool = True) -> None:
        self.prepared = prepared
        self.labelled = labelled
        self.ref = ref
        self.label_map = label_map
        rows = prepared.rows(ref.domain, ref.split)
        self.rows = rows.head(limit) if limit is not None else rows
        stored = prepared.band_names(ref.domain)
        self.band_indices = select_bands(stored, bands, ref.slug)
        self.band_names = [stored[i] for i in self.band_indices] if self.band_indices is not None else stored
        self.keep_uint8 = False  # see `for_inference`
        self.timesteps = list(prepared.card.timesteps)
        self.days = np.asarray(days_since_first(self.timesteps), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def groups(self, level: str = "group") -> list[str]:
        """Each sample's place, in order: its group, or with `level="region"` the region the card puts the
        group in. A dataset without groups is one group named after the domain; "" is no place (a sample
        without a group, or WILDS's catch-all region "Other"), left out of per-place scores."""
        column = self.rows["group"] if "group" in self.rows.columns else [None] * len(self.rows)
        names = [str(g) if isinstance(g, str) else self.ref.domain if g is None else "" for g in column]
        if level == "region":
            regions = self.prepared.card.group_regions
            names = [regions.get(name, "") for name in names]
            names = ["" if name == "Other" else name for name in names]
        return names

    def scenes(self) -> tuple[list[str], str]:
        """Each sample's scene, in order, and what a scene is here: the sample's group (the city, area or
        country the card names) where the manifest has one, else its source file (the tile or area a window
        was cut from). A bootstrap resamples scenes, because windows of one scene are not independent."""
        if "group" in self.rows.columns and self.rows["group"].notna().all():
            scenes, unit = [str(g) for g in self.rows["group"]], "place"
        else:
            scenes, unit = [str(s) for s in self.rows["source_file"]], "source file"
        if len(set(scenes)) == len(scenes):
            unit = "image"
        return scenes, unit

    def for_inference(self) -> SegmentationSplit:
        """This split serving uint8 images as uint8 (other dtypes as float32, as always): the evaluator's
        view. The input contract converts to float32 before normalizing, so every number is the same, and a
        DataLoader worker hands over a quarter of the bytes."""
        view = copy.copy(self)
        view.keep_uint8 = True
        return view

    def label(self, index: int) -> np.ndarray:
        """The label of one sample alone (through the split's label map), without decoding its image."""
        return self._label_of(self.rows.iloc[index])

    def _label_of(self, row: Any) -> np.ndarray:
        label = self.prepared.read_label(row)
        return self.label_map.apply(label) if self.label_map is not None else label

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        row = self.rows.iloc[index]
        image = self.prepared.read_image(row)
        if self.timesteps:
            image = image.reshape(len(self.timesteps), -1, *image.shape[-2:])
        if self.band_indices is not None:
            image = image[..., self.band_indices, :, :]
        if self.labelled:
            label = self._label_of(row)  # the row already looked up (`label(index)` would look it up again)
        else:
            shape = () if self.prepared.card.label_level == "image" else image.shape[:-3] + image.shape[-2:]
            label = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        if not (self.keep_uint8 and image.dtype == np.uint8):
            image = image.astype(np.float32)
        sample = {"image": torch.from_numpy(image), "label": torch.from_numpy(np.asarray(label)),
                  "sample_id": row["sample_id"]}
        if self.timesteps:
            sample["days"] = torch.from_numpy(self.days)
        return sample


SplitT = TypeVar("SplitT", bound=SegmentationSplit)


def days_since_first(dates: list[str]) -> list[int]:
    """Day offsets of ISO dates from the first one (the temporal position a time-series model encodes)."""
    if not dates:
        return []
    parsed = [date.fromisoformat(d) for d in dates]
    return [(d - parsed[0]).days for d in parsed]


def select_bands(stored: list[str], wanted: tuple[str, ...] | None, where: str) -> list[int] | None:
    """Indices of the `wanted` bands among the `stored` ones (None: keep all); a missing band is an error."""
    if wanted is None:
        return None
    missing = [b for b in wanted if b not in stored]
    if missing:
        raise DataError(f"{where} has no band {', '.join(missing)} (it stores {', '.join(stored)})",
                        "fix `inputs.bands` in the task, or prepare the dataset with those bands")
    return [stored.index(b) for b in wanted]


@dataclass
class TaskData:
    """Opens a task's splits by reference, enforcing which ones a phase may see."""

    data_root: Path
    task: Task
    phase: Phase
    opened: list[str] = field(default_factory=list)
    # the share of the source split a label-efficiency protocol trains on, once the source is opened for training
    label_subset: dict[str, Any] | None = None
    _datasets: dict[str, PreparedDataset] = field(default_factory=dict, repr=False)

    def allowed(self, ref: SplitRef) -> bool:
        if self.phase == "evaluate":
            return True
        return ref == self.task.source or ref == self.task.select

    def prepared(self, dataset: str) -> PreparedDataset:
        if dataset not in self._datasets:
            self._datasets[dataset] = PreparedDataset.open(self.data_root, dataset)
        return self._datasets[dataset]

    @overload
    def open(self, ref: SplitRef, limit: int | None = None, labelled: bool = True) -> SegmentationSplit: ...

    @overload
    def open(self, ref: SplitRef, limit: int | None = None, labelled: bool = True, *,
             split_type: type[SplitT]) -> SplitT: ...

    def open(self, ref: SplitRef, limit: int | None = None, labelled: bool = True,
             split_type: type[SegmentationSplit] = SegmentationSplit) -> SegmentationSplit:
        """A split of the task; `labelled=False` reads inputs only (and so may open a split whose labels
        are not public). `split_type` is `SegmentationSplit` or a subclass (`split_dataset.SplitDataset`, a torch
        `Dataset` proper, for the public API)."""
        if not self.allowed(ref):
            raise SplitAccessError(
                f"task {self.task.id}: training may read only the source ({self.task.source.slug}) and selection "
                f"({self.task.select.slug if self.task.select else 'none'}) splits, not {ref.slug}",
                "targets are for evaluation only; select models on the source domain",
            )
        prepared = self.prepared(ref.dataset)
        if labelled and f"{ref.domain}/{ref.split}" in prepared.card.unlabelled:
            raise DataError(f"task {self.task.id}: {ref.slug} has no public labels (the release gives its inputs only)",
                            "score on a labelled split; predictions for unlabelled splits go to the contest server")
        label_map = self._label_map_for(ref, prepared)
        self.opened.append(ref.slug)
        split = split_type(prepared, ref, limit, label_map, self.task.inputs.bands, labelled)
        if self.phase == "train" and ref == self.task.source and self.task.training is not None:
            # every door training code uses (`train`, `rsdg_bench.open_split`) sees only the protocol's labels
            self.label_subset = restrict_to_labelled(split, self.task.training.label_fraction)
        return split

    def band_names(self, ref: SplitRef) -> list[str]:
        """The bands a split reaches the model with: the task's `inputs.bands`, or all stored ones."""
        stored = self.prepared(ref.dataset).band_names(ref.domain)
        indices = select_bands(stored, self.task.inputs.bands, ref.slug)
        return stored if indices is None else [stored[i] for i in indices]

    def _label_map_for(self, ref: SplitRef, prepared: PreparedDataset) -> LabelMap | None:
        """The split's label map, after checking that it joins the dataset's classes to the task's."""
        native = prepared.card.classes_of(ref.domain).id
        label_map = load_label_map(ref.label_map) if ref.label_map else None
        expected = label_map.source if label_map else self.task.classes
        if native != expected:
            fix = (f"the label map {ref.label_map!r} expects {label_map.source!r} labels" if label_map else
                   f"add `label_map:` to {ref.slug} in the task, mapping {native!r} to {self.task.classes!r}")
            raise DataError(f"task {self.task.id}: {ref.slug} holds {native!r} labels, the task needs "
                            f"{self.task.classes!r}", fix)
        return label_map
