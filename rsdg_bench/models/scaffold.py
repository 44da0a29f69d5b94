"""`rsdg-bench adapter new NAME`: a ready plug-in package for a model author to fill in.

The package is what docs/adapters.md describes: a `pyproject.toml` that declares the adapter under the
entry-point group `rsdg_bench.adapters`, the adapter module with its input contract filled in from the
options (bands, normalization, size divisor, kinds), a conformance test, and a README with the commands
that check, run and submit it. As generated it holds a small working network (one 3×3 convolution), so
`adapter check`, `run` and the leaderboard work before a line is changed; the author replaces
`build_network` and `load` with their model.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.io import atomic_write_text

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = Template('''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "rsdg-bench-$name"
version = "0.1.0"
description = "The $name model as an rsdg-bench adapter"
requires-python = ">=3.11"
dependencies = ["rsdg-bench", "torch>=2.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# `rsdg-bench --model $name` finds the adapter through this entry point once the package is installed.
[project.entry-points."rsdg_bench.adapters"]
$name = "$package.adapter:$cls"

[tool.setuptools]
packages = ["$package"]
''')

ADAPTER = Template('''"""The $name model for rsdg-bench.

Replace `build_network` with your model and `load` with the loading of your released weights; keep the
input contract true to how the model was trained (bands, their order, the normalization in the units the
prepared data is stored in). `rsdg-bench adapter check $name` tests the contract.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rsdg_bench.models.adapters import Adapter, InputContract, Normalization
from rsdg_bench.protocol.task_schema import Task

BANDS = $bands  # the bands the model takes, by name and in order
# True: the harness picks BANDS by name from whatever the data stores, and refuses data without them (a
# multispectral model). False: the model takes the first len(BANDS) stored bands in their stored order, as the
# papers' RGB models take Potsdam's NIR-R-G tiles in an RGB→IRRG setting (demo/rgb2irrg needs this).
BANDS_BY_NAME = $by_name
MEAN = $mean  # per band, in the prepared data's units
STD = $std
SIZE_DIVISOR = $divisor  # input height and width are padded to a multiple of this


class $cls(Adapter):
    """$name: fill in the network; the harness does data, normalization, inference and metrics."""

    kinds = frozenset($kinds)
    trainable = True  # `rsdg-bench train` can fit it under a task's protocol; set False for released weights only
    known_options = frozenset()  # the `--model-arg` keys it takes

    def setup(self, task: Task, band_names: list[str]) -> None:
        self.module = build_network(len(BANDS), task.class_schema.num_classes)

    def input_contract(self) -> InputContract:
        return InputContract(len(BANDS), Normalization(MEAN, STD), band_names=BANDS if BANDS_BY_NAME else None,
                             size_divisor=SIZE_DIVISOR)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._require_module()(x)

    def load(self, checkpoint: Path) -> None:
        """The base class loads any state dict strictly (missing or unexpected keys are an error); map your
        release's keys here if they differ from the module's."""
        super().load(checkpoint)


def build_network(bands: int, classes: int) -> nn.Module:
    """The model: B×bands×H×W → B×classes×H×W logits. A placeholder until you put yours here."""
    return nn.Conv2d(bands, classes, kernel_size=3, padding=1)
''')

TEST = Template('''"""The adapter passes rsdg-bench's conformance suite (shapes, dtype, determinism, bands, NaN)."""

from rsdg_bench.evaluator.conformance import run_conformance
from rsdg_bench.protocol.task_schema import TaskCatalog

from $package.adapter import BANDS, $cls


def test_the_adapter_passes_conformance():
    task = TaskCatalog().task("$task")
    adapter = $cls()
    adapter.setup(task, list(BANDS))
    failed = [f"{r.name}: {r.detail}" for r in run_conformance(adapter, task, list(BANDS)) if not r.passed]
    assert not failed, failed
''')

README = Template('''# rsdg-bench adapter: $name

```bash
pip install -e .                       # registers the adapter under the entry point `$name`
rsdg-bench adapter check $name         # the conformance suite on synthetic input
python -m pytest -q                    # the same, as a test
rsdg-bench run --suite demo --model $name --checkpoint weights.pt   # or train: rsdg-bench train --task demo/u2a --model $name
rsdg-bench leaderboard build
```

Fill in `build_network` (and `load`, if your release's keys differ) in `$package/adapter.py`; keep `BANDS`,
`MEAN`, `STD` true to how the model was trained. rsdg-bench's docs/adapters.md explains the contract, task
kinds, options, normalization, checkpoints and how to submit results.
''')


def new_adapter(name: str, out: Path, bands: list[str], mean: list[float], std: list[float],
                kinds: list[str], size_divisor: int = 1, task: str = "demo/u2a", bands_by_name: bool = False) -> Path:
    """Write the package for adapter `name` under `out`; return its folder. `bands_by_name`: the contract names
    its bands (the harness picks them by name) instead of taking the stored bands in order. Refuses a name that
    is not a lower-case identifier, that a built-in adapter already has, or a folder that exists."""
    from rsdg_bench.models.registry import available_adapters

    if not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise RsdgError(f"adapter name {name!r} must be a lower-case identifier (letters, digits, _)",
                        "e.g. rsdg-bench adapter new my_model")
    if name in available_adapters():
        raise RsdgError(f"an adapter named {name!r} exists already ({available_adapters()[name]})",
                        "pick another name; installed plug-ins may not shadow built-ins")
    if not (len(bands) == len(mean) == len(std)):
        raise RsdgError(f"{len(bands)} bands but {len(mean)} means and {len(std)} stds",
                        "give --bands, --mean and --std with one value per band")
    folder = Path(out) / f"rsdg-bench-{name.replace('_', '-')}"
    if folder.exists():
        raise RsdgError(f"{folder} exists already", "pass another --out, or remove the folder")
    package = f"rsdg_{name}"
    cls = "".join(part.capitalize() for part in name.split("_")) + "Adapter"
    values = {"name": name, "package": package, "cls": cls, "bands": repr(tuple(bands)), "mean": repr(tuple(mean)),
              "std": repr(tuple(std)), "divisor": size_divisor, "kinds": repr(set(kinds)), "task": task,
              "by_name": bands_by_name}
    files = {"pyproject.toml": PYPROJECT, f"{package}/__init__.py": Template('"""The $name adapter for rsdg-bench."""\n'),
             f"{package}/adapter.py": ADAPTER, "tests/test_conformance.py": TEST, "README.md": README}
    for relative, template in files.items():
        atomic_write_text(folder / relative, template.substitute(values))
    return folder
