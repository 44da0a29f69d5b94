"""`rsdg-bench adapter check`: the conformance suite an adapter must pass, on synthetic input.

Checks run through the same wrapper the harness uses (padding to the size divisor, output checks), on
random normalized input, so they need no data and no GPU: contract consistency, output shape and K on
even and odd sizes, floating dtype, finite values, determinism, batch independence, sensitivity to the
input, and rejection of the wrong band count.

Every task kind is checked through one B×C×H×W → B×K×H×W view of the adapter, its kind's `map_predictor`
(`rsdg_bench/evaluator/kinds/`): a time-series adapter gets each image as a two-date series and answers with its
first date's map; a classifier's B×K scores are spread over the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rsdg_bench.base.errors import AdapterError, RsdgError
from rsdg_bench.evaluator.inference import checked_forward
from rsdg_bench.models.adapters import Adapter
from rsdg_bench.models.registry import require_adapter_kind
from rsdg_bench.protocol.kind import get_kind
from rsdg_bench.protocol.task_data import select_bands
from rsdg_bench.protocol.task_schema import Task, TaskCatalog


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


class CheckFailed(Exception):
    """A conformance check that found the adapter wrong (raised, not asserted: `python -O` must not pass it)."""


def _require(condition: bool, detail: str | Callable[[], str]) -> None:
    """Fail the current check with `detail` (a callable: computed only on failure) unless `condition` holds."""
    if not condition:
        raise CheckFailed(detail() if callable(detail) else detail)


def _attempt(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, check())
    except CheckFailed as exc:
        return CheckResult(name, False, str(exc))
    except AssertionError as exc:  # an assert inside the adapter's own code
        return CheckResult(name, False, f"AssertionError: {exc}")
    except (RsdgError, RuntimeError, ValueError, TypeError) as exc:
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}")
    except SystemExit as exc:  # an adapter that exits fails the check; it must not end `adapter check` with 0
        return CheckResult(name, False, f"the adapter exited (SystemExit {exc.code!r}) instead of raising")


def run_conformance(adapter: Adapter, task: Task, band_names: list[str], seed: int = 0,
                    device: torch.device = torch.device("cpu")) -> list[CheckResult]:
    """Run every check on an adapter that has been set up (and loaded, if a checkpoint was given), on
    `device` (the synthetic inputs are drawn on the CPU, so they are the same on every device)."""
    adapter.to(device)
    adapter.eval()
    k = task.class_schema.num_classes
    contract = adapter.input_contract()
    require_adapter_kind(task, adapter)
    predict = get_kind(task.kind).map_predictor(adapter)
    forward = checked_forward(predict, k, contract.size_divisor, adapter.name)
    generator = torch.Generator().manual_seed(seed)
    divisor = max(contract.size_divisor, 16)  # test sizes in multiples of it; at least 16 px so they stay images

    def batch(b: int, h: int, w: int, c: int | None = None) -> torch.Tensor:
        return torch.randn(b, c or contract.num_bands, h, w, generator=generator).to(device)

    def contract_matches() -> str:
        wanted = contract.band_names or ()
        _require(contract.num_bands == len(band_names) or set(wanted) <= set(band_names),
                 f"contract takes {contract.num_bands} bands, data offers {len(band_names)} ({band_names})")
        return f"{contract.num_bands} bands, normalization mean={contract.normalization.mean} std={contract.normalization.std}"

    def shapes() -> str:
        sizes = [(2 * divisor, 2 * divisor), (2 * divisor + 13, 3 * divisor - 7), (37, 53)]
        with torch.inference_mode():
            for h, w in sizes:
                out = forward(batch(2, h, w))
                _require(out.shape == (2, k, h, w), f"got {tuple(out.shape)} for {h}×{w}")
        return f"B×{k}×H×W for {sizes}"

    def dtype() -> str:
        with torch.inference_mode():
            raw = predict(batch(1, 2 * divisor, 2 * divisor))
        _require(raw.is_floating_point(), f"logits have dtype {raw.dtype}")
        return str(raw.dtype)

    def deterministic() -> str:
        x = batch(2, 2 * divisor, 2 * divisor)
        with torch.inference_mode():
            first, second = forward(x), forward(x)
        _require(torch.equal(first, second), lambda: f"two passes differ by up to {(first - second).abs().max().item():.3g}")
        return "two passes identical"

    def batch_independent() -> str:
        x = batch(3, 2 * divisor, 2 * divisor)
        with torch.inference_mode():
            together, alone = forward(x)[1], forward(x[1:2])[0]
        gap = (together - alone).abs().max().item()
        _require(gap <= 1e-4 * max(1.0, together.abs().max().item()), f"sample 1 changes by {gap:.3g} with its batch")
        return f"max difference {gap:.2g}"

    def sensitive() -> str:
        x = batch(1, 2 * divisor, 2 * divisor)
        with torch.inference_mode():
            gap = (forward(x) - forward(x + 3.0)).abs().max().item()
        _require(gap > 0, "logits do not change when the input changes")
        return f"responds to the input (max change {gap:.3g})"

    def rejects_wrong_bands() -> str:
        try:
            with torch.inference_mode():
                predict(batch(1, 2 * divisor, 2 * divisor, contract.num_bands + 1))
        except (RuntimeError, ValueError, RsdgError):
            return f"{contract.num_bands + 1} bands refused"
        raise CheckFailed(f"accepted {contract.num_bands + 1} bands though its contract says {contract.num_bands}")

    checks = [("contract", contract_matches), ("shape and K", shapes), ("dtype", dtype),
              ("finite and deterministic", deterministic), ("batch independence", batch_independent),
              ("input sensitivity", sensitive), ("band count", rejects_wrong_bands)]
    return [_attempt(name, check) for name, check in checks]


DEFAULT_CHECK_TASK = "demo/u2a"


@dataclass(frozen=True)
class CheckReport:
    """What `check_adapter` checked: the adapter (set up), the task and bands it was set up for, the results."""

    adapter: Adapter
    task: Task
    bands: list[str]
    results: list[CheckResult]

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)


def default_check_task(adapter_class: type[Adapter], catalog: TaskCatalog | None = None) -> Task:
    """The task an adapter is checked on when none is named: `demo/u2a` when the adapter segments, else the
    first task by id of a kind it declares (a time-series model gets a time-series task, a classifier a
    classification task)."""
    catalog = catalog or TaskCatalog()
    tasks = sorted(catalog.tasks.values(), key=lambda t: (t.id != DEFAULT_CHECK_TASK, t.id))
    for task in tasks:
        if task.kind in adapter_class.kinds:
            return task
    raise AdapterError(f"no task of a kind adapter {adapter_class.name!r} does ({', '.join(sorted(adapter_class.kinds))})",
                       "add a task of that kind, or pass --task")


def source_bands(task: Task) -> list[str]:
    """The bands the task's source split reaches a model with, known from the dataset's preparer (so no
    data needs to be prepared): its stored bands, narrowed to the task's `inputs.bands`."""
    from rsdg_bench.prep import get_preparer

    stored = get_preparer(task.source.dataset).domain_bands(task.source.domain)
    indices = select_bands(stored, task.inputs.bands, task.source.slug)
    return stored if indices is None else [stored[i] for i in indices]


def check_adapter(adapter_class: type[Adapter], task: Task | None = None, bands: list[str] | None = None,
                  options: dict[str, str] | None = None, checkpoint: Path | None = None,
                  device: torch.device = torch.device("cpu"), seed: int = 0) -> CheckReport:
    """Set an adapter up as a run would and run every check: on `task` (default: `default_check_task`), with
    `bands` (default: the task's source bands; a model that names its bands is checked on exactly those)."""
    task = task or default_check_task(adapter_class)
    require_adapter_kind(task, adapter_class)
    adapter = adapter_class(**(options or {}))
    chosen = list(bands) if bands is not None else source_bands(task)
    adapter.setup(task, chosen)
    named = adapter.input_contract().band_names
    if bands is None and named and list(named) != chosen:
        chosen = list(named)
        adapter.setup(task, chosen)
    if checkpoint is not None:
        adapter.load(Path(checkpoint))
    return CheckReport(adapter, task, chosen, run_conformance(adapter, task, chosen, seed=seed, device=device))
