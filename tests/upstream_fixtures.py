"""Reading the upstream reference data in tests/fixtures/upstream (see its README): key/shape manifests,
parity fixtures re-encoded as JSON text, and synthetic state dicts with a manifest's keys and shapes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "fixtures" / "upstream"


def manifest_file(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


def manifest(name: str) -> dict[str, list[int]]:
    """{key: shape} of a manifest, in state-dict order."""
    return manifest_file(name)["keys"]


def _decode(value: object) -> object:
    if isinstance(value, dict) and set(value) == {"dtype", "shape", "base64"}:
        array = np.frombuffer(base64.b64decode(value["base64"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        return torch.from_numpy(array.astype(array.dtype.newbyteorder("="))).reshape(value["shape"])
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def load_fixture(name: str) -> dict:
    """A `fx_*.pt` fixture (config, state_dict, input, output) from its JSON encoding (encode_fixture.py)."""
    return _decode(json.loads((REFERENCE / name).read_text()))


def synthetic_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random tensors with the given keys and shapes (BN statistics kept plausible)."""
    generator = torch.Generator().manual_seed(seed)

    def tensor(key: str, shape: list[int]) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return torch.randint(0, 5, shape, generator=generator)
        if key.endswith("running_var"):  # a variance must be positive, as in any real checkpoint
            return torch.rand(shape, generator=generator) + 0.5
        return torch.randn(shape, generator=generator) * 0.1

    return {k: tensor(k, shape) for k, shape in shapes.items()}
