"""The commands that only read and write data start at once: `tasks`, `prepare`, `results`, `leaderboard`,
`score` (prediction maps) and a static `submission verify` (of a bundle whose adapter is a built-in too: its
sources are hashed, not imported) never import torch, timm or segmentation_models_pytorch (importing them costs
seconds before any work starts, and a maintainer's board machine need not load a model stack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_MODEL

from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.submissions.bundle import pack
from rsdg_bench.submissions.predict_maps import predict_task

MODEL_LIBRARIES = ("torch", "timm", "segmentation_models_pytorch")

# Runs each command through the CLI's `main` in one fresh interpreter, in order, and prints after each one
# its exit status and the model libraries imported so far. The first command that imports one is named.
RUN_IN_ORDER = """
import json, sys
from rsdg_bench.cli import main
for argv in json.loads(sys.argv[1]):
    status = main(argv)
    heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
    print("RESULT " + json.dumps({"argv": argv, "status": status, "imported": heavy}), flush=True)
"""


@pytest.fixture(scope="module")
def inputs(demo_run: Path, trained: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What a maintainer receives, made here with the model stack: prediction maps and a bundle."""
    out = tmp_path_factory.mktemp("light")
    task = TaskCatalog().task("demo/u2a")
    model = ModelSpec(SMALL_MODEL.adapter, SMALL_MODEL.options, checkpoint=trained["checkpoint"])
    maps = predict_task(task, model, demo_run / "data", trained["results"], out / "maps", progress=False)
    bundle = out / "bundle.zip"
    pack(demo_run / "results", "U-Net R18 (source-only)", [t.id for t in TaskCatalog().suite_tasks("demo")], bundle,
         suite="demo")
    return {"data": demo_run / "data", "results": demo_run / "results", "maps": maps, "bundle": bundle}


def run_in_order(commands: list[list[str]]) -> list[dict]:
    """Each command's exit status and the model libraries imported by the time it ended (one interpreter)."""
    done = subprocess.run([sys.executable, "-c", RUN_IN_ORDER, json.dumps(commands), json.dumps(MODEL_LIBRARIES)],
                          capture_output=True, text=True, timeout=600)
    reports = [json.loads(line.removeprefix("RESULT ")) for line in done.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert len(reports) == len(commands), done.stderr[-3000:]
    for report in reports:
        assert report["status"] == 0, (report, done.stderr[-3000:])
    return reports


def test_data_commands_import_no_model_library(inputs: dict[str, Path], toyearth_raw: Path, tmp_path: Path):
    data, results = str(inputs["data"]), str(inputs["results"])
    commands = [
        ["tasks", "list"],
        ["tasks", "show", "demo/u2a"],
        ["tasks", "validate"],
        ["prepare", "--list"],
        ["adapter", "list"],
        ["prepare", "toyearth", "--raw", str(toyearth_raw), "--data-root", str(tmp_path / "data"), "--quiet"],
        ["prepare", "toyearth", "--verify", "--data-root", str(tmp_path / "data"), "--quiet"],
        ["results", "show", "--results", results],
        ["leaderboard", "build", "--results", results, "--out", str(tmp_path / "site"), "--quiet"],
        ["submission", "verify", str(inputs["bundle"]), "--data-root", data, "--results", str(tmp_path / "log"),
         "--quiet"],
        ["leaderboard", "build", "--results", results, "--submissions", str(inputs["bundle"].parent),
         "--data-root", data, "--out", str(tmp_path / "site2"), "--quiet"],
        ["score", "--task", "demo/u2a", "--predictions", str(inputs["maps"]), "--data-root", data, "--results",
         str(tmp_path / "scored"), "--quiet"],
        ["results", "show", "--results", str(tmp_path / "scored")],
    ]
    for report in run_in_order(commands):
        assert report["imported"] == [], f"`rsdg-bench {' '.join(report['argv'])}` imported {report['imported']}"
