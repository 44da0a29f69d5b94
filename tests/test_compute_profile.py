"""`rsdg-bench profile`: parameters and FLOPs as the model's structure makes them, saved where the board finds
them; the timings are measured, so only their form is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import pixel_linear

from rsdg_bench.cli import main
from rsdg_bench.evaluator.compute_profile import load_all


def test_profile_counts_a_known_network_and_saves_it_for_the_board(data_root: Path, tmp_path: Path, capsys):
    pixel_linear()  # a 1×1 convolution, 3 bands → 5 classes: 3·5 + 5 parameters, 2·3·5 FLOPs per pixel
    assert main(["profile", "--task", "demo/u2a", "--task", "demo/u2coarse", "--model", "pixel-linear",
                 "--data-root", str(data_root), "--results", str(tmp_path), "--device", "cpu", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "demo/u2a" in out and "demo/u2coarse" in out
    profiles = {p.task_id: p for p in load_all(tmp_path)}
    assert set(profiles) == {"demo/u2a", "demo/u2coarse"}
    profile = profiles["demo/u2a"]
    side = profile.input_size[0]
    assert side == 128  # the demo's sliding window: its model-facing size
    assert profile.parameters == profile.trainable_parameters == 3 * 5 + 5
    assert profile.gflops == pytest.approx(2 * 3 * 5 * side * side / 1e9)
    assert profile.latency_ms > 0 and profile.throughput > 0 and profile.peak_memory_mib is None
    assert profile.device.startswith("CPU") and profile.bands == 3
    saved = next((tmp_path / "profiles").glob("pixel-linear-*/demo__u2a.json"))
    assert json.loads(saved.read_text())["adapter"] == "pixel-linear"
    saved.write_text("{not json")  # a broken profile is skipped, never an error: it ranks nothing
    assert {p.task_id for p in load_all(tmp_path)} == {"demo/u2coarse"}
    other = next((tmp_path / "profiles").glob("pixel-linear-*/demo__u2coarse.json"))
    other.write_text(other.read_text().replace('"gflops": ', '"gflops": 1e400, "was": '))
    assert load_all(tmp_path) == []  # nor an infinite or extra field: refused, not plotted


def test_the_model_facing_size_is_the_window_or_the_whole_target_image():
    from rsdg_bench.evaluator.compute_profile import input_size
    from rsdg_bench.protocol.task_schema import TaskCatalog

    catalog = TaskCatalog()
    assert input_size(catalog.task("crossearth/pi2v")) == (512, 512)  # slide: the window
    whole = catalog.task("noldo_s12/dw-s2")  # whole 510² tiles, trained on 496² crops
    assert input_size(whole, (510, 510)) == (510, 510) and input_size(whole) == (496, 496)


def test_a_plug_in_name_never_takes_a_profile_outside_its_folder(tmp_path: Path):
    from rsdg_bench.evaluator.compute_profile import ComputeProfile, save

    profile = ComputeProfile(adapter="../../outside/x", options={}, task_id="demo/u2a", input_size=(8, 8), bands=3,
                             parameters=1, trainable_parameters=1, gflops=0.1, latency_ms=1.0, throughput=1.0, batch=1,
                             peak_memory_mib=None, device="CPU", torch_version="2")
    path = save(tmp_path / "results", profile)
    assert path.resolve().is_relative_to((tmp_path / "results" / "profiles").resolve())
    assert [p.adapter for p in load_all(tmp_path / "results")] == ["../../outside/x"]
