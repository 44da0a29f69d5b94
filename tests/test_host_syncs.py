"""On an accelerator the evaluator waits for the device once per batch: the batch's confusion counts are made
there in one pass (finiteness and stray labels folded in) and copied once. Run on the CPU with the accelerator
path switched on, and counted by `HostSyncCounter`, so the count cannot creep back unseen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pixel_linear

import rsdg_bench as rb
from rsdg_bench.base.errors import AdapterError, DataError
from rsdg_bench.base.host_syncs import HostSyncCounter
from rsdg_bench.evaluator import inference
from rsdg_bench.models.adapters import InputContract, Normalization
from rsdg_bench.models.registry import resolve_adapter
from rsdg_bench.records.results import decode_per_image
from rsdg_bench.scoring.metrics import batch_confusion_counts, confusion_counts


def _matrices(evaluation: rb.Evaluation) -> list:
    return [decode_per_image(record.per_image_matrices[slug]).tolist()
            for record in evaluation.records for slug in record.per_image_matrices]


def test_one_batch_count_equals_the_per_image_counts_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    k = 5
    labels = [torch.randint(0, k, shape, generator=generator, dtype=torch.uint8) for shape in ((6, 7), (6, 7), (3, 9))]
    for label in labels:
        label[torch.rand(label.shape, generator=generator) < 0.2] = 255
    preds = [torch.randint(0, k, label.shape, generator=generator, dtype=torch.uint8) for label in labels]
    per_image, non_finite = batch_confusion_counts(labels, preds, k)
    assert not non_finite
    for (matrix, ignored), label, pred in zip(per_image, labels, preds, strict=True):
        expected_matrix, expected_ignored = confusion_counts(label, pred, k)
        assert np.array_equal(matrix, expected_matrix) and np.array_equal(ignored, expected_ignored)
        assert matrix.dtype == ignored.dtype == np.int64
    marked = [p.clone() for p in preds]
    marked[1][2, 3] = k  # a pixel whose scores were not finite
    assert batch_confusion_counts(labels, marked, k)[1]
    stray = [label.clone() for label in labels]
    stray[2][0, 0] = 9
    with pytest.raises(DataError, match=r"label values \[9\]"):
        batch_confusion_counts(stray, preds, k)


def test_on_an_accelerator_the_evaluator_waits_for_the_device_once_per_batch(data_root: Path, monkeypatch):
    torch.manual_seed(0)
    pixel_linear()
    adapter = resolve_adapter("pixel-linear")()  # the counting is what is measured, not the network
    task = rb.load_task("demo/u2a")
    on_host = rb.evaluate(adapter, task, data_root=data_root, limit=8, progress=False, batch_size=2)
    monkeypatch.setattr(inference, "counts_on_device", lambda device: True)  # the accelerator path, on the CPU
    from rsdg_bench.evaluator import evaluation
    from rsdg_bench.run import runner

    waits_per_call = []
    original = evaluation.evaluate_split_counts

    def counted(*args, **kwargs):
        with HostSyncCounter() as syncs:
            counts = original(*args, **kwargs)
        waits_per_call.append(syncs.calls)
        return counts

    monkeypatch.setattr(runner, "evaluate_split_counts", counted)
    on_device = rb.evaluate(adapter, task, data_root=data_root, limit=8, progress=False, batch_size=2)
    assert _matrices(on_device) == _matrices(on_host)  # the same numbers, every image
    batches = sorted(-(-record.evaluated.num_samples // 2) for record in on_device.records)
    assert batches and sum(batches) >= 4
    assert all(set(calls) == {"cpu"} for calls in waits_per_call), waits_per_call  # nothing else waits
    assert sorted(calls["cpu"] for calls in waits_per_call) == batches  # one wait per batch: its counts' copy


def test_non_finite_scores_found_in_the_batch_count_are_the_adapters_error(data_root: Path, monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 5, *x.shape[2:])
            logits[:, 2, 0, 0] = float("nan")
            return logits

    monkeypatch.setattr(inference, "counts_on_device", lambda device: True)
    contract = InputContract(3, Normalization((0.0,) * 3, (1.0,) * 3))
    with pytest.raises(AdapterError, match="NaN or Inf"):
        rb.evaluate(Broken(), "demo/u2a", input_contract=contract, data_root=data_root, limit=4, progress=False,
                    batch_size=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA's own hidden waits are checked there")
def test_on_cuda_the_batch_count_makes_no_wait_of_its_own_before_the_copy():
    """`HostSyncCounter` sees Python-level calls only; a kernel that reads back to size its output (CUDA's
    bincount does) waits unseen. CUDA's sync debug mode raises on any wait but the final copy's."""
    device = torch.device("cuda")
    labels = [torch.randint(0, 5, (64, 64), dtype=torch.uint8, device=device) for _ in range(3)]
    preds = [torch.randint(0, 5, (64, 64), dtype=torch.uint8, device=device) for _ in range(3)]
    torch.cuda.synchronize()
    original = torch.Tensor.cpu

    def copy_allowed(tensor, *args, **kwargs):
        torch.cuda.set_sync_debug_mode(0)
        return original(tensor, *args, **kwargs)

    torch.Tensor.cpu = copy_allowed
    try:
        torch.cuda.set_sync_debug_mode("error")
        per_image, non_finite = batch_confusion_counts(labels, preds, 5)
    finally:
        torch.Tensor.cpu = original
        torch.cuda.set_sync_debug_mode(0)
    assert not non_finite and sum(int(m.sum()) for m, _ in per_image) == 3 * 64 * 64
