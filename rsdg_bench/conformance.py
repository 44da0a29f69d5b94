"""`rsdg-bench adapter check`: the conformance suite an adapter must pass, on synthetic input.

Checks run through the same wrapper the harness uses (padding to the size divisor, output checks), on
random normalized input, so they need no data and no GPU: contract consistency, output shape and K on
even and odd sizes, floating dtype, finite values, determinism, batch independence, sensitivity to the
input, and rejection of the wrong band count.

Every task kind is checked through one B×C×H×W → B×K×H×W view of the adapter (`map_predictor`): a
time-series adapter gets each image as a two-date series (the image and its mirror, 31 days apart) and
answers with its first date's map; a classifier's B×K scores are spread over the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .adapters import Adapter
from .errors import RsdgError
from .inference import checked_forward
from .task_schema import Task


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


def _attempt(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, check())
    except AssertionError as exc:
        return CheckResult(name, False, str(exc))
    except (RsdgError, RuntimeError, ValueError, TypeError) as exc:
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}")


def run_conformance(adapter: Adapter, task: Task, band_names: list[str], seed: int = 0,
                    device: torch.device = torch.device("cpu")) -> list[CheckResult]:
    """Run every check on an adapter that has been set up (and loaded, if a checkpoint was given), on
    `device` (the synthetic inputs are drawn on the CPU, so they are the same on every device)."""
    adapter.to(device)
    adapter.eval()
    k = task.class_schema.num_classes
    contract = adapter.input_contract()
    if task.kind not in adapter.kinds:
        raise RsdgError(f"adapter {adapter.name!r} does {', '.join(sorted(adapter.kinds))}, task {task.id} is {task.kind}",
                        "check it with --task set to a task of its kind (`rsdg-bench tasks list`)")
    predict = map_predictor(adapter, task.kind)
    forward = checked_forward(predict, k, contract.size_divisor, adapter.name)
    generator = torch.Generator().manual_seed(seed)
    divisor = max(contract.size_divisor, 16)  # test sizes in multiples of it; at least 16 px so they stay images

    def batch(b: int, h: int, w: int, c: int | None = None) -> torch.Tensor:
        return torch.randn(b, c or contract.num_bands, h, w, generator=generator).to(device)

    def contract_matches() -> str:
        wanted = contract.band_names or ()
        assert contract.num_bands == len(band_names) or set(wanted) <= set(band_names), (
            f"contract takes {contract.num_bands} bands, data offers {len(band_names)} ({band_names})")
        return f"{contract.num_bands} bands, normalization mean={contract.normalization.mean} std={contract.normalization.std}"

    def shapes() -> str:
        sizes = [(2 * divisor, 2 * divisor), (2 * divisor + 13, 3 * divisor - 7), (37, 53)]
        with torch.inference_mode():
            for h, w in sizes:
                out = forward(batch(2, h, w))
                assert out.shape == (2, k, h, w), f"got {tuple(out.shape)} for {h}×{w}"
        return f"B×{k}×H×W for {sizes}"

    def dtype() -> str:
        with torch.inference_mode():
            raw = predict(batch(1, 2 * divisor, 2 * divisor))
        assert raw.is_floating_point(), f"logits have dtype {raw.dtype}"
        return str(raw.dtype)

    def deterministic() -> str:
        x = batch(2, 2 * divisor, 2 * divisor)
        with torch.inference_mode():
            first, second = forward(x), forward(x)
        assert torch.equal(first, second), f"two passes differ by up to {(first - second).abs().max().item():.3g}"
        return "two passes identical"

    def batch_independent() -> str:
        x = batch(3, 2 * divisor, 2 * divisor)
        with torch.inference_mode():
            together, alone = forward(x)[1], forward(x[1:2])[0]
        gap = (together - alone).abs().max().item()
        assert gap <= 1e-4 * max(1.0, together.abs().max().item()), f"sample 1 changes by {gap:.3g} with its batch"
        return f"max difference {gap:.2g}"

    def sensitive() -> str:
        x = batch(1, 2 * divisor, 2 * divisor)
        with torch.inference_mode():
            gap = (forward(x) - forward(x + 3.0)).abs().max().item()
        assert gap > 0, "logits do not change when the input changes"
        return f"responds to the input (max change {gap:.3g})"

    def rejects_wrong_bands() -> str:
        try:
            with torch.inference_mode():
                predict(batch(1, 2 * divisor, 2 * divisor, contract.num_bands + 1))
        except (RuntimeError, ValueError, RsdgError):
            return f"{contract.num_bands + 1} bands refused"
        raise AssertionError(f"accepted {contract.num_bands + 1} bands though its contract says {contract.num_bands}")

    checks = [("contract", contract_matches), ("shape and K", shapes), ("dtype", dtype),
              ("finite and deterministic", deterministic), ("batch independence", batch_independent),
              ("input sensitivity", sensitive), ("band count", rejects_wrong_bands)]
    return [_attempt(name, check) for name, check in checks]


def map_predictor(adapter: Adapter, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """B×C×H×W → B×K×H×W through the adapter's entry point for `kind` (module docstring)."""
    if kind == "temporal_segmentation":
        def series(x: torch.Tensor) -> torch.Tensor:
            dates = torch.stack([x, x.flip(-1)], dim=1)
            days = torch.tensor([[0, 31]], dtype=torch.int64, device=x.device).expand(x.shape[0], -1)
            return adapter.predict_series(dates, days)[:, 0]

        return series
    if kind == "classification":
        def spread(x: torch.Tensor) -> torch.Tensor:
            return adapter.classify(x)[:, :, None, None].expand(-1, -1, *x.shape[-2:])

        return spread
    return adapter.predict
