"""CoDEX (Abhishek et al., CVPR-W 2025): MultiUTAE with one expert head per training domain, mixed per
sample by the head selector, on CoDEX's time-series tasks (`codex/dynamicearthnet`, `codex/muds`).

Registered as `codex`, kind `temporal_segmentation`. The network (`codex_model.py`) is our own
implementation of the published architecture with the authors' parameter names: no upstream code is
included (the repository had no licence file when it was read; a later commit adds an MIT licence), and users
must obtain the weights from the authors.
The repository commits a full DynamicEarthNet model as a plain state dict,
`headselector/checkpoints/best_me_acc_3_encoder+decoder_1_32_classifier.ckpt` (55 heads, 6 classes,
selector width 32): put it in `--checkpoints DIR`, where it is found by that name, or pass `--checkpoint`.

- Input: the task's bands as stored (R, G, B, NIR for DynamicEarthNet; R, G, B for MUDS), normalized with
  CoDEX's published per-dataset mean and std (8-bit units), and the dates as day offsets; 128×128 patches
  as the CoDEX tasks define them (any multiple of 8 runs, but the selector was trained on 128²).
- The number of domains and the selector's width are read from the checkpoint's shapes (`linear2`), since
  the released file differs from the repository's config; until weights are loaded, the CoDEX configs'
  values are used (55 domains for DynamicEarthNet, 40 for MUDS; width 32).
- Options: `selection=mixture` (default: CoDEX's prediction, Σ_d softmax(selector)_d · head_d) or
  `selection=oracle`: CoDEX Table 2's Oracle, the single expert with the best pixel accuracy on each test
  sample, chosen **with its labels**. It is an upper bound, not a method: such records are marked
  `peeks_at_labels` and never reach a leaderboard. `mean=` / `std=` override the normalization.

Training (`rsdg-bench train`), CoDEX's two stages, one command each (losses in `codex_losses.py`):

1. `--model-arg stage=experts`: one expert head per source place (D = the source split's distinct places,
   each draw's `domain`) on the shared backbone, trained with L_domain + L_con (weights 1); written as
   `<checkpoint_key>-experts.pt`. The selector is not trained; the selection split scores the experts' plain
   mean (our choice: the paper does not say how stage 1 is selected).
2. no `stage` option (stage `selector`): the stage-1 file found beside this stage's checkpoint (its name with
   `-experts` after the checkpoint key) is loaded, backbone and experts frozen, and the selector alone is
   trained with L_acc + L_mix (softmax temperature 1, weights 1); written as `<checkpoint_key>.pt`, the file
   `rsdg-bench run --model codex` evaluates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization, load_state_strict
from rsdg_bench.models.checkpoints import read_state_dict
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

from .codex_losses import accuracy_loss, expert_accuracy, expert_losses, focal_loss
from .codex_model import HeadSelector
from .smp_adapter import _per_band

RELEASED_FILES = {"dynamicearthnet_source": "best_me_acc_3_encoder+decoder_1_32_classifier.ckpt"}
# CoDEX's data/data.py: per-band mean and std of the 8-bit inputs, and its configs' domain counts.
PUBLISHED: dict[str, dict[str, Any]] = {
    "dynamicearthnet": {"mean": (83.1029, 80.7615, 69.3328, 133.8648), "std": (33.2714, 25.5288, 23.9868, 30.5591),
                        "domains": 55},
    "muds": {"mean": (119.9347, 105.3608, 77.5125), "std": (59.5921, 48.2708, 44.7296), "domains": 40},
}
# Backbone hyper-parameters of every released CoDEX model (its training scripts' defaults).
BACKBONE: dict[str, Any] = {"n_head": 16, "d_k": 4, "T": 1000, "offset": 10}
STAGES = ("experts", "selector")  # CoDEX's two training stages (§3.1, §3.2); `selector` is the default
EXPERTS_SUFFIX = "-experts"  # stage 1's checkpoint: the checkpoint key, then this


@register_adapter("codex")
class CodexAdapter(Adapter):
    """CoDEX's expert mixture (or its label-peeking Oracle) for time-series segmentation."""

    kinds = frozenset({"temporal_segmentation"})
    trainable = True
    known_options = frozenset({"selection", "mean", "std", "stage"})

    def __init__(self, **options: str) -> None:
        options.setdefault("selection", "mixture")
        if options["selection"] not in ("mixture", "oracle"):
            raise AdapterError(f"codex option selection={options['selection']!r}", "use selection=mixture or oracle")
        if options.get("stage", "selector") not in STAGES:
            raise AdapterError(f"codex option stage={options['stage']!r}",
                               "use stage=experts (CoDEX's first training stage), or leave it out for the selector")
        super().__init__(**options)
        self.peeks_at_labels = options["selection"] == "oracle"
        self.stage = options.get("stage", "selector")  # not stored when left out: run's records keep their identity
        self._contract: InputContract | None = None
        self._shape: dict[str, int] = {}

    def setup(self, task: Task, band_names: list[str]) -> None:
        published = PUBLISHED.get(task.source.dataset, {})
        num_bands = len(band_names)
        mean = _per_band(self.options.get("mean"), 0.0, num_bands, "mean") if "mean" in self.options else published.get("mean")
        std = _per_band(self.options.get("std"), 1.0, num_bands, "std") if "std" in self.options else published.get("std")
        if mean is None or std is None:
            raise AdapterError(f"codex has no published normalization for {task.source.dataset!r}",
                               "pass --model-arg mean=...,... --model-arg std=...,... in the data's units")
        self._contract = InputContract(num_bands=num_bands, normalization=Normalization(mean=tuple(mean), std=tuple(std)),
                                       size_divisor=8)
        self._shape = {"input_dim": num_bands, "num_classes": task.class_schema.num_classes,
                       "num_domains": published.get("domains", 1), "out_first": 32}
        self._build()

    def _build(self) -> None:
        self.module = HeadSelector(self._shape["input_dim"], self._shape["num_domains"], self._shape["num_classes"],
                                   out_first=self._shape["out_first"], **BACKBONE)

    def input_contract(self) -> InputContract:
        if self._contract is None:
            raise AdapterError("codex adapter used before setup()")
        return self._contract

    def checkpoint_stem(self, task: Task) -> str:
        """The name `train` gives this stage's checkpoint, before any seed suffix and `.pt`: the experts of stage 1
        apart from the full model of stage 2."""
        return task.checkpoint_key + (EXPERTS_SUFFIX if self.stage == "experts" else "")

    def checkpoint_names(self, task: Task) -> list[str]:
        trained = [f"{self.checkpoint_stem(task)}.pt"]
        released = RELEASED_FILES.get(task.checkpoint_key)
        return [released, *trained] if released and self.stage == "selector" else trained

    def prepare_training(self, task: Task, source_places: list[str], checkpoint_path: Path) -> None:
        """One expert per source place (`source_places`: the split's sorted distinct places, which each draw's
        `domain` indexes); for the selector stage, the stage-1 experts loaded from beside `checkpoint_path` and
        frozen, so that only the selector trains."""
        if self.peeks_at_labels:
            raise AdapterError("codex selection=oracle chooses experts with the test labels: it is not trained",
                               "train without --model-arg selection=oracle, then evaluate the oracle with `run`")
        if len(source_places) < 2:
            raise AdapterError(f"{task.source.slug} has {len(source_places)} place(s); CoDEX trains one expert per "
                               "place and mixes the others'", "train CoDEX on a source split with several places")
        self._shape["num_domains"] = len(source_places)
        self._build()
        if self.stage == "selector":
            self._load_experts(task, experts_path(task, checkpoint_path))

    def _load_experts(self, task: Task, path: Path) -> None:
        """Stage 1's backbone and experts (`pretrained.*` of its checkpoint), loaded strictly and frozen."""
        if not path.is_file():
            raise AdapterError(f"CoDEX's selector is trained on frozen experts, and {path} does not exist",
                               f"train them first with `rsdg-bench train --task {task.id} --model codex --model-arg "
                               f"stage=experts`, given the same --results and --seed (or --out {path})")
        state, _ = read_state_dict(path)
        backbone = {k.removeprefix("pretrained."): v for k, v in state.items() if k.startswith("pretrained.")}
        module = cast(HeadSelector, self._require_module())
        load_state_strict(module.pretrained, backbone, str(path), "CoDEX's experts")
        module.pretrained.requires_grad_(False)

    def training_loss(self, inputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stage 1: L_domain + L_con of the experts; stage 2: L_acc + L_mix of the selector (weights 1)."""
        x, days = inputs
        labels = batch["label"]
        module = cast(HeadSelector, self._require_module())
        if self.stage == "experts":
            heads, _ = module.pretrained(x, days)
            domain, consistency = expert_losses(heads, module.pretrained.all_coord_weights, labels, batch["domain"])
            return domain + consistency
        out = module(x, days)
        return accuracy_loss(out["selector_logits"], expert_accuracy(out["heads"], labels)) + \
            focal_loss(out["logits"], labels)

    def load(self, checkpoint: Path) -> None:
        """Load strictly, after sizing the domains and the selector width from the file's `linear2`."""
        state, _ = read_state_dict(checkpoint)
        selector = state.get("linear2.weight")
        if selector is None or selector.ndim != 2 or selector.shape[1] % 8:
            raise AdapterError(f"{checkpoint} has no CoDEX head selector (`linear2.weight` of D × 8·width)",
                               "pass the released best_/last_me_acc_3_encoder+decoder_1_32_classifier.ckpt")
        head = state.get("pretrained.out_convs.0.conv.conv.2.weight")
        if head is not None and head.shape[0] != self._shape["num_classes"]:
            raise AdapterError(f"{checkpoint} predicts {head.shape[0]} classes; the task has {self._shape['num_classes']}",
                               "use the checkpoint trained on this task's dataset")
        self._shape.update(num_domains=int(selector.shape[0]), out_first=int(selector.shape[1]) // 8)
        self._build()
        load_state_strict(self._require_module(), state, str(checkpoint))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise AdapterError("codex predicts time series only", "use it on codex/dynamicearthnet or codex/muds")

    def predict_series(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        if self.peeks_at_labels:
            raise AdapterError("codex selection=oracle needs the labels", "the evaluator calls oracle_series")
        module = cast(HeadSelector, self._require_module())
        if self.stage == "experts":  # no trained selector yet: the experts' plain mean
            return module.pretrained(x, days)[0].mean(dim=0)
        return module(x, days)["logits"]

    def oracle_series(self, x: torch.Tensor, days: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The scores of the one expert with the best pixel accuracy on each sample's labels (B×T×H×W)."""
        heads = self._require_module()(x, days)["heads"]  # D×B×T×K×H×W
        valid = labels != IGNORE_INDEX
        correct = ((heads.argmax(dim=3) == labels[None]) & valid[None]).flatten(2).sum(dim=2)  # D×B
        best = correct.argmax(dim=0)  # the first best head on ties
        return heads[best, torch.arange(heads.shape[1])]


def experts_path(task: Task, checkpoint_path: Path) -> Path:
    """Where stage 1's experts are, for a selector trained into `checkpoint_path`: the same folder and name with
    `-experts` after the checkpoint key (`dynamicearthnet_source.seed3.pt` → `dynamicearthnet_source-experts.seed3.pt`),
    or after the stem of a name without the key (`--out`)."""
    name = checkpoint_path.name
    if name.startswith(task.checkpoint_key):
        return checkpoint_path.with_name(task.checkpoint_key + EXPERTS_SUFFIX + name[len(task.checkpoint_key):])
    return checkpoint_path.with_name(checkpoint_path.stem + EXPERTS_SUFFIX + checkpoint_path.suffix)
