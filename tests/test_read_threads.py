"""The read-thread count chosen from a measurement (`read_threads="auto"`, issue 42): the smallest count
within the tolerance of the fastest, measured on the run's own first samples without changing what is scored
or its order, and recorded with its rates. Timings are injected (a scripted clock): no assertion rests on
how fast this machine reads."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch
from conftest import TrainableNormedNet

import rsdg_bench as rb
from rsdg_bench.base.errors import DataError
from rsdg_bench.cli.main import build_parser
from rsdg_bench.cli.model_commands import _run_settings
from rsdg_bench.datasets import read_ahead as reading
from rsdg_bench.datasets.read_ahead import (
    AUTO,
    CALIBRATION_SAMPLES,
    READ_THREADS,
    ReadThreadChoice,
    calibrated_read_ahead,
    candidate_counts,
    default_read_threads,
    pick_read_threads,
)
from rsdg_bench.records.results import decode_per_image


def test_the_smallest_count_within_the_tolerance_of_the_fastest_is_chosen():
    assert pick_read_threads({1: 100.0, 2: 101.0, 4: 99.0, 8: 102.0}) == 1  # more threads do not help: keep one
    assert pick_read_threads({1: 50.0, 2: 100.0, 4: 200.0, 8: 400.0}) == 8  # clearly faster: take it
    assert pick_read_threads({1: 50.0, 2: 190.0, 4: 196.0, 8: 200.0}) == 2  # 190 is within 5 % of 200
    assert pick_read_threads({1: 50.0, 2: 189.0, 4: 196.0, 8: 200.0}) == 4  # 189 is not
    assert pick_read_threads({1: 50.0, 2: 189.0}, tolerance=0.8) == 1
    with pytest.raises(ValueError):
        pick_read_threads({})
    assert candidate_counts(8) == [1, 2, 4, 8] and candidate_counts(5) == [1, 2, 4, 5] and candidate_counts(1) == [1]
    assert default_read_threads(torch.device("cpu")) == READ_THREADS  # the CPU keeps its count
    assert default_read_threads(torch.device("cuda")) == AUTO  # beside an accelerator, measured


class Samples:
    """A dataset of tiny samples that notes which thread read each index, and can fail on one."""

    def __init__(self, failing: int | None = None) -> None:
        self.failing = failing
        self.readers: dict[int, str] = {}

    def __getitem__(self, index: int) -> dict:
        self.readers[index] = threading.current_thread().name
        if index == self.failing:
            raise DataError(f"sample {index} is corrupt", "prepare it again")
        return {"image": torch.full((2,), index), "sample_id": f"s{index}"}


def scripted_clock(seconds: list[float]):
    """A clock whose k-th timed chunk takes `seconds[k]`: calibration reads it before and after each chunk."""
    ticks = iter([t for k, spent in enumerate(seconds) for t in (10.0 * k, 10.0 * k + spent)])
    return lambda: next(ticks)


@pytest.mark.parametrize(("seconds", "chosen"), [([1.0, 1.0, 1.0], 1), ([1.0, 0.5, 0.25], 4), ([1.0, 0.5, 0.49], 2)])
def test_calibration_reads_the_runs_own_batches_then_the_rest_with_the_chosen_count(seconds: list[float], chosen: int):
    batch, size = 3, 3 * -(-CALIBRATION_SAMPLES // 3)  # chunks of whole batches
    indices = list(range(3 * size + 7))  # three chunks measured (1, 2, 4 threads), then the rest
    dataset, choice = Samples(), ReadThreadChoice()
    with calibrated_read_ahead(dataset, indices, batch, choice, most=4, clock=scripted_clock(seconds)) as batches:
        got = [[sample["sample_id"] for sample in b] for b in batches]
    assert got == [[f"s{i}" for i in indices[start:start + batch]] for start in range(0, len(indices), batch)]
    assert choice.threads == chosen and choice.samples_per_count == size
    assert choice.rates == pytest.approx({n: size / spent for n, spent in zip([1, 2, 4], seconds, strict=True)})
    assert len({dataset.readers[i] for i in indices[:size]}) == 1  # the first chunk by one thread alone
    assert len({dataset.readers[i] for i in indices[3 * size:]}) <= chosen  # the rest by the chosen count
    execution = choice.execution()
    assert execution["read_threads"] == chosen
    assert execution["read_threads_auto"]["images_per_s"] == {str(n): round(r, 1) for n, r in choice.rates.items()}


def test_a_split_shorter_than_a_chunk_is_read_unmeasured_and_a_failed_read_is_raised_at_its_batch():
    choice = ReadThreadChoice()
    with calibrated_read_ahead(Samples(), list(range(5)), 2, choice, most=4) as batches:
        assert [len(b) for b in batches] == [2, 2, 1]
    assert choice.threads == READ_THREADS and choice.rates == {} and choice.samples_per_count == CALIBRATION_SAMPLES
    with calibrated_read_ahead(Samples(failing=7), list(range(40)), 2, ReadThreadChoice(), most=2) as batches:
        assert [s["sample_id"] for s in next(batches) + next(batches) + next(batches)] == [f"s{i}" for i in range(6)]
        with pytest.raises(DataError, match="sample 7"):
            next(batches)


def _scored(evaluation: rb.Evaluation) -> list[dict]:
    """Each record without its provenance (wall time, date, how it was read): everything that was scored."""
    return [record.model_dump(exclude={"provenance", "digest"}) for record in evaluation.records]


def test_auto_scores_bit_identically_to_a_fixed_count_and_records_its_choice(
        data_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(reading, "CALIBRATION_SAMPLES", 1)  # the demo's splits hold four samples: 1 and 2 threads
    monkeypatch.setattr(reading, "most_read_threads", lambda: 2)
    adapter, task = TrainableNormedNet(), rb.load_task("demo/u2a")
    fixed = rb.evaluate(adapter, task, data_root=data_root, progress=False, read_threads=2)
    with caplog.at_level(logging.INFO, logger="rsdg_bench.datasets.read_ahead"):
        auto = rb.evaluate(adapter, task, data_root=data_root, progress=False, read_threads="auto")
    assert _scored(auto) == _scored(fixed) and len(auto.records) == 2
    assert [decode_per_image(m).tolist() for r in auto.records for m in r.per_image_matrices.values()] == \
        [decode_per_image(m).tolist() for r in fixed.records for m in r.per_image_matrices.values()]
    for record in auto.records:
        execution = record.provenance.execution
        assert execution is not None and execution["read_threads"] in (1, 2)
        assert set(execution["read_threads_auto"]["images_per_s"]) == {"1", "2"}
        assert execution["read_threads_auto"]["samples_per_count"] == 1
    fixed_execution = fixed.records[0].provenance.execution or {}
    assert fixed_execution["read_threads"] == 2 and "read_threads_auto" not in fixed_execution
    assert sum("read threads:" in message for message in caplog.messages) == 2  # one choice per split, logged


def test_run_takes_read_threads_auto_or_a_count(tmp_path: Path):
    parser = build_parser()
    for given, setting in (("auto", "auto"), ("3", 3)):
        args = parser.parse_args(["run", "--task", "demo/u2a", "--results", str(tmp_path), "--read-threads", given])
        assert _run_settings(args).read_threads == setting
    assert _run_settings(parser.parse_args(["run", "--task", "demo/u2a"])).read_threads is None  # the device decides
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--task", "demo/u2a", "--read-threads", "0"])
