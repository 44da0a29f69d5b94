"""The command line, in process (fast) and once through the installed console script."""

from __future__ import annotations

import json
import re
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
    from rsdg_bench.protocol.task_schema import package_tasks_dir

    codex = sorted(str(p) for p in (package_tasks_dir() / "codex").glob("*.yaml"))
    code, out, _ = run(capsys, "tasks", "validate", *codex)
    assert code == 0 and "skip" in out and "_defaults.yaml" in out and "ok " in out  # fragments are not tasks
    code, out, _ = run(capsys, "tasks", "schema")
    assert json.loads(out)["title"] == "rsdg-bench task"


def test_tasks_validate_refuses_a_misspelt_dataset_or_domain(capsys, tmp_path: Path):
    from rsdg_bench.protocol.task_schema import package_tasks_dir

    demo = package_tasks_dir() / "demo"
    shutil.copy(demo / "_defaults.yaml", tmp_path)
    text = (demo / "u2a.yaml").read_text()
    assert "{dataset: toyearth, domain: arid, split: val}" in text
    (tmp_path / "domain.yaml").write_text(text.replace("domain: arid", "domain: aird"))
    (tmp_path / "dataset.yaml").write_text(text.replace("dataset: toyearth, domain: arid", "dataset: toyerth, domain: arid")
                                           .replace("id: demo/u2a", "id: demo/u2b"))
    code, out, err = run(capsys, "tasks", "validate", str(tmp_path / "domain.yaml"), str(tmp_path / "dataset.yaml"))
    assert code == 2 and "ok " not in out
    assert "demo/u2a: toyearth/aird/val: toyearth has no domain 'aird' (did you mean 'arid'?)" in err
    assert "demo/u2b: toyerth/arid/val: no dataset 'toyerth' (did you mean 'toyearth'?)" in err


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
    code, out, err = run(capsys, "run", "--task", "demo/u2a", "--model-arg", "encoder=resnet18", *common)
    assert code == 2 and "1 of 1 tasks cannot run yet" in err and "no trained weights: demo/u2a" in err
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
    code, _, err = run(capsys, "leaderboard", "build", *common[:-1], "--out", str(tmp_path / "site-progress"))
    assert code == 0 and "scoring records" in err and "2/2" in err  # without --quiet: a bar over the records
    assert "U-Net" in (tmp_path / "site" / "suites" / "demo.html").read_text()
    code, out, err = run(capsys, "leaderboard", "build", "--reported", "--out", str(tmp_path / "site2"),
                         "--baseline", "Rein (ViT-L)", "--rank-shared", *common)
    assert code == 0 and "reported rows" in out and "note:" not in err
    page = (tmp_path / "site2" / "suites" / "crossearth.html").read_text()
    assert "CrossEarth (ViT-L)" in page and "Gain over Rein (ViT-L)" in page and "Avg. rank on its tasks" in page
    code, _, err = run(capsys, "leaderboard", "build", "--reported", "--out", str(tmp_path / "site2"),
                       "--baseline", "Rein", *common)
    assert code == 0 and "note: no row is named 'Rein'" in err  # the label includes the backbone


def test_adapter_list_and_check(capsys):
    code, out, _ = run(capsys, "adapter", "list")
    assert code == 0 and "smp" in out
    kinds = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "classification" in kinds["timm-classifier"] and "temporal_segmentation" in kinds["codex"]
    assert kinds["mtp"].split()[2] == "no" and kinds["smp"].split()[3] == "yes"  # trainable
    assert kinds["crossearth"].split()[2] == "yes" and kinds["codex"].split()[2] == "yes"
    code, out, _ = run(capsys, "adapter", "check", "smp", "--model-arg", "encoder=resnet18")
    assert code == 0 and "7 passed, 0 failed" in out
    code, out, _ = run(capsys, "adapter", "check", "smp", "--model-arg", "encoder=resnet18", "--device", "cpu")
    assert code == 0 and "checking smp on cpu" in out and "7 passed, 0 failed" in out


def _option_specs(parser) -> dict[str, tuple]:
    """Each flag of a parser with what it means: destination, default, choices, type, arity and action."""
    return {flag: (action.dest, action.default, action.choices, action.type, action.nargs, type(action).__name__)
            for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")}


def test_every_command_that_loads_a_model_takes_the_same_model_flags():
    """The model and evaluation flags are declared once (`cli.options`): `train`, `run` and `predict` take the
    model flags, `run` and `predict` the evaluation flags (weights, batching, precision), each meaning the same."""
    from rsdg_bench.cli import build_parser
    from rsdg_bench.cli.options import evaluation_options, model_options

    commands = build_parser()._subparsers._group_actions[0].choices
    model, evaluation = _option_specs(model_options()), _option_specs(evaluation_options())
    assert {"--model", "--adapter", "--model-arg", "--device", "--workers"} <= model.keys()
    assert {"--checkpoint", "--checkpoints", "--backbone-checkpoint", "--batch-size", "--precision",
            "--window-batch", "--name"} <= evaluation.keys()
    for name in ("train", "run", "predict"):
        assert model.items() <= _option_specs(commands[name]).items(), name
    for name in ("run", "predict"):
        assert evaluation.items() <= _option_specs(commands[name]).items(), name


def test_installed_console_script():
    exe = shutil.which("rsdg-bench")
    assert exe, "rsdg-bench is not on PATH: install the project (pip install -e .)"
    result = subprocess.run([exe, "tasks", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "demo/u2coarse" in result.stdout

    # piped into a reader that leaves at once (`rsdg-bench tasks list | head -1`): a quiet stop, no traceback
    reader_left = subprocess.Popen([exe, "tasks", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_left.stdout.close()
    _, err = reader_left.communicate(timeout=120)
    assert reader_left.returncode == 141 and err == b"", err.decode()


PLACEHOLDERS = {"ID": "demo/u2a", "NAME": "toyearth", "<download>": "raw.zip", "FILE": "w.pth", "DIR": "folder",
                "N": "1000", "G": "2", "FILE.yaml": "card.yaml"}


def accepted(fix: str) -> list[str]:
    """Every `rsdg-bench ...` command a fix line suggests, parsed by the real parser (placeholders filled in):
    a fix that names a missing subcommand, flag or choice fails here."""
    from rsdg_bench.cli import build_parser

    commands = re.findall(r"`rsdg-bench ([^`]+)`", fix)
    for command in commands:
        argv = [PLACEHOLDERS.get(word, word) for word in command.split()]
        build_parser().parse_args(argv)  # SystemExit(2) on anything the CLI would refuse
    return commands


def error_and_fix(err: str) -> tuple[str, str]:
    assert err.startswith("error: ") and "Traceback" not in err, err
    problem, _, fix = err.partition("\n  fix: ")
    assert fix, err
    return problem, fix


@pytest.mark.parametrize("argv, says", [
    (["results", "show", "/nonexistent.json"], "no result record at /nonexistent.json"),
    (["results", "recompute", "/nonexistent.json"], "no result record at /nonexistent.json"),
    (["tasks", "validate", "/nonexistent.yaml"], "cannot read the task file /nonexistent.yaml"),
    (["leaderboard", "build", "--results", "/nonexistent"], "no results folder at /nonexistent"),
    (["prepare", "lovad", "--data-root", "/nonexistent"], "no preparer for dataset 'lovad'"),  # not "needs --raw"
    (["run", "--task", "P(i)2W", "--data-root", "/nonexistent"], "unknown task 'P(i)2W'"),
])
def test_a_user_given_name_or_path_that_does_not_exist_is_an_error_with_a_fix_that_works(
        argv: list[str], says: str, capsys):
    code, _, err = run(capsys, *argv)
    problem, fix = error_and_fix(err)
    assert code == 2 and says in problem
    accepted(fix)
    if argv[0] == "run":
        assert "crossearth/pi2v (P(i)2V)" in fix


def test_results_show_of_a_folder_lists_its_records(capsys, tmp_path: Path):
    code, _, err = run(capsys, "results", "show", str(tmp_path))
    problem, fix = error_and_fix(err)
    assert code == 2 and "holds no result records" in problem


def test_papers_names_resolve_to_task_ids_and_all_leaves_out_the_demo():
    from rsdg_bench.protocol.task_schema import TaskCatalog

    catalog = TaskCatalog()
    assert catalog.task("R2U").id == "crossearth/r2u" and catalog.task("P(i)2V").id == "crossearth/pi2v"
    assert catalog.task("p(i)2v").id == "crossearth/pi2v" and catalog.task("u2a").id == "demo/u2a"
    everything = {t.id for t in catalog.suite_tasks("all")}
    assert not any(t.startswith("demo/") for t in everything) and "crossearth/r2u" in everything
    apart = [t for suite in catalog.suites.values() if not suite.part_of_all for t in suite.tasks]
    assert {"demo/u2a", "dfc25/sar-test"} <= set(apart)  # the demo and the hidden-label suite
    assert len(everything) == len(catalog.tasks) - len(apart)


def test_run_preflights_the_whole_selection_before_evaluating_anything(capsys, tmp_path: Path):
    """No data and no weights: one error listing what to prepare and which weights are missing (released ones
    to download or train, and the three settings CrossEarth released none for, to train), instead of 32
    near-identical task failures."""
    code, out, err = run(capsys, "run", "--suite", "crossearth", "--model", "crossearth", "--data-root",
                         str(tmp_path / "data"), "--results", str(tmp_path / "results"), "--quiet")
    problem, fix = error_and_fix(err)
    assert code == 2 and out == "" and not (tmp_path / "results" / "records").exists()
    assert problem.startswith("error: 32 of 32 tasks cannot run yet:")
    assert "not prepared: casid (" in problem and "potsdam (" in problem and "`rsdg-bench prepare NAME" in problem
    assert "released weights not found in" in problem and "crossearth/pi2v (Potsdam(i)-source.pth)" in problem
    assert "or train them: `rsdg-bench train --task ID --model crossearth` for each" in problem
    untrained = re.search(r"no trained weights: ([^:]+): `rsdg-bench train", problem)
    assert untrained and set(untrained.group(1).split(", ")) == {"crossearth/r2u", "crossearth/u2r", "crossearth/u2oem"}
    assert accepted(problem) and problem.count("\n") <= 6


def test_run_only_ready_evaluates_what_can_run_after_listing_the_rest(capsys, tmp_path: Path, trained: dict,
                                                                        data_root: Path):
    code, out, _ = run(capsys, "run", "--task", "demo/u2a", "--task", "crossearth/pi2v", "--model-arg",
                       "encoder=resnet18", "--checkpoint", str(trained["checkpoint"]), "--only-ready", "--limit", "1",
                       "--data-root", str(data_root), "--results", str(tmp_path), "--quiet")
    assert code == 0 and "1 of 2 tasks cannot run yet" in out and "not prepared: potsdam" in out
    assert "demo/u2a               2 written" in out


def test_fixes_for_weights_name_the_right_command(capsys, tmp_path: Path, data_root: Path):
    from rsdg_bench.models.model_spec import model_flag

    code, _, err = run(capsys, "run", "--task", "demo/u2a", "--adapter", "my_adapter.py:Model",
                       "--data-root", str(data_root), "--results", str(tmp_path))
    problem, fix = error_and_fix(err)
    assert code == 2 and "my_adapter.py" in problem  # the file does not exist
    accepted(fix)
    assert model_flag("my_adapter.py:Model") == "--adapter my_adapter.py:Model"
    accepted(f"`rsdg-bench train --task demo/u2a {model_flag('my_adapter.py:Model')}`")
    code, _, err = run(capsys, "train", "--task", "crossearth/pi2v", "--model", "mtp",
                       "--data-root", str(data_root), "--results", str(tmp_path))
    problem, fix = error_and_fix(err)
    assert code == 2 and "cannot be trained by the harness" in problem and "`trainable = False`" in problem
    assert accepted(fix) == ["run --task crossearth/pi2v --model mtp --checkpoint FILE", "adapter list"]


def test_a_task_of_another_kind_names_the_adapters_that_do_it(capsys, tmp_path: Path):
    code, _, err = run(capsys, "run", "--task", "codex/oscd", "--task", "codex/fmow", "--model", "daformer",
                       "--random-init", "--data-root", str(tmp_path), "--results", str(tmp_path / "r"))
    problem, fix = error_and_fix(err)
    assert code == 2 and "change_detection, which 'daformer' does not do: codex/oscd (adapters that do: smp)" in problem
    assert "classification, which 'daformer' does not do: codex/fmow (adapters that do: timm-classifier)" in problem
    assert "smp for change detection" not in fix


@pytest.mark.parametrize("argv, message", [
    (["run", "--task", "demo/u2a", "--limit", "0"], "argument --limit: 0 is not above 0"),
    (["run", "--task", "demo/u2a", "--limit", "-1"], "argument --limit: -1 is not above 0"),
    (["run", "--task", "demo/u2a", "--workers", "-1"], "argument --workers: -1 is below 0"),
    (["run", "--task", "demo/u2a", "--window-batch", "0"], "argument --window-batch: 0 is not above 0"),
    (["run", "--task", "demo/u2a", "--save-predictions", "-2"], "argument --save-predictions: -2 is below 0"),
])  # train's --iterations / --batch-size / --lr: the protocol check (test_reliability.py) names them
def test_counts_out_of_range_are_refused_by_the_parser(capsys, argv: list[str], message: str):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_device_is_an_error_with_the_fix(capsys, data_root: Path, tmp_path: Path):
    code, _, err = run(capsys, "run", "--task", "demo/u2a", "--random-init", "--device", "tpu",
                       "--data-root", str(data_root), "--results", str(tmp_path / "results"))
    assert code == 2 and "error: unknown device 'tpu'" in err and "fix: use --device cpu" in err
