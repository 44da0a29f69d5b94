"""A bounded cache of a frozen encoder's features, keyed by what they are computed from.

Frozen-encoder protocols (linear probe, a decoder on a frozen backbone) compute the same features for the same
input every epoch and at every selection point. The key is the sha256 of the encoder's identity (its weights'
sha256 and its options) and of the input's bytes, dtype and shape: a feature is only ever reused for the very
input that made it, so a new data version, another crop or flip, or other weights simply miss. Entries are kept
in host memory (a GPU's memory stays the model's) and evicted least recently used first once they pass
`budget_bytes`; an entry larger than the budget is not kept. A batch mixing cached and new samples computes the
new ones as a smaller batch, whose matrix products may round differently in the last bits than the whole
batch's would.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def tensor_key(encoder_digest: str, x: torch.Tensor) -> str:
    """The cache key of one input (a C×H×W tensor) to the encoder named by `encoder_digest`."""
    data = x.detach().contiguous().cpu()
    digest = hashlib.sha256(encoder_digest.encode())
    digest.update(f"{data.dtype}:{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass
class FeatureCache:
    """Least-recently-used per-sample features (lists of tensors) within a byte budget."""

    budget_bytes: int
    hits: int = 0
    misses: int = 0
    _entries: OrderedDict[str, list[torch.Tensor]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def features(self, encoder_digest: str, batch: torch.Tensor,
                 compute: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[torch.Tensor]:
        """The encoder's feature levels for a B×C×H×W batch: cached samples reused, the others computed in one
        call of `compute` (on the batch of missing samples) and kept."""
        keys = [tensor_key(encoder_digest, sample) for sample in batch]
        missing = [i for i, key in enumerate(keys) if key not in self._entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, list[torch.Tensor]] = {}
        if missing:
            levels = compute(batch[missing])
            for row, index in enumerate(missing):
                fresh[index] = [level[row].detach() for level in levels]
        per_sample = []
        for index, key in enumerate(keys):
            if index in fresh:
                per_sample.append(fresh[index])
                self._put(key, fresh[index])
            else:
                self._entries.move_to_end(key)
                per_sample.append(self._entries[key])
        return [torch.stack([sample[level].to(batch.device) for sample in per_sample])
                for level in range(len(per_sample[0]))]

    def _put(self, key: str, levels: list[torch.Tensor]) -> None:
        size = sum(level.numel() * level.element_size() for level in levels)
        if size > self.budget_bytes or key in self._entries:
            return
        self._entries[key] = [level.to("cpu", copy=True) for level in levels]  # host memory, never the GPU's
        self._bytes += size
        while self._bytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= sum(level.numel() * level.element_size() for level in evicted)
