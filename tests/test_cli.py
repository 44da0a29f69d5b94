"""The command line, in process (fast) and once through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rsdg_bench.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_teaches_the_tour(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("prepare", "fake", "tasks", "train", "run", "results", "leaderboard", "adapter", "demo"):
        assert command in out
    assert "RSDG_DATA" in out


def test_tasks_list_show_validate_schema(capsys):
    code, out, _ = run(capsys, "tasks", "list", "--suite", "demo")
    assert code == 0 and "demo/u2a" in out and "toyearth/urban/train -> toyearth/arid/val" in out
    code, out, _ = run(capsys, "tasks", "show", "demo/rgb2irrg")
    assert code == 0 and '"spectral_band"' in out and "# hash " in out
    code, out, _ = run(capsys, "tasks", "validate")
    assert code == 0 and "are valid" in out
    from rsdg_bench.task_schema import package_tasks_dir

    codex = sorted(str(p) for p in (package_tasks_dir() / "codex").glob("*.yaml"))
    code, out, _ = run(capsys, "tasks", "validate", *codex)
    assert code == 0 and "skip" in out and "_defaults.yaml" in out and "ok " in out  # fragments are not tasks
    code, out, _ = run(capsys, "tasks", "schema")
    assert json.loads(out)["title"] == "rsdg-bench task"


def test_user_errors_print_the_fix_and_exit_2(capsys):
    code, _, err = run(capsys, "tasks", "show", "demo/u2b")
    assert code == 2 and err.startswith("error: unknown task 'demo/u2b'") and "demo/u2a" in err
    code, _, err = run(capsys, "run", "--suite", "demo", "--model-arg", "encoder")
    assert code == 2 and "fix:" in err
    code, out, err = run(capsys, "run", "--suite", "demo", "--model", "crossearthh")
    assert code == 2 and "unknown adapter 'crossearthh'" in err and out == ""


def test_fake_then_prepare(capsys, tmp_path: Path):
    code, out, _ = run(capsys, "prepare", "--list")
    assert code == 0 and "toyearth" in out
    code, out, _ = run(capsys, "fake", "toyearth", "--out", str(tmp_path / "raw"), "--archive")
    assert code == 0 and "ToyEarth-v1.zip" in out
    code, out, _ = run(capsys, "prepare", "toyearth", "--raw", str(tmp_path / "raw" / "ToyEarth-v1.zip"),
                       "--data-root", str(tmp_path / "data"), "--quiet")
    assert code == 0 and (tmp_path / "data" / "toyearth" / "dataset.json").exists()
    code, out, _ = run(capsys, "prepare", "toyearth", "--verify", "--data-root", str(tmp_path / "data"))
    assert code == 0 and "144 samples" in out
    (tmp_path / "data" / "toyearth" / "arid" / "val" / "labels" / "arid_val_000.tif").write_bytes(b"changed")
    code, out, _ = run(capsys, "prepare", "toyearth", "--verify", "--data-root", str(tmp_path / "data"))
    assert code == 1 and "arid/val/labels/arid_val_000.tif" in out


def test_prepare_with_a_wrong_path_names_it(capsys, tmp_path: Path):
    code, _, err = run(capsys, "prepare", "toyearth", "--raw", str(tmp_path / "nowhere"), "--data-root", str(tmp_path))
    assert code == 2 and "nowhere does not exist" in err


def test_run_results_recompute_and_leaderboard(capsys, tmp_path: Path, trained: dict, data_root: Path):
    common = ["--data-root", str(data_root), "--results", str(tmp_path), "--quiet"]
    code, out, _ = run(capsys, "run", "--task", "demo/u2a", "--model-arg", "encoder=resnet18", *common)
    assert code == 1 and "FAILED" in out and "no checkpoint" in out
    code, out, _ = run(capsys, "run", "--task", "demo/u2a", "--model-arg", "encoder=resnet18",
                       "--checkpoint", str(trained["checkpoint"]), "--name", "U-Net", *common)
    assert code == 0 and "2 written" in out and "toyearth/arid/val" in out and "U-Net" in out
    code, out, _ = run(capsys, "results", "show", *common)
    assert code == 0 and "toyearth/arid/val" in out and "U-Net" in out
    record = next((tmp_path / "records").rglob("*.json"))
    code, out, _ = run(capsys, "results", "recompute", str(record), *common)
    assert code == 0 and "recomputed" in out
    code, out, _ = run(capsys, "leaderboard", "build", *common)
    assert code == 0 and "1 tasks, 1 models" in out
    assert "U-Net" in (tmp_path / "site" / "suites" / "demo.html").read_text()
    code, out, _ = run(capsys, "leaderboard", "build", "--reported", "--out", str(tmp_path / "site2"), *common)
    assert code == 0 and "reported rows" in out
    assert "CrossEarth (ViT-L)" in (tmp_path / "site2" / "suites" / "crossearth.html").read_text()


def test_adapter_list_and_check(capsys):
    code, out, _ = run(capsys, "adapter", "list")
    assert code == 0 and "smp" in out
    code, out, _ = run(capsys, "adapter", "check", "smp", "--model-arg", "encoder=resnet18")
    assert code == 0 and "7 passed, 0 failed" in out
    code, out, _ = run(capsys, "adapter", "check", "smp", "--model-arg", "encoder=resnet18", "--device", "cpu")
    assert code == 0 and "checking smp on cpu" in out and "7 passed, 0 failed" in out


def test_installed_console_script():
    exe = shutil.which("rsdg-bench")
    assert exe, "rsdg-bench is not on PATH: install the project (pip install -e .)"
    result = subprocess.run([exe, "tasks", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "demo/u2coarse" in result.stdout
