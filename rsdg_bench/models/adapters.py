"""The adapter contract: what a model family must provide, and what the harness does around it.

An adapter declares its input contract (band count or band names, normalization in the data's units,
size divisor); the harness selects bands, converts to float, normalizes and pads, so an adapter never
receives raw numbers by accident, and the normalization used is recorded with every result. The
adapter only builds its network, loads weights, and maps a normalized batch to logits.
"""

from __future__ import annotations

import abc
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.models.code_identity import code_identity
from rsdg_bench.protocol.task_schema import Task, TrainingSpec

# ImageNet's per-channel mean and std of RGB in 0..255, the normalization of most pretrained RGB backbones.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Normalization:
    """Per-band (x − mean) / std, with mean and std in the units the prepared data is stored in; then,
    optionally, a clip to `clip` = (low, high) and a quantization to `levels` steps (floor(x·levels) / levels).

    The plain form is ImageNet-style standardization. The optional steps express rescalings such as
    CromSS's: clip each band to mean ± 2σ, stretch to 0..255, truncate to uint8, divide by 255, which is
    mean = μ − 2σ, std = 4σ, clip = (0, 1), levels = 255.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: tuple[float, float] | None = None
    levels: int | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise AdapterError(f"normalization has {len(self.mean)} means but {len(self.std)} stds")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise AdapterError(f"normalization mean {self.mean} / std {self.std} must be finite numbers",
                               "an infinite std makes every input the same; give the data's real statistics")
        if any(s <= 0 for s in self.std):
            raise AdapterError(f"normalization std must be positive, got {self.std}")
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise AdapterError(f"normalization clip {self.clip} must be (low, high) with low < high")
        if self.levels is not None and self.levels < 1:
            raise AdapterError(f"normalization levels must be positive, got {self.levels}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std in float32, in one new tensor. Integer and float32 input is converted inside the
        subtraction (one pass less than converting first, bit-identical: the same float32 operations), and
        a mean of zeros or a std of ones is not applied at all (x − 0 and x / 1 are x exactly)."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        shifted, scaled = any(m != 0 for m in self.mean), any(s != 1 for s in self.std)
        if shifted and (x.dtype == torch.float32 or not x.is_floating_point()):
            out = torch.sub(x, mean)  # type promotion: float32(x) − mean, as a new float32 tensor
        else:
            out = x.to(torch.float32, copy=True)
            if shifted:
                out.sub_(mean)
        if scaled:
            out.div_(std)
        if self.clip is not None:
            out = out.clamp(*self.clip)
        if self.levels is not None:
            out = torch.floor(out * self.levels) / self.levels
        return out


@dataclass(frozen=True)
class InputContract:
    """What the model expects. With `band_names` the harness picks those bands by name; without, it
    passes the bands as stored and only checks their count (the spectral-gap protocols rely on this:
    an RGB-trained model is fed the IRRG composite as is)."""

    num_bands: int
    normalization: Normalization
    band_names: tuple[str, ...] | None = None
    size_divisor: int = 1

    def __post_init__(self) -> None:
        if len(self.normalization.mean) != self.num_bands:
            raise AdapterError(f"input contract declares {self.num_bands} bands but normalizes "
                               f"{len(self.normalization.mean)}")
        if self.band_names is not None and len(self.band_names) != self.num_bands:
            raise AdapterError(f"input contract names {len(self.band_names)} bands but declares {self.num_bands}")

    def prepare(self, image: torch.Tensor, available_bands: list[str], where: str,
                replicate_single_band: bool = False) -> torch.Tensor:
        """Select bands, check the count, and normalize a B×C×H×W batch of stored values. With
        `replicate_single_band` (a task option), a 1-band image is repeated to the model's band count."""
        if replicate_single_band and image.shape[1] == 1 and self.num_bands > 1 and self.band_names is None:
            image = image.expand(-1, self.num_bands, -1, -1)
        elif self.band_names is not None:
            missing = [b for b in self.band_names if b not in available_bands]
            if missing:
                raise AdapterError(f"{where} has bands {available_bands}; the model needs {missing} too",
                                   "evaluate on a domain that carries those bands, or use a model for these bands")
            image = image[:, [available_bands.index(b) for b in self.band_names]]
        elif image.shape[1] != self.num_bands:
            raise AdapterError(f"{where} has {image.shape[1]} bands ({available_bands}); the model takes {self.num_bands}",
                               "pick a task whose data has the model's band count, or declare band_names")
        return self.normalization.apply(image)

    def record(self) -> dict[str, Any]:
        return {**asdict(self.normalization), "band_names": self.band_names, "num_bands": self.num_bands,
                "size_divisor": self.size_divisor}


class Adapter(abc.ABC):
    """One model family behind the harness.

    Life cycle: `__init__(**options)` with string options from `--model-arg k=v`; `setup(task, bands)`
    builds the network for the task's classes and the source data's bands; `load(checkpoint)` loads the
    weights (missing or unexpected keys are an error); `predict(x)` maps a normalized batch to logits.
    Each task kind has its own entry point (`predict`, `predict_series`, `classify`); `kinds` says which
    the adapter implements, and the runner refuses the others before anything is loaded.
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = False
    # task kinds the adapter can do (not a ClassVar: a `ModuleAdapter` takes its kinds per instance)
    kinds: frozenset[str] = frozenset({"segmentation"})
    # An upper-bound mode that chooses with the labels (e.g. CoDEX's Oracle): the evaluator calls
    # `oracle_series` with them, and the records it gives are marked and never reach a leaderboard.
    peeks_at_labels: bool = False
    # Arithmetic precisions `run --precision` may use with this adapter: fp32 (IEEE), tf32 (CUDA's float32
    # convolutions and matrix products rounded to TF32), bf16 / fp16 (autocast around its forward). fp32
    # only unless the adapter's authors checked that its numbers hold at lower precision.
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32"})
    known_options: ClassVar[frozenset[str] | None] = None  # the `--model-arg` keys it takes (None: any)
    options_help: ClassVar[str] = ""  # the fix shown for an unknown option (default: the known keys)
    # Options that make `adapter check` cheap on a CPU without changing the module's structure (e.g. a smaller
    # input size): the contract tests run every registered adapter's checks with them.
    check_options: ClassVar[dict[str, str]] = {}

    def __init__(self, **options: str) -> None:
        unknown = set(options) - self.known_options if self.known_options is not None else set()
        if unknown:
            raise AdapterError(f"unknown {self.name} options {sorted(unknown)}",
                               self.options_help or f"use: {', '.join(sorted(self.known_options or ()))}")
        self.options = dict(options)
        self.module: nn.Module | None = None

    @abc.abstractmethod
    def input_contract(self) -> InputContract:
        """Available after `setup`."""

    @abc.abstractmethod
    def setup(self, task: Task, band_names: list[str]) -> None:
        """Build the (randomly initialised) network for `task`, whose source data has `band_names`."""

    @abc.abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized B×C×H×W (H, W multiples of the size divisor) → logits B×K×H×W."""

    def predict_series(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        """`temporal_segmentation`: normalized B×T×C×H×W and B×T day offsets (days since the series' first
        date) → logits B×T×K×H×W, one map per date. Adapters that declare the kind override it."""
        raise AdapterError(f"adapter {self.name!r} does not predict time series", "declare and implement predict_series")

    def oracle_series(self, x: torch.Tensor, days: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`predict_series` for an adapter with `peeks_at_labels`, given the B×T×H×W labels (ignore = 255)."""
        raise AdapterError(f"adapter {self.name!r} has no label-peeking upper bound", "set peeks_at_labels only with it")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """`classification`: normalized B×C×H×W → logits B×K, one class per image."""
        raise AdapterError(f"adapter {self.name!r} does not classify images", "declare and implement classify")

    def training_loss(self, inputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """This adapter's own training objective for one batch, where its paper trains with something other
        than the protocol's per-pixel loss on the entry point's scores (Mask2Former's set loss, CoDEX's expert
        losses); None, the default, means the protocol's loss (`TrainingSpec.loss`) on the entry point's
        output. `inputs` are the entry point's arguments as the task's kind prepares them (normalized images;
        for a series also the days); `batch` is the training batch on the device: `label`, and `domain` (each
        draw's source domain, the index of its place among the source split's sorted places)."""
        return None

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]] | None:
        """The optimizer's parameter groups where the paper's optimizer treats parameters apart (e.g. no weight
        decay on norms and embeddings), given the protocol's weight decay; None, the default: every parameter of
        the module under the protocol's values."""
        return None

    def prepare_training(self, task: Task, source_places: list[str], checkpoint_path: Path) -> None:
        """Called by `train` once the source split is open, before the optimizer is built: its sorted distinct
        places (what each draw's `domain` indexes) and the checkpoint the training will write. An adapter with
        per-domain parts sizes them here (CoDEX: one expert per place), and a later training stage loads what an
        earlier one wrote beside that checkpoint. The default does nothing."""

    def training_protocol(self, spec: TrainingSpec) -> TrainingSpec:
        """The training protocol this model trains under on a task whose `training:` block is `spec`: by default
        the task's own. A model put to the task under a protocol of its own (a backbone preset's linear probe or
        LoRA) sets its optimizer values over the task's data protocol; `train` runs it and `run` judges the
        checkpoint against it."""
        return spec

    def checkpoint_stem(self, task: Task) -> str:
        """The name `train` gives the checkpoint it writes, before any `.seed<N>` and `.pt`: by default the
        task's checkpoint key; an adapter trained in stages names each stage's file apart (CoDEX's experts)."""
        return task.checkpoint_key

    def trained_state(self) -> dict[str, torch.Tensor]:
        """What `train` keeps of the module (the checkpoint, the resumable state): by default its whole state dict.
        An adapter whose protocol leaves released weights as they are (a frozen encoder) keeps only what trains and
        takes the rest from those weights again when it loads (`load_trained_state`)."""
        return self._require_module().state_dict()

    def load_trained_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load what `trained_state` kept (a resumed training, a checkpoint); by default strictly, every key."""
        load_state_strict(self._require_module(), state, source)

    def display_name(self) -> str:
        """The model's name on the board when `--name` gives none: the adapter's, with its option values."""
        details = "-".join(str(v) for _, v in sorted(self.options.items()) if v)
        return f"{self.name}({details})" if details else self.name

    def identity(self) -> dict[str, Any]:
        """What distinguishes this model configuration in records and resume keys: its name, its options and
        its code (`code_identity`), so an edited adapter is evaluated again instead of answering from old
        records."""
        return {"adapter": self.name, "options": dict(sorted(self.options.items())), "code": code_identity(type(self))}

    def checkpoint_names(self, task: Task) -> list[str]:
        """File names to look for, in order, in a checkpoint folder (`--checkpoint-dir`) for `task`. By
        default `<checkpoint_key>.pt`, what `rsdg-bench train` writes; an adapter for released weights
        puts the authors' own file names first."""
        return [f"{self.checkpoint_stem(task)}.pt"]

    def use_backbone_checkpoint(self, path: Path) -> None:
        """Take frozen backbone weights from a second file (or folder), for checkpoints saved without them."""
        raise AdapterError(f"adapter {self.name!r} does not take a separate backbone checkpoint",
                           "drop --backbone-checkpoint; this model's checkpoints hold all its weights")

    def load(self, checkpoint: Path) -> None:
        """Load a local checkpoint (any container `checkpoints.read_state_dict` knows) strictly."""
        from rsdg_bench.models.checkpoints import read_state_dict

        state, _ = read_state_dict(checkpoint)
        self.load_trained_state(state, str(checkpoint))

    def to(self, device: torch.device) -> Adapter:
        self._require_module().to(device)
        return self

    def eval(self) -> None:
        self._require_module().eval()

    def _require_module(self) -> nn.Module:
        if self.module is None:
            raise AdapterError(f"adapter {self.name!r} used before setup()")
        return self.module


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str = "the model") -> None:
    """Load `state` into `module`; any missing, unexpected or mis-shaped key is an error that lists them."""
    from rsdg_bench.models.checkpoints import load_checked

    load_checked(module, state, source, what)


def checkpoint_bytes(payload: dict[str, Any], path: Path | None = None) -> bytes:
    """Serialize a checkpoint dict (`state_dict`, and the `rsdg` training block) for an atomic write: PyTorch's
    format, or safetensors for a `.safetensors` path (the tensors, and the training block as JSON in the file's
    metadata: the format many released weights use, loadable without unpickling anything)."""
    if path is not None and Path(path).suffix == ".safetensors":
        import json

        from safetensors.torch import save

        tensors = {key: value.contiguous() for key, value in payload["state_dict"].items()}
        return save(tensors, metadata={"rsdg": json.dumps(payload.get("rsdg", {}))})
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()
