"""CoDEX (Abhishek et al., CVPR-W 2025): MultiUTAE with one expert head per training domain, mixed per
sample by the head selector, on CoDEX's time-series tasks (`codex/dynamicearthnet`, `codex/muds`).

Registered as `codex`, kind `temporal_segmentation`. The network (`codex_model.py`) is our own
implementation of the published architecture with the authors' parameter names. **The CoDEX repository
has no licence file**: no upstream code is included, and users must obtain the weights from the authors.
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

Not implemented: CoDEX's two-stage training (experts with the affinity consistency loss, then the
selector); `rsdg-bench train` refuses this adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization, load_state_strict
from rsdg_bench.models.checkpoints import read_state_dict
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task

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


@register_adapter("codex")
class CodexAdapter(Adapter):
    """CoDEX's expert mixture (or its label-peeking Oracle) for time-series segmentation."""

    kinds = frozenset({"temporal_segmentation"})
    known_options = frozenset({"selection", "mean", "std"})

    def __init__(self, **options: str) -> None:
        options.setdefault("selection", "mixture")
        if options["selection"] not in ("mixture", "oracle"):
            raise AdapterError(f"codex option selection={options['selection']!r}", "use selection=mixture or oracle")
        super().__init__(**options)
        self.peeks_at_labels = options["selection"] == "oracle"
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

    def checkpoint_names(self, task: Task) -> list[str]:
        released = RELEASED_FILES.get(task.checkpoint_key)
        return ([released] if released else []) + super().checkpoint_names(task)

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
        return self._require_module()(x, days)["logits"]

    def oracle_series(self, x: torch.Tensor, days: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The scores of the one expert with the best pixel accuracy on each sample's labels (B×T×H×W)."""
        heads = self._require_module()(x, days)["heads"]  # D×B×T×K×H×W
        valid = labels != IGNORE_INDEX
        correct = ((heads.argmax(dim=3) == labels[None]) & valid[None]).flatten(2).sum(dim=2)  # D×B
        best = correct.argmax(dim=0)  # the first best head on ties
        return heads[best, torch.arange(heads.shape[1])]
