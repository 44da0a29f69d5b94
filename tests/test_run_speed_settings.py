"""The run path's speed settings change no number: batches of equal-size images, loader workers with the
main process's threads set to the cores left, the fused normalization; and a lower precision is its own
result (named in the record, its key and its leaderboard row), refused where the adapter or device cannot."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TrainableNormedNet

import rsdg_bench as rb
from rsdg_bench.base.errors import AdapterError, DataError
from rsdg_bench.datasets.read_ahead import BATCHES_AHEAD, MAX_READ_THREADS, READ_THREADS, read_ahead, read_threads_for
from rsdg_bench.evaluator.evaluation import float32_arithmetic, intra_op_threads
from rsdg_bench.models.adapters import Normalization
from rsdg_bench.models.module_adapter import ModuleAdapter
from rsdg_bench.records.results import decode_per_image


def _matrices(evaluation: rb.Evaluation) -> list:
    return [decode_per_image(record.per_image_matrices[slug]).tolist()
            for record in evaluation.records for slug in record.per_image_matrices]


def test_batched_images_and_loader_workers_count_what_one_at_a_time_counts(data_root: Path):
    """A 3×3 convolution with batch norm (in eval mode, as run puts it) and padding at the image edges: what
    could tell a batch of images from one image, at a fraction of a U-Net's cost per window."""
    adapter = TrainableNormedNet()
    task = rb.load_task("demo/u2a")
    one = rb.evaluate(adapter, task, data_root=data_root, limit=5, progress=False)
    batched = rb.evaluate(adapter, task, data_root=data_root, limit=5, progress=False, batch_size=3, num_workers=1)
    assert _matrices(batched) == _matrices(one) and sum(map(len, _matrices(one))) >= 5  # per image, in order
    assert [r.key for r in batched.records] == [r.key for r in one.records]  # a speed setting: the same result
    execution = batched.records[0].provenance.execution
    assert execution["batch_size"] == 3 and execution["loader_workers"] == 1 and execution["precision"] == "fp32"
    assert one.records[0].provenance.execution["intra_op_threads"] == torch.get_num_threads()
    assert one.records[0].provenance.execution["read_threads"] == READ_THREADS  # no workers: read ahead by threads
    assert execution["read_threads"] == 0


class SlowReads:
    """A dataset whose reads finish out of order (later indices sooner) and one of which fails."""

    def __init__(self, failing: int | None = None) -> None:
        self.failing, self.started = failing, []

    def __getitem__(self, index: int) -> dict:
        self.started.append(index)
        time.sleep(0.002 * (10 - index % 10))
        if index == self.failing:
            raise DataError(f"sample {index} is corrupt", "prepare it again")
        return {"image": torch.full((2,), index), "sample_id": f"s{index}"}


def test_samples_read_ahead_by_threads_come_in_order_and_a_failed_read_stops_them_all():
    indices = [4, 0, 7, 3, 9, 1, 8, 2, 6, 5, 11, 10]
    with read_ahead(SlowReads(), indices, batch_size=5, threads=3) as batches:
        got = [[s["sample_id"] for s in batch] for batch in batches]
    assert got == [[f"s{i}" for i in indices[:5]], [f"s{i}" for i in indices[5:10]], [f"s{i}" for i in indices[10:]]]
    dataset = SlowReads(failing=3)
    seen = []
    with pytest.raises(DataError, match="sample 3 is corrupt"):
        with read_ahead(dataset, list(range(40)), batch_size=1, threads=2) as batches:
            for batch in batches:
                seen.append(batch[0]["sample_id"])
    assert seen == ["s0", "s1", "s2"]  # everything before the failure, in order, and nothing after it
    assert len(dataset.started) <= 3 + 1 + BATCHES_AHEAD + 2  # bounded read-ahead, not the whole split
    assert not [t for t in threading.enumerate() if t.name.startswith("rsdg-read")]  # no reader outlives it


class ConcurrentReads:
    """A dataset that records how many of its reads run at once."""

    def __init__(self) -> None:
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def __getitem__(self, index: int) -> dict:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        return {"image": torch.full((2,), index), "sample_id": f"s{index}"}


def test_every_reading_thread_has_work_when_batches_are_larger_than_the_threads_are_many():
    """A batch is read by all the threads, a sample each, not by one thread (beside a GPU, batches of 8 and
    8 threads left 7 idle), and the batches are still the consecutive runs of `indices`."""
    dataset = ConcurrentReads()
    with read_ahead(dataset, list(range(16)), batch_size=8, threads=4) as batches:
        got = [[s["sample_id"] for s in batch] for batch in batches]
    assert got == [[f"s{i}" for i in range(8)], [f"s{i}" for i in range(8, 16)]]
    assert dataset.most == 4


def test_threads_read_ahead_for_the_cpu_and_beside_a_gpu(monkeypatch: pytest.MonkeyPatch):
    """On the CPU the model's threads use the cores: two readers. Beside a GPU, every core but the main
    thread's, from two up to MAX_READ_THREADS."""
    assert read_threads_for(torch.device("cpu")) == READ_THREADS == 2
    for cores, readers in ((1, 2), (4, 3), (16, MAX_READ_THREADS), (64, MAX_READ_THREADS)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert read_threads_for(torch.device("cuda")) == readers


class SeesArithmetic(torch.nn.Module):
    """A 1×1 convolution that notes whether TF32 was allowed when it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.seen = torch.nn.Conv2d(3, 5, 1), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return self.conv(x)


def test_fp32_is_ieee_float32_while_scoring_and_tf32_only_when_asked_for_by_name(data_root: Path):
    """PyTorch lets cuDNN use TF32 for float32 convolutions by default, which moved pixels against the CPU's
    float32 on an H100: at fp32 the harness turns it off while it scores, and gives the process its
    settings back afterwards; `float32_arithmetic("tf32")` allows both."""
    backends = (torch.backends.cudnn, torch.backends.cuda.matmul)
    before = [backend.allow_tf32 for backend in backends]
    try:
        for backend in backends:
            backend.allow_tf32 = True
        module = SeesArithmetic()
        contract = rb.InputContract(3, rb.Normalization((0.0,) * 3, (1.0,) * 3))
        rb.evaluate(module, "demo/u2a", input_contract=contract, data_root=data_root, limit=2, progress=False)
        assert module.seen and set(module.seen) == {(False, False)}
        assert [backend.allow_tf32 for backend in backends] == [True, True]
        for backend in backends:
            backend.allow_tf32 = False
        with float32_arithmetic("tf32"):
            assert [backend.allow_tf32 for backend in backends] == [True, True]
        assert [backend.allow_tf32 for backend in backends] == [False, False]
    finally:
        for backend, allowed in zip(backends, before, strict=True):
            backend.allow_tf32 = allowed


def test_the_reading_threads_step_runs_on_every_sample_in_order_and_its_error_reaches_the_loop():
    """Evaluation normalizes in the reading threads (`then`): each sample gets it once, in order, and an
    error there (a band the model needs is missing) is raised where the batch is taken, as in the loop."""

    def double(sample: dict) -> dict:
        if sample["sample_id"] == "s6":
            raise AdapterError("s6 has bands ['red']; the model needs ['nir'] too", "evaluate another domain")
        return {**sample, "image": sample["image"] * 2}

    with read_ahead(SlowReads(), [3, 1, 2], batch_size=2, then=double) as batches:
        got = [(s["sample_id"], s["image"].tolist()) for batch in batches for s in batch]
    assert got == [("s3", [6, 6]), ("s1", [2, 2]), ("s2", [4, 4])]
    seen = []
    with pytest.raises(AdapterError, match="the model needs"):
        with read_ahead(SlowReads(), list(range(10)), batch_size=1, then=double) as batches:
            for batch in batches:
                seen.append(batch[0]["sample_id"])
    assert seen == [f"s{i}" for i in range(6)]  # every sample before the failing one, then the error


def test_loader_workers_leave_the_main_process_the_cores_they_do_not_use():
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    with intra_op_threads(1, torch.device("cpu")) as threads:
        assert threads == torch.get_num_threads() == max(1, min(before, cores - 1))
    with intra_op_threads(0, torch.device("cpu")) as threads:
        assert threads == before
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32, torch.float64])
def test_normalization_is_bit_identical_to_convert_subtract_divide(dtype: torch.dtype):
    image = (torch.rand(2, 3, 17, 19, generator=torch.Generator().manual_seed(1)) * 300).to(dtype)
    for mean, std in (((0.0,) * 3, (1.0,) * 3), ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
                      ((0.0,) * 3, (58.4, 57.1, 57.3)), ((1.5, 2.0, 3.0), (1.0,) * 3)):
        reference = image.to(torch.float32, copy=True).sub_(torch.tensor(mean).view(1, -1, 1, 1)) \
            .div_(torch.tensor(std).view(1, -1, 1, 1))
        normalized = Normalization(mean, std).apply(image)
        assert normalized.dtype == torch.float32 and torch.equal(normalized, reference)
        assert normalized.data_ptr() != image.data_ptr()  # always a new tensor: the caller's image is untouched


class OneByOneConv(ModuleAdapter):
    """A 1×1 convolution that declares the precisions smp declares: bf16 convolutions are emulated on most CPUs, and a
    U-Net at bf16 took minutes here for the few windows this test needs."""

    precisions = frozenset({"fp32", "tf32", "bf16", "fp16"})


def test_a_lower_precision_is_its_own_result_and_is_refused_where_it_cannot_run(data_root: Path):
    torch.manual_seed(0)
    contract = rb.InputContract(3, rb.Normalization((0.0,) * 3, (255.0,) * 3))
    adapter = OneByOneConv(torch.nn.Conv2d(3, 5, 1), contract, frozenset({"segmentation"}))
    task = rb.load_task("demo/u2a")
    full = rb.evaluate(adapter, task, data_root=data_root, limit=2, progress=False, name="unet")
    low = rb.evaluate(adapter, task, data_root=data_root, limit=2, progress=False, name="unet", precision="bf16")
    record = low.records[0]
    assert record.model["precision"] == "bf16" and record.model.display_name == "unet [bf16]"
    assert record.provenance.execution["precision"] == "bf16" and "precision" not in full.records[0].model
    assert record.key != full.records[0].key  # a resumed fp32 run never takes a bf16 record for its own
    for needs_cuda in ("fp16", "tf32"):
        with pytest.raises(AdapterError, match=f"{needs_cuda} needs a CUDA device"):
            rb.evaluate(adapter, task, data_root=data_root, limit=1, progress=False, precision=needs_cuda)
    contract = rb.InputContract(3, rb.Normalization((0.0,) * 3, (1.0,) * 3))
    with pytest.raises(AdapterError, match="not declared for --precision bf16"):
        rb.evaluate(torch.nn.Conv2d(3, 5, 1), task, input_contract=contract, data_root=data_root, limit=1,
                    progress=False, precision="bf16")


def test_a_compiled_module_counts_what_eager_counts_and_the_record_names_the_backend(data_root: Path,
                                                                                     linear_checkpoint: Path,
                                                                                     tmp_path: Path):
    """`run --compile aot_eager` (traced by torch.compile, no code generated: inductor's C++ build costs tens
    of seconds on a CPU core) gives the eager run's matrices on the same resume keys; the record names the
    backend. An unknown backend fails the task with the backends there are."""
    from conftest import linear_model
    from torch._dynamo.utils import counters

    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.records.results import ResultStore
    from rsdg_bench.run.runner import RunSettings, run_tasks

    task, model = TaskCatalog().task("demo/u2a"), linear_model(linear_checkpoint)
    for name, backend in (("eager", None), ("compiled", "aot_eager")):
        counters.clear()
        [outcome] = run_tasks([task], model, RunSettings(data_root, tmp_path / name, progress=False, compile=backend))
        assert outcome.error is None, outcome.error
        assert (counters["stats"]["unique_graphs"] > 0) == (backend is not None)  # the forward was traced, or not
    eager, compiled = ({r.key: r for _, r in ResultStore(tmp_path / n).load_all()} for n in ("eager", "compiled"))
    assert eager.keys() == compiled.keys() and len(eager) == 2
    for key, record in compiled.items():
        assert record.confusion_matrices == eager[key].confusion_matrices
        assert record.provenance["execution"]["compile"] == "aot_eager"
        assert "compile" not in eager[key].provenance["execution"]
    [outcome] = run_tasks([task], model, RunSettings(data_root, tmp_path / "bad", progress=False, compile="nope"))
    assert "no backend 'nope'" in outcome.error and "inductor" in outcome.error
