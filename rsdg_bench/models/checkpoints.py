"""Reading model checkpoints safely: one loader for the containers the upstream projects write.

`read_state_dict` opens a file with `torch.load(weights_only=True)` (no arbitrary unpickling), or a
safetensors file (most weights on the Hub today; a format that holds tensors and nothing else) with
`safetensors.torch.load_file`, and unwraps the known containers: a bare state dict, `{"state_dict": ...}`
(Lightning, mmcv-1 / mmengine with `meta`, and `rsdg-bench train`), `{"model": ...}`, and strips a
DataParallel `module.` prefix.
`remap` renames keys by regex rules and sets aside keys it is told to drop. `fit_report` compares a
state dict with a module and names every missing, unexpected and mis-shaped key; `load_checked` raises
on anything the caller did not declare acceptable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rsdg_bench.base.errors import AdapterError


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors by key, the container kind) of a checkpoint file: PyTorch's format or safetensors."""
    if is_safetensors(Path(path)):
        return _strip_data_parallel(_read_safetensors(Path(path))), "safetensors"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt, truncated or foreign file
        raise AdapterError(f"cannot read checkpoint {path}: {_what_went_wrong(Path(path), exc)}",
                           "pass the model's PyTorch weights file (.pth/.pt/.ckpt); if it is one, it is corrupt or "
                           "truncated: download it again") from exc
    kind = "state dict"
    if isinstance(payload, dict):
        for wrapper in ("state_dict", "model"):
            inner = payload.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                kind = "mmcv/mmengine" if "meta" in payload else ("lightning" if "pytorch-lightning_version" in payload
                                                                   or "epoch" in payload else wrapper)
                payload = inner
                break
    if not (isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())):
        raise AdapterError(f"checkpoint {path} holds no state dict (a mapping of names to tensors)",
                           "pass the model weights file, not an optimizer or config file")
    return _strip_data_parallel(dict(payload)), kind


def _strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without DataParallel's `module.` prefix, when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


def is_safetensors(path: Path) -> bool:
    """A safetensors file: named so, or starting with its header (8-byte little-endian length, then '{')."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False  # torch.load reports it, naming the file
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterError(f"cannot read checkpoint {path}: a safetensors file that does not load ({exc})",
                           "download it again: it is corrupt or truncated") from exc
    if not state:
        raise AdapterError(f"checkpoint {path} holds no tensors", "pass the model weights file")
    return state


def _what_went_wrong(path: Path, exc: BaseException) -> str:
    """What the file is, when torch cannot load it: torch's own message for a foreign file is often a bare
    number (a text file gives `KeyError: 101`)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        return error.strerror or str(error)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return f"a PyTorch file that does not load ({type(exc).__name__}: {exc})"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return f"a text file (it starts {head[:32].decode(errors='replace')!r}), not a PyTorch checkpoint"
    return f"not a PyTorch checkpoint (torch says {type(exc).__name__}: {exc})"


def remap(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], drop: Sequence[str] = ()
          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keys renamed by the first matching `(pattern, replacement)` rule (anchored regexes); keys matching
    a `drop` pattern, or no rule at all, are returned separately as the dropped ones."""
    kept, dropped = {}, []
    for key, value in state.items():
        if any(re.match(pattern, key) for pattern in drop):
            dropped.append(key)
            continue
        for pattern, replacement in rules:
            if re.match(pattern, key):
                kept[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            dropped.append(key)
    return kept, dropped


@dataclass
class FitReport:
    """How a state dict fits a module."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def describe(self) -> str:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")
        return "; ".join(f"{label}: {show(keys)}" for label, keys in
                         (("missing", self.missing), ("unexpected", self.unexpected), ("wrong shape", self.mis_shaped))
                         if keys)


def fit_report(module: nn.Module, state: dict[str, torch.Tensor]) -> FitReport:
    own = module.state_dict()
    return FitReport(
        missing=sorted(set(own) - set(state)), unexpected=sorted(set(state) - set(own)),
        mis_shaped=sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)))


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str,
                 may_be_missing: str | None = None) -> FitReport:
    """Load `state` into `module`. Missing keys are allowed only where they match `may_be_missing` (e.g. a
    decoder trained from scratch); anything else unexplained raises, naming the keys."""
    report = fit_report(module, state)
    allowed = [k for k in report.missing if may_be_missing and re.match(may_be_missing, k)]
    problems = FitReport([k for k in report.missing if k not in allowed], report.unexpected, report.mis_shaped)
    if not problems.clean:
        raise AdapterError(f"{source} does not fit {what} ({problems.describe()})",
                           "check the model options (architecture, bands, classes, variant) match the checkpoint")
    module.load_state_dict(state, strict=not allowed)
    return report
