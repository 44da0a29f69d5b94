"""Evaluating an adapter on one split: prepared samples → harness normalization → inference → confusion matrix.

Every task kind is scored by the same confusion-matrix engine (`metrics.py`); what one sample contributes
is the task kind's business (`rsdg_bench/evaluator/kinds/`): this module normalizes, loops, counts and shares the
counts between processes, and holds the output checks the kinds wrap an adapter's entry points with.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.datasets.read_ahead import (
    AUTO,
    ReadThreadChoice,
    ReadThreads,
    calibrated_read_ahead,
    default_read_threads,
    read_ahead,
)
from rsdg_bench.evaluator import inference
from rsdg_bench.evaluator.distributed import ProcessGroup
from rsdg_bench.evaluator.inference import check_logits
from rsdg_bench.models.adapters import Adapter, InputContract
from rsdg_bench.protocol.kind import SampleNormalizer, get_kind
from rsdg_bench.protocol.task_data import SegmentationSplit
from rsdg_bench.protocol.task_schema import Task
from rsdg_bench.scoring.metrics import batch_confusion_counts, confusion_counts
from rsdg_bench.scoring.split_counts import SplitCounts


def evaluate_split_counts(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device, *,
                          num_workers: int = 0, progress: bool = True, group: ProcessGroup = ProcessGroup(),
                          window_batch: int = 1,
                          on_prediction: Callable[[dict, torch.Tensor], None] | None = None,
                          batch_size: int = 1, precision: str = "fp32", read_threads: ReadThreads | None = None
                          ) -> SplitCounts:
    """Every sample of `split` scored (see `SplitCounts`).

    Under torchrun each rank fills the rows of its exact shard and the tensors are summed, so every rank
    returns the counts of the whole split. `on_prediction(sample, prediction)` sees each sample the main
    process evaluates (to keep a few predictions). `batch_size` samples go to the loader at once and equal-size
    images through one forward pass; each image's matrix is counted where its prediction is (on the GPU, one
    K×K transfer per image). Without loader workers, threads of this process read samples ahead of the
    model (`read_ahead`; `read_threads`, by default `default_read_threads(device)`: two on the CPU, beside an
    accelerator `auto`, the count measured on the split's first images, `calibrated_read_ahead`); with loader workers decoding
    on some cores, the main process's intra-op threads are set to the cores left (all recorded in
    `SplitCounts.execution`). `precision` bf16 / fp16 runs the adapter under autocast (the logits are scored in
    float32); float32 arithmetic is IEEE's unless `precision` is tf32 (`float32_arithmetic`).
    """
    num_classes = task.class_schema.num_classes
    normalize = _normalizer(adapter, split, task, device)
    # On the CPU without loader workers, the reading threads normalize each sample as they read it, beside the
    # model (per sample or per batch, the same float32 operations on each value: the same bits).
    when_read = device.type == "cpu" and num_workers == 0
    setting = 0 if num_workers else (read_threads or default_read_threads(device))
    readers: int | ReadThreadChoice = ReadThreadChoice() if setting == AUTO else int(setting)
    score = get_kind(task.kind).batch_scorer(adapter, split, task, device, _as_read if when_read else normalize,
                                             window_batch)
    counts = SplitCounts.empty(len(split), num_classes)
    indices = group.shard(len(split))
    adapter.eval()
    positions = iter(indices)
    bar = tqdm(total=len(indices), desc=f"eval {split.ref.slug}", unit="img", leave=False,
               disable=not (progress and group.is_main))
    with group.failing_together(f"on {split.ref.slug}"):
        try:
            with (torch.inference_mode(), intra_op_threads(num_workers, device) as threads,
                  float32_arithmetic(precision), autocast(precision, device),
                  _batches(split.for_inference(), indices, batch_size, num_workers, readers, device,
                           _normalized_sample(normalize) if when_read else None) as loader):
                for samples in loader:
                    pairs = score(samples)
                    for sample, (_, prediction), (matrix, stray) in zip(samples, pairs,
                                                                        _counted(pairs, num_classes, adapter.name),
                                                                        strict=True):
                        counts.put(next(positions), matrix, stray)
                        if on_prediction is not None and group.is_main:
                            on_prediction(sample, prediction.cpu())
                    bar.update(len(samples))
        except SystemExit as exc:  # an adapter that exits must not end the run as if it had succeeded
            raise AdapterError(f"adapter {adapter.name} exited (SystemExit {exc.code!r}) while evaluating "
                               f"{split.ref.slug}", "an adapter must raise an exception, never call sys.exit()") from None
        finally:
            bar.close()
    execution = {"intra_op_threads": threads, "loader_workers": num_workers,
                 "batch_size": batch_size, "precision": precision}
    execution |= readers.execution() if isinstance(readers, ReadThreadChoice) else {"read_threads": readers}
    return SplitCounts(group.gather_rows(counts.per_image), group.gather_rows(counts.ignored), execution)


@contextlib.contextmanager
def _batches(dataset: SegmentationSplit, indices: Sequence[int], batch_size: int, num_workers: int,
             read_threads: int | ReadThreadChoice, device: torch.device, then: Callable[[dict], dict] | None = None
             ) -> Iterator[Iterable[list[dict]]]:
    """The samples at `indices`, `batch_size` at a time in order: from `num_workers` DataLoader worker processes
    when asked, otherwise read ahead by `read_threads` threads of this process (`read_ahead`: no transfer
    between processes; a `ReadThreadChoice` is filled in by measuring, `calibrated_read_ahead`), which also
    apply `then` to each sample. Pinned for a CUDA device."""
    pin = device.type == "cuda"
    if isinstance(read_threads, ReadThreadChoice):
        with calibrated_read_ahead(dataset, indices, batch_size, read_threads, pin_memory=pin, then=then) as batches:
            yield batches
        return
    if num_workers == 0:
        with read_ahead(dataset, indices, batch_size, read_threads, pin_memory=pin, then=then) as batches:
            yield batches
        return
    # torch types Subset's dataset as a `Dataset`; it needs only the split's __getitem__ and __len__
    yield DataLoader(Subset(dataset, indices),  # type: ignore[arg-type]
                     batch_size=batch_size, num_workers=num_workers, collate_fn=list,
                     prefetch_factor=4, pin_memory=pin)


def _counted(pairs: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int, who: str
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each (label, prediction) pair's (matrix, ignored-pixel predictions). Predictions on an accelerator, as
    uint8 maps with uint8 labels, are counted there a batch at a time with one copy to the host (a pixel
    marked class K had non-finite scores: the adapter's error, `inference.class_indices`); any other pair
    one at a time, on the CPU by the compiled loops."""
    on_device = [inference.counts_on_device(p.device) and p.dtype == torch.uint8 and label.dtype == torch.uint8
                 for label, p in pairs]
    if pairs and all(on_device):
        device = pairs[0][1].device
        labels = [label.to(device, non_blocking=True) for label, _ in pairs]
        per_image, non_finite = batch_confusion_counts(labels, [p for _, p in pairs], num_classes)
        if non_finite:
            raise inference.non_finite_error(who)
        return per_image
    return [confusion_counts(label.to(p.device, non_blocking=True), p, num_classes) for label, p in pairs]


@contextlib.contextmanager
def intra_op_threads(num_workers: int, device: torch.device) -> Iterator[int]:
    """While loader workers decode on CPU cores, the main process's torch threads are the cores left (at least
    one, never more than it had), so the cores are not oversubscribed; restored afterwards. Yields the count."""
    before = torch.get_num_threads()
    if num_workers > 0 and device.type == "cpu":
        torch.set_num_threads(max(1, min(before, len(os.sched_getaffinity(0)) - num_workers)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def float32_arithmetic(precision: str) -> Iterator[None]:
    """While a split is scored, float32 convolutions and matrix products are IEEE float32, or TF32 (10-bit
    mantissa, on NVIDIA GPUs) only at `--precision tf32`; the process's settings are restored afterwards.

    PyTorch lets cuDNN run float32 convolutions in TF32 by default. On an H100, smp's U-Net with TF32 moved
    88 of 2,097,152 pixels against the CPU's float32, and 7 and 0 (two machines) in IEEE float32
    (`bench/cuda_batching.py --cpu-check`): a record that says fp32 is float32 on every device. TF32 ran the
    network 2.2× faster there (model ceiling 297 against 137 images/s), so it can be asked for by name.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to bf16 / fp16 on the device for `run --precision`; nothing at fp32 or tf32."""
    if precision in ("fp32", "tf32"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def _normalizer(adapter: Adapter, split: SegmentationSplit, task: Task, device: torch.device) -> SampleNormalizer:
    """The harness's normalization of an image batch under the adapter's contract, on the device."""
    contract = adapter.input_contract()

    def prepare(image: torch.Tensor, sample: dict) -> torch.Tensor:
        return contract.prepare(image.to(device), split.band_names, where=f"{split.ref.slug} sample {sample['sample_id']}",
                                replicate_single_band=task.inputs.replicate_single_band)

    return prepare


def _normalized_sample(normalize: SampleNormalizer) -> Callable[[dict], dict]:
    """A sample with its image normalized, for a reading thread: any leading dimensions (a series' dates) are
    normalized as a batch, as the kinds do."""

    def apply(sample: dict) -> dict:
        image = sample["image"]
        flat = normalize(image.reshape(-1, *image.shape[-3:]), sample)
        return {**sample, "image": flat.reshape(*image.shape[:-3], *flat.shape[-3:])}

    return apply


def _as_read(image: torch.Tensor, sample: dict) -> torch.Tensor:
    """The image as the reading thread left it (already normalized: `_normalized_sample`)."""
    return image


SeriesForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def checked_series_forward(predict_series: SeriesForward, num_classes: int, size_divisor: int, who: str
                           ) -> SeriesForward:
    """Wrap an adapter's `predict_series` with padding to `size_divisor`, cropping back and output checks of
    type and shape: B×T×C×H×W and B×T day offsets → B×T×K×H×W logits. Their finiteness is checked by
    `inference.class_indices`, in the same pass that finds the classes."""

    def forward(x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        batch, frames, _, height, width = x.shape
        pad_h, pad_w = (-height) % size_divisor, (-width) % size_divisor
        padded = F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        logits = predict_series(padded, days)
        check_logits(logits, (batch, frames, num_classes, height + pad_h, width + pad_w), who, tuple(padded.shape),
                      "B×T×K×H×W logits, one map per date", finite=False)
        return logits[..., :height, :width].float()

    return forward


def checked_classify(classify: Callable[[torch.Tensor], torch.Tensor], num_classes: int, who: str
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap an adapter's `classify` with output checks of type and shape: B×C×H×W → B×K logits. Their
    finiteness is checked by `inference.class_indices`, in the pass that finds the classes."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = classify(x)
        check_logits(logits, (x.shape[0], num_classes), who, tuple(x.shape), "B×K logits", finite=False)
        return logits.float()

    return forward


def prepare_series(contract: InputContract, image: torch.Tensor, band_names: list[str], where: str) -> torch.Tensor:
    """Normalize a B×T×C×H×W batch frame by frame under the adapter's contract."""
    batch, frames = image.shape[:2]
    flat = contract.prepare(image.flatten(0, 1), band_names, where)
    return flat.reshape(batch, frames, *flat.shape[1:])
