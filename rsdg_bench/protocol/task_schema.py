"""Task and suite YAMLs: one typed schema, strict on unknown keys, versioned and hashed.

A task is one source→target protocol (see DESIGN.md). YAMLs live in the installed `rsdg_bench.tasks`
package (`tasks/` in the repo) and in any folder listed in `$RSDG_TASK_PATH` (os.pathsep-separated).
Files starting with `_` are shared defaults, pulled in with `include: _defaults.yaml` (a path relative to
the including file, or a list of them; the including file wins, mappings merge key by key).

The task hash is the sha256 of the resolved task without its display-only fields (`name`,
`description`, `reference`): anything else can move a number, so any change to it changes the hash.
"""

from __future__ import annotations

import copy
import difflib
import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from rsdg_bench.base.errors import TaskError
from rsdg_bench.base.io import canonical_json, sha256_bytes
from rsdg_bench.base.paths import SAFE_NAME
from rsdg_bench.base.yaml_load import load_yaml
from rsdg_bench.datasets.classes import ClassSchema, load_class_schema
from rsdg_bench.datasets.label_maps import load_label_map
from rsdg_bench.protocol.kind import DEFAULT_KIND, KINDS, get_kind, kind_names
from rsdg_bench.protocol.metric_table import BY_NAME, CONVENTION_NAMES, CONVENTIONS, DEFAULT_CONVENTION, PER_PLACE_NAMES

if TYPE_CHECKING:  # for the type checker a name; for pydantic (at run time) the table's names, checked
    MetricName = str
    ConventionName = str
else:
    MetricName = Literal[tuple(BY_NAME)]  # the metric table's names (`metric_table.METRICS`)
    ConventionName = Literal[CONVENTION_NAMES]  # the registered conventions
_GROUP_METRICS = set(PER_PLACE_NAMES)  # need the samples' groups (a kind that is `grouped`)
_DISPLAY_ONLY = {"name", "description", "reference"}
_NOT_TASK_DIRS = {"classes", "suites", "label_maps", "protocols"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitRef(_Strict):
    """One split of one domain of one prepared dataset, optionally read through a label map."""

    dataset: str = Field(pattern=SAFE_NAME)
    domain: str = Field(pattern=SAFE_NAME)
    split: str = Field(pattern=SAFE_NAME)
    label_map: str | None = Field(
        default=None, pattern=SAFE_NAME,
        description="id of a tasks/label_maps YAML turning the dataset's classes into the task's")

    @property
    def slug(self) -> str:
        return f"{self.dataset}/{self.domain}/{self.split}"


Role = Literal["source", "target"]  # what an evaluated split is to a task (`Task.evaluation_splits`)


class InferenceSpec(_Strict):
    """How predictions are made: whole image, or mmseg-style sliding windows; optional flip TTA."""

    mode: Literal["whole", "slide"] = "whole"
    resize_long_side: int | None = Field(
        default=None, gt=0,
        description="mmseg Resize(scale=(S, S), keep_ratio=True) before inference: scale by S / long side; "
                    "the scores are resized back, so metrics are at the label's own resolution")
    crop: int | None = Field(default=None, gt=0)
    stride: int | None = Field(default=None, gt=0)
    tta: tuple[Literal["hflip", "vflip"], ...] = ()

    @model_validator(mode="after")
    def _slide_needs_crop_and_stride(self) -> InferenceSpec:
        if self.mode == "slide" and (self.crop is None or self.stride is None):
            raise ValueError("inference.mode 'slide' needs both 'crop' and 'stride'")
        if self.stride is not None and self.crop is not None and self.stride > self.crop:
            raise ValueError(f"inference.stride {self.stride} is larger than crop {self.crop}: pixels would be skipped")
        return self


class InputSpec(_Strict):
    """How stored bands reach a model beyond its own contract."""

    replicate_single_band: bool = Field(
        default=False, description="feed a 1-band image (e.g. SAR) to a model that takes N bands by repeating it "
                                   "N times, as DFC25's winning solution does")
    bands: tuple[str, ...] | None = Field(
        default=None, min_length=1,
        description="the stored bands the task uses, by name and in this order (e.g. S2's nine bands B2-B8, B11, "
                    "B12); every split must have them. Without it, all stored bands are used")


class MetricsSpec(_Strict):
    primary: MetricName = "miou"
    report: tuple[MetricName, ...] = ("miou", "oa", "aa", "mf1")
    classes: Literal["all"] | tuple[str, ...] = "all"
    groups: Literal["group", "region"] = Field(
        default="group", description="the places domain_acc / worst_domain_acc average over: the samples' "
                                     "group (e.g. country), or the region the dataset card puts it in (continent)")
    source_reference: bool = Field(
        default=False, description="also evaluate the selection split, to show the source→target drop")
    convention: ConventionName = Field(
        default=DEFAULT_CONVENTION, description="how the paper computed its numbers from the same predictions: "
        + "; ".join(f"'{c.name}' ({c.summary})" for c in CONVENTIONS.loaded().values())
        + ". The headline uses it; the others are shown beside")
    ignored_pixels: Literal["excluded", "error"] = Field(
        default="excluded", description="'error': pixels labelled ignore still count, their predictions as false "
                                        "positives and in OA's denominator (CromSS's DFC2020 run has no mask). "
                                        "Only with convention 'smp'")

    @model_validator(mode="after")
    def _ignored_pixels_need_smp(self) -> MetricsSpec:
        if self.ignored_pixels == "error" and not CONVENTIONS.get(self.convention).counts_ignored_predictions:
            allowed = [name for name, c in CONVENTIONS.loaded().items() if c.counts_ignored_predictions]
            raise ValueError(f"metrics.ignored_pixels 'error' is the {' or '.join(allowed)} convention's "
                             f"(set convention: {allowed[0]})")
        return self


class AugmentSpec(_Strict):
    """Random changes to each training draw, as the paper's pipeline makes them: the resize before its crop, a cap
    on one class's share of the crop, then flips and rotations, and photometric distortion (`train/augment.py`).

    The fields after `rotate_degrees` came later: at their defaults they are left out of the spec's dump
    (`_AUGMENT_ADDED_WITH_DEFAULT`), so every task, training state and checkpoint record made before them keeps
    its hash, fingerprint and protocol verdict."""

    flip: Literal["each_axis", "one_of_three", "horizontal"] = Field(
        default="each_axis", description="each_axis: a horizontal and a vertical flip, each with probability 0.5; "
                                         "one_of_three: with probability 0.5 one of horizontal, vertical or both, "
                                         "equally likely (albumentations' Flip, as CromSS trains); horizontal: a "
                                         "horizontal flip with probability 0.5 (mmseg's RandomFlip(prob=0.5))")
    rotate_p: float = Field(default=0.0, ge=0, le=1, description="probability of a random rotation (0: none)")
    rotate_degrees: float = Field(
        default=90.0, gt=0, le=180, description="a rotation's angle is uniform in ±this; bilinear for the image, "
                                                "nearest for the labels, borders mirrored without repeating the "
                                                "edge (albumentations' Rotate defaults)")
    resize_short_side: tuple[float, ...] = Field(
        default=(), description="before the crop, the sample's shorter side is resized to ⌊ratio × crop⌋ for a "
                                "ratio drawn uniformly from this list, the aspect kept (mmseg's RandomChoiceResize "
                                "with ResizeShortestEdge); the image bilinear, the labels nearest; empty: no resize")
    resize_max_long_side: float | None = Field(
        default=None, gt=0, description="with `resize_short_side`: the longer side is at most this × crop, the "
                                        "shorter then smaller (ResizeShortestEdge's max_size)")
    crop_max_class_ratio: float = Field(
        default=1.0, gt=0, le=1, description="below 1: a crop is drawn again, up to 10 times, while one class covers "
                                             "this share or more of its labelled pixels or it holds one class only "
                                             "(mmseg's RandomCrop cat_max_ratio); 1: any crop")
    photometric: bool = Field(
        default=False, description="mmseg's PhotoMetricDistortion on 0-255 values: each with probability 0.5, "
                                   "brightness + U(−32, 32), contrast × U(0.5, 1.5) (first or last, equally "
                                   "likely), saturation × U(0.5, 1.5) and hue + an integer in [−18, 18) of 180, "
                                   "each step clipped to 0-255 and cut to whole levels")

    @model_validator(mode="after")
    def _resize_cap_needs_resize(self) -> AugmentSpec:
        if self.resize_max_long_side is not None and not self.resize_short_side:
            raise ValueError("`resize_max_long_side` caps the resize of `resize_short_side`, which is not set")
        if any(ratio <= 0 for ratio in self.resize_short_side):
            raise ValueError(f"resize ratios must be above 0, not {list(self.resize_short_side)}")
        return self

    @model_serializer(mode="wrap")
    def _dump_without_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        return {name: value for name, value in dumped.items() if not (
            name in _AUGMENT_ADDED_WITH_DEFAULT and getattr(self, name) == _AUGMENT_ADDED_WITH_DEFAULT[name])}


# AugmentSpec's fields added after tasks were first hashed, with their defaults.
_AUGMENT_ADDED_WITH_DEFAULT: dict[str, Any] = {
    "resize_short_side": (), "resize_max_long_side": None, "crop_max_class_ratio": 1.0, "photometric": False,
}


class TrainingSpec(_Strict):
    """The paper's training protocol for a source-only model (scaled down with CLI flags for smoke runs)."""

    iterations: int | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, gt=0, description="passes over the source split (instead of iterations)")
    batch_size: int = Field(gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    schedule: Literal["poly", "constant", "cosine"] = Field(
        default="poly", description="poly: lr·(1 − t/T)^0.9; constant; cosine: from lr down to `final_lr` over "
                                    "the first `decay_fraction` of the run, then `final_lr`")
    final_lr: float | None = Field(default=None, gt=0, description="where the cosine schedule ends")
    schedule_iterations: int | None = Field(
        default=None, gt=0, description="the poly schedule's horizon T when it is not the run's length (mmengine's "
                                        "PolyLR `end` beyond `max_iters`: the rate stops at (1 − iterations/T)^0.9)")
    decay_fraction: float = Field(default=1.0, gt=0, le=1, description="share of the run the cosine decays over")
    schedule_step: Literal["iteration", "epoch"] = Field(
        default="iteration", description="how often the learning rate changes: every iteration, or once per pass "
                                         "over the source split (a Lightning scheduler's default)")
    loss: Literal["ce", "ce+dice", "ce+smp_dice"] = Field(
        default="ce", description="cross-entropy; plus the Dice loss 1 − 2Σzq / Σ(z + q) over all labelled pixels "
                                  "and classes (ce+dice: CromSS's eq. 4); or plus segmentation_models_pytorch's "
                                  "multiclass DiceLoss (ce+smp_dice: 1 − Dice per class over the batch, a class "
                                  "absent from the batch's labels counting 0, averaged over all classes; what "
                                  "CromSS's fine-tuning scripts run)")
    crop: int = Field(gt=0)
    augment: AugmentSpec = AugmentSpec()
    architecture: str | None = Field(
        default=None, description="the paper's segmentation framework for this task (e.g. pspnet); adapters that "
                                  "build several use it when not told otherwise")
    val_interval: int | None = Field(default=None, gt=0)
    seed: int = 0
    label_fraction: float = Field(
        default=1.0, gt=0, le=1, description="the share of the source split's samples training reads (label-"
                                             "efficiency variants): a fixed, nested subset chosen by the sample "
                                             "ids' sha256 (`label_subsets`); 1 reads every sample")

    @model_validator(mode="after")
    def _one_length(self) -> TrainingSpec:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("training needs exactly one of 'iterations' and 'epochs'")
        return self

    @model_validator(mode="after")
    def _cosine_end(self) -> TrainingSpec:
        if (self.schedule == "cosine") != (self.final_lr is not None):
            raise ValueError("the cosine schedule needs `final_lr`, and only it takes one")
        if self.final_lr is not None and self.final_lr >= self.lr:  # given only with the cosine schedule (above)
            raise ValueError(f"final_lr {self.final_lr} must be below lr {self.lr}")
        if self.decay_fraction != 1.0 and self.schedule != "cosine":
            raise ValueError("`decay_fraction` belongs to the cosine schedule")
        if self.schedule_iterations is not None and self.schedule != "poly":
            raise ValueError("`schedule_iterations` belongs to the poly schedule")
        return self

    def total_iterations(self, source_samples: int) -> int:
        """Iterations of the schedule: given, or epochs × full batches per pass over the source split."""
        if self.iterations is not None:
            return self.iterations
        assert self.epochs is not None  # exactly one of the two (_one_length)
        return self.epochs * self.iterations_per_epoch(source_samples)

    def iterations_per_epoch(self, source_samples: int) -> int:
        """Full batches in one pass over the source split (the last partial batch dropped, as the papers' loaders
        do); at least 1."""
        return max(1, source_samples // self.batch_size)


def without_later_defaults(block: str, content: dict[str, Any]) -> dict[str, Any]:
    """A dumped `metrics` or `training` block without the fields added after tasks were first hashed, where
    they hold their defaults: what hashes and fingerprints are made of, so adding a field changes none."""
    return {name: value for name, value in content.items()
            if (block, name) not in _ADDED_WITH_DEFAULT or value != _ADDED_WITH_DEFAULT[(block, name)]}


def later_defaults(block: str) -> dict[str, Any]:
    """The fields of a `metrics` or `training` block added after tasks were first hashed, with the default an
    older task, state or checkpoint had without naming it."""
    return {name: value for (where, name), value in _ADDED_WITH_DEFAULT.items() if where == block}


class Reference(_Strict):
    """The paper a task reproduces, where this harness knowingly differs from it, and what neither the paper
    nor its code fixes (display only: the numbers these move are in the hashed fields; this says so to the
    reader, on the task's page and beside every row of it)."""

    paper: str
    table: str | int | None = None
    differences: tuple[str, ...] = Field(
        default=(), description="each a sentence: what the paper's pipeline does, what the harness does instead, "
                                "and its measured effect where known")
    training_differences: tuple[str, ...] = Field(
        default=(), description="as `differences`, for how the harness trains: they concern only rows whose weights "
                                "`rsdg-bench train` made, not released weights")
    unverified: tuple[str, ...] = Field(
        default=(), description="each a sentence: a protocol value neither the paper nor its released code gives, "
                                "and what the harness chose (UNVERIFIED)")


# Fields added after tasks were first hashed: left out of the hash at their default value, so every task that
# does not use them keeps its hash (and its records and resume keys stay valid).
_ADDED_WITH_DEFAULT = {
    ("metrics", "convention"): "mmseg", ("metrics", "ignored_pixels"): "excluded",
    ("training", "final_lr"): None, ("training", "decay_fraction"): 1.0, ("training", "schedule_step"): "iteration",
    ("training", "augment"): AugmentSpec().model_dump(mode="json"), ("training", "label_fraction"): 1.0,
    ("training", "schedule_iterations"): None,
}


class Task(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.+-]*$")
    name: str
    description: str = ""
    version: int = Field(ge=1)
    suite: str
    gap: str
    kind: str = DEFAULT_KIND  # a registered task kind (`rsdg_bench.protocol.kind.KINDS`)
    classes: str = Field(pattern=SAFE_NAME)
    source: SplitRef
    select: SplitRef | None = None
    targets: tuple[SplitRef, ...] = Field(min_length=1)
    inputs: InputSpec = InputSpec()
    inference: InferenceSpec = InferenceSpec()
    metrics: MetricsSpec = MetricsSpec()
    training: TrainingSpec | None = None
    checkpoint_key: str = Field(pattern=SAFE_NAME)  # a file name under the checkpoint folder, never a path
    reference: Reference | None = None

    @model_validator(mode="after")
    def _targets_are_unseen(self) -> Task:
        seen_in_training = {self.source.slug} | ({self.select.slug} if self.select else set())
        for target in self.targets:
            if target.slug in seen_in_training:
                raise ValueError(f"target {target.slug} is also the source or selection split: it would not be unseen")
        return self

    @field_validator("kind")
    @classmethod
    def _kind_is_registered(cls, kind: str) -> str:
        try:
            KINDS.get(kind)
        except TaskError as exc:
            raise ValueError(f"{exc.problem} ({exc.fix})") from None
        return kind

    @model_validator(mode="after")
    def _options_fit_kind(self) -> Task:
        kind = get_kind(self.kind)
        kind.check_task(self)
        group_metrics = _GROUP_METRICS & {self.metrics.primary, *self.metrics.report}
        if group_metrics and not kind.grouped:
            raise ValueError(f"metrics {sorted(group_metrics)} are per-place accuracies of classification tasks "
                             f"(a kind whose samples have a place), not of {self.kind}")
        return self

    @cached_property
    def class_schema(self) -> ClassSchema:
        return load_class_schema(self.classes)

    @cached_property
    def hash(self) -> str:
        """sha256 over every field that can move a number, including the content of its label maps."""
        content = self.model_dump(mode="json", exclude=_DISPLAY_ONLY)
        for block in ("metrics", "training"):  # fields added later, at their default: hashes stay as they were
            if content.get(block) is not None:
                content[block] = without_later_defaults(block, content[block])
        content["label_maps"] = {ref.label_map: load_label_map(ref.label_map).model_dump(mode="json")
                                 for ref in self.splits() if ref.label_map}
        return sha256_bytes(canonical_json(content).encode())

    def splits(self) -> list[SplitRef]:
        """Every split the task reads: source, selection, targets."""
        return [self.source, *([self.select] if self.select else []), *self.targets]

    def record_block(self) -> dict[str, Any]:
        """The `task` block a result record of this task holds: identity, classes, headline and the resolved
        definition. `run` writes it; `submission verify` judges a bundle's records under the installed task's
        own block, never the copy a record carries."""
        return {"id": self.id, "name": self.name, "version": self.version, "hash": self.hash, "suite": self.suite,
                "gap": self.gap, "kind": self.kind, "classes": self.classes, "class_names": self.class_schema.names,
                "headline_classes": self.headline_class_indices(), "primary": self.metrics.primary,
                "resolved": self.model_dump(mode="json")}

    def headline_class_indices(self) -> list[int]:
        if self.metrics.classes == "all":
            return list(range(self.class_schema.num_classes))
        return [self.class_schema.index_of(name) for name in self.metrics.classes]

    def evaluation_splits(self) -> list[tuple[Role, SplitRef]]:
        """(role, split) pairs to evaluate: the targets, and the selection split when asked for."""
        splits: list[tuple[Role, SplitRef]] = [("target", t) for t in self.targets]
        if self.metrics.source_reference and self.select is not None:
            splits.insert(0, ("source", self.select))
        return splits


class Suite(_Strict):
    id: str
    name: str
    description: str = ""
    tasks: tuple[str, ...] = Field(min_length=1)
    aggregation: Literal["mean"] = "mean"
    part_of_all: bool = True  # false keeps its tasks out of `--suite all` (the synthetic demo)


# --------------------------------------------------------------------------- loading

def package_tasks_dir() -> Path:
    """The installed `tasks/` folder (a real folder for both `pip install .` and `pip install -e .`)."""
    return Path(str(resources.files("rsdg_bench.tasks")))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise TaskError(f"{path} is not valid YAML: {exc}", "fix the syntax at the line shown") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TaskError(f"cannot read the task file {path}: {reason}",
                        "give the path of a task YAML (`rsdg-bench tasks list` shows the installed tasks, "
                        "`rsdg-bench tasks validate` with no path checks them all)") from exc
    if not isinstance(data, dict):
        raise TaskError(f"{path} must hold a mapping of keys, got {type(data).__name__}",
                        "start the file with `id: <suite>/<task>`")
    return data


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_includes(path: Path, data: dict[str, Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    includes = data.pop("include", None)
    if includes is None:
        return data
    resolved: dict[str, Any] = {}
    for name in [includes] if isinstance(includes, str) else list(includes):
        included_path = path.parent / name
        key = str(included_path)
        if key in chain:
            raise TaskError(f"{path}: include cycle through {name}", "remove the circular include")
        if not included_path.is_file():
            raise TaskError(f"{path}: included file {name!r} not found at {included_path}",
                            "the include: path is relative to the including file; correct it or add the file")
        resolved = _deep_merge(resolved, _included(included_path, (*chain, key)))
    return _deep_merge(resolved, data)


_INCLUDED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _included(path: Path, chain: tuple[str, ...]) -> dict[str, Any]:
    """A shared defaults file, resolved: parsed once per process while it is unchanged (a catalog's 150 tasks
    include a handful of files), handed out as a copy so no task's merge can change another's."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _INCLUDED:
        _INCLUDED[key] = _resolve_includes(path, _read_yaml(path), chain)
    return copy.deepcopy(_INCLUDED[key])


def _explain(exc: ValidationError, model: type[BaseModel], path: Any) -> TaskError:
    """Turn pydantic's report into one line per problem, with a suggestion for misspelt keys."""
    lines = []
    errors = exc.errors()
    # A bad item also makes pydantic report its container (e.g. "too short"); the item's error says it all.
    errors = [e for e in errors if not any(len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"]
                                           for o in errors)]
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            allowed = list(parent.model_fields) if parent else []
            guess = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else f" (allowed: {', '.join(allowed)})"
            lines.append(f"unknown key {loc!r}{hint}")
        else:
            lines.append(f"{loc or '(top level)'}: {err['msg']}")
    return TaskError(f"{path}: " + "; ".join(lines), "fix the keys named above (`rsdg-bench tasks schema` prints the schema)")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `SplitRef | None` or `tuple[SplitRef, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _nested_model(arg)) is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that owns the key at `loc` (list indices skipped), to list its allowed keys."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _nested_model(field.annotation) if field else None
    return current


def load_task_file(path: Path) -> Task:
    """Read, resolve includes, and validate one task YAML; every problem is reported with the file name."""
    data = _resolve_includes(path, _read_yaml(path))
    try:
        task = Task.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, Task, path) from exc
    _check_against_schema(task, path)
    return task


def _check_against_schema(task: Task, path: Any) -> None:
    schema = task.class_schema
    for ref in task.splits():
        if ref.label_map is None:
            continue
        label_map = load_label_map(ref.label_map)
        if label_map.target != task.classes:
            raise TaskError(f"{path}: label map {ref.label_map!r} on {ref.slug} maps into {label_map.target!r}, "
                            f"but the task's classes are {task.classes!r}",
                            "use a label map whose `to` is the task's class schema")
    if task.metrics.classes != "all":
        unknown = [c for c in task.metrics.classes if c not in schema.names]
        if unknown:
            raise TaskError(f"{path}: metrics.classes names {unknown} not in class schema {schema.id!r}",
                            f"use names from: {', '.join(schema.names)}")


def load_suite_file(path: Path) -> Suite:
    try:
        return Suite.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise _explain(exc, Suite, path) from exc


def _task_roots() -> list[Path]:
    roots = [package_tasks_dir()]
    for entry in os.environ.get("RSDG_TASK_PATH", "").split(os.pathsep):
        if entry:
            roots.append(Path(entry).expanduser())
    return roots


def _walk_yaml(folder: Path, skip_dirs: set[str]) -> list[Path]:
    found = []
    for child in sorted(folder.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            if child.name not in skip_dirs and not child.name.startswith((".", "_")):
                found.extend(_walk_yaml(child, skip_dirs))
        elif child.name.endswith(".yaml") and not child.name.startswith("_"):
            found.append(child)
    return found


class TaskCatalog:
    """Every task and suite the installed package and $RSDG_TASK_PATH define, by id."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.task_files: dict[str, str] = {}
        self.suites: dict[str, Suite] = {}
        for root in _task_roots():
            if not root.is_dir():
                raise TaskError(f"task folder {root} (from RSDG_TASK_PATH) does not exist", "fix RSDG_TASK_PATH")
            for path in _walk_yaml(root, _NOT_TASK_DIRS):
                task = load_task_file(path)
                if task.id in self.tasks:
                    raise TaskError(f"task id {task.id!r} is defined twice: {self.task_files[task.id]} and {path}",
                                    "give one of them another id")
                self.tasks[task.id] = task
                self.task_files[task.id] = str(path)
            suites_dir = root / "suites"
            if suites_dir.is_dir():
                for path in _walk_yaml(suites_dir, set()):
                    suite = load_suite_file(path)
                    self.suites[suite.id] = suite
        for suite in self.suites.values():
            missing = [t for t in suite.tasks if t not in self.tasks]
            if missing:
                raise TaskError(f"suite {suite.id!r} lists unknown tasks {missing}", "fix the suite's task list")

    def task(self, task_id: str) -> Task:
        """The task with this id, or with this name as the papers print it (`R2U`, `P(i)2V`; any case) when one
        task has it; an ambiguous name lists its tasks, an unknown one the closest ids and names."""
        if task_id in self.tasks:
            return self.tasks[task_id]
        named = sorted(t.id for t in self.tasks.values()
                       if task_id.casefold() in (t.name.casefold(), t.id.casefold(), t.id.split("/")[-1].casefold()))
        if len(named) == 1:
            return self.tasks[named[0]]
        if named:
            raise TaskError(f"{task_id!r} names {len(named)} tasks: {', '.join(named)}", "give the task id")
        choices = {**{t: t for t in self.tasks}, **{task.name: task.id for task in self.tasks.values()}}
        guess = [f"{choices[g]} ({g})" if choices[g] != g else g
                 for g in difflib.get_close_matches(task_id, list(choices), n=3)]
        raise TaskError(f"unknown task {task_id!r}",
                        f"did you mean {', '.join(guess)}?" if guess else "see `rsdg-bench tasks list`")

    def suite_tasks(self, suite_id: str) -> list[Task]:
        """Tasks of a suite, in its order; `all` is every task of the suites that are part of it (not the demo)."""
        if suite_id == "all":
            left_out = {t for suite in self.suites.values() if not suite.part_of_all for t in suite.tasks}
            return [self.tasks[t] for t in sorted(self.tasks) if t not in left_out]
        if suite_id not in self.suites:
            raise TaskError(f"unknown suite {suite_id!r}",
                            f"use `all` or one of: {', '.join(sorted(self.suites))}")
        return [self.tasks[t] for t in self.suites[suite_id].tasks]


def task_json_schema() -> dict[str, Any]:
    """JSON Schema of a resolved task (before resolution a file may also carry `include:`)."""
    schema = Task.model_json_schema()
    schema["title"] = "rsdg-bench task"
    schema["properties"]["kind"]["enum"] = list(kind_names())  # the registered kinds, installed plug-ins' too
    return schema
