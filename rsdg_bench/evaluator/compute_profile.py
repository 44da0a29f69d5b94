"""What a model costs on a task: parameters, GFLOPs per image, latency, throughput and peak memory, with the
device named (`rsdg-bench profile`; the board shows it beside the scores and plots target score against
GFLOPs).

Everything is measured through the task kind's map predictor (`TaskKind.map_predictor`: the entry point the
harness calls), on random inputs of the task's model-facing size (`input_size`): the inference window, else
the training crop, with the bands the task gives the model. FLOPs are counted by `torch.utils.flop_counter`
on one image (a multiply-add is two FLOPs; operations it has no formula for, such as a custom CUDA kernel,
count zero, so a model may cost more than it says). Latency is the median of `repeats` forward passes of one
image, throughput the images per second of batches of `batch`, each after one warm-up pass, synchronized on
a GPU; peak memory is the CUDA allocator's peak during a batch (not measured on the CPU). A profile depends
on the model's configuration, not its weights; it is stored per (adapter, options) and task under
`<results>/profiles/`, and the board joins it to the rows of the same adapter and options.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from rsdg_bench.base.io import atomic_write_text, canonical_json, sha256_bytes
from rsdg_bench.protocol.task_schema import Task

PROFILES_DIR = "profiles"


class ComputeProfile(BaseModel):
    """One stored profile; every number finite and in range, so a hand-edited file is refused, not plotted."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    adapter: str
    options: dict[str, Any]
    task_id: str
    input_size: tuple[PositiveInt, PositiveInt]
    bands: PositiveInt
    parameters: NonNegativeInt
    trainable_parameters: NonNegativeInt
    gflops: float = Field(ge=0)                     # per image at input_size
    latency_ms: float = Field(gt=0)                 # one image, median
    throughput: float = Field(gt=0)                 # images per second at `batch`
    batch: PositiveInt
    peak_memory_mib: float | None = Field(ge=0)     # CUDA allocator's peak during a batch; None on the CPU
    device: str
    torch_version: str


def input_size(task: Task, first_target: tuple[int, int] | None = None) -> tuple[int, int]:
    """The model-facing image size of a task: its sliding window; for whole-image inference the size of its
    first target image (`first_target`, H×W, from the prepared manifest), else its training crop, else 256."""
    if task.inference.mode == "slide" and task.inference.crop:
        return task.inference.crop, task.inference.crop
    if first_target is not None:
        return first_target
    side = task.inference.crop or (task.training.crop if task.training else None) or 256
    return side, side


def measure(adapter: Any, task: Task, device: Any, bands: int, *, batch: int = 4, repeats: int = 5,
            size: tuple[int, int] | None = None) -> ComputeProfile:
    """Profile a set-up adapter on `task` at `size` (default `input_size(task)`; see the module docstring)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rsdg_bench.protocol.kind import get_kind

    predictor = get_kind(task.kind).map_predictor(adapter)
    module = adapter.module
    height, width = size or input_size(task)
    parameters = sum(p.numel() for p in module.parameters()) if module is not None else 0
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad) if module is not None else 0
    generator = torch.Generator().manual_seed(0)

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, bands, height, width, generator=generator).to(device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    adapter.eval()
    with torch.inference_mode():
        one = images(1)
        with FlopCounterMode(display=False) as counter:
            predictor(one)
        gflops = counter.get_total_flops() / 1e9
        times = []
        for _ in range(repeats + 1):  # the first is the warm-up
            synchronize()
            start = time.perf_counter()
            predictor(one)
            synchronize()
            times.append(time.perf_counter() - start)
        latency = 1000 * statistics.median(times[1:])
        many = images(batch)
        predictor(many)  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            predictor(many)
        synchronize()
        throughput = batch * repeats / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return ComputeProfile(
        adapter=adapter.name, options=dict(sorted(adapter.options.items())), task_id=task.id,
        input_size=(height, width), bands=bands, parameters=parameters, trainable_parameters=trainable,
        gflops=gflops, latency_ms=latency, throughput=throughput, batch=batch, peak_memory_mib=peak,
        device=device_name(device), torch_version=torch.__version__)


def device_name(device: Any) -> str:
    """The device as a reader should see it: the GPU's model, or the CPU's with its thread count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def profile_key(adapter: str, options: dict[str, Any], task_id: str) -> tuple[str, str, str]:
    """How the board finds a row's profile: its adapter, its options (canonical JSON) and the task."""
    return adapter, canonical_json(dict(sorted(options.items()))), task_id


def by_key(profiles: list[ComputeProfile]) -> dict[tuple[str, str, str], ComputeProfile]:
    return {profile_key(p.adapter, p.options, p.task_id): p for p in profiles}


def profile_path(results_root: Path, profile: ComputeProfile) -> Path:
    """Where a profile is stored: one file per (adapter, options) and task."""
    key = sha256_bytes(canonical_json({"adapter": profile.adapter, "options": profile.options}).encode())[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", profile.adapter).lstrip(".") or "adapter"  # a plug-in's name: no path
    return Path(results_root) / PROFILES_DIR / f"{name}-{key}" / f"{profile.task_id.replace('/', '__')}.json"


def save(results_root: Path, profile: ComputeProfile) -> Path:
    path = profile_path(results_root, profile)
    atomic_write_text(path, json.dumps(profile.model_dump(mode="json"), indent=1))
    return path


def load_all(results_root: Path) -> list[ComputeProfile]:
    """Every valid profile under `<results>/profiles/` (a file that does not parse is skipped: profiles are
    display only, never a number a ranking uses)."""
    from pydantic import ValidationError

    found = []
    for path in sorted((Path(results_root) / PROFILES_DIR).glob("*/*.json")):
        try:
            found.append(ComputeProfile.model_validate_json(path.read_bytes()[:1_000_000]))
        except (OSError, ValidationError):
            continue
    return found
