"""Adapter discovery (built-in, entry point, file), strict weight loading, harness normalization, conformance."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.evaluator.conformance import run_conformance
from rsdg_bench.models import registry
from rsdg_bench.models.adapters import InputContract, Normalization, load_state_strict
from rsdg_bench.models.registry import available_adapters, builtin_entries, builtin_modules, resolve_adapter
from rsdg_bench.protocol.task_schema import TaskCatalog

TASK = TaskCatalog().task("demo/u2a")
PLUGIN = """
import torch
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization

class Tiny(Adapter):
    trainable = True

    def setup(self, task, band_names):
        self.module = torch.nn.Conv2d(len(band_names), task.class_schema.num_classes, 3, padding=1)
        self._contract = InputContract(len(band_names), Normalization((0.0,) * len(band_names), (1.0,) * len(band_names)))

    def input_contract(self):
        return self._contract

    def predict(self, x):
        return self.module(x){suffix}
"""


def write_plugin(tmp_path: Path, suffix: str = "", name: str = "tiny.py") -> Path:
    path = tmp_path / name
    path.write_text(PLUGIN.replace("{suffix}", suffix))
    return path


def test_builtin_smp_is_listed_and_resolves():
    assert available_adapters()["smp"] == "built-in"
    assert resolve_adapter("smp").name == "smp"


def installed_with(monkeypatch: pytest.MonkeyPatch, entry: EntryPoint) -> None:
    """The adapter registry as if a package declaring `entry` were installed beside rsdg-bench; what the test
    loads is forgotten after it."""
    installed = registry.ADAPTERS.entry_points()
    monkeypatch.setattr(registry.ADAPTERS, "entry_points", lambda: [*installed, entry])
    monkeypatch.setattr(registry.ADAPTERS, "_items", dict(registry.ADAPTERS._items))
    monkeypatch.setattr(registry.ADAPTERS, "_sources", dict(registry.ADAPTERS._sources))


def test_adapter_from_a_file(tmp_path: Path):
    cls = resolve_adapter(f"{write_plugin(tmp_path)}:Tiny")
    assert cls.__name__ == "Tiny" and cls.name == "Tiny"


def test_adapter_from_an_entry_point(tmp_path: Path, monkeypatch):
    path = write_plugin(tmp_path, name="tiny_plugin_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = EntryPoint(name="tiny", value="tiny_plugin_mod:Tiny", group=registry.ENTRY_POINT_GROUP)
    installed_with(monkeypatch, entry)
    assert resolve_adapter("tiny").__name__ == "Tiny"
    assert available_adapters()["tiny"].startswith("plug-in")
    assert path.exists()


def test_unknown_adapter_lists_the_known_ones():
    with pytest.raises(AdapterError, match="smp"):
        resolve_adapter("crossearthh")


def test_strict_loading_names_missing_unexpected_and_mis_shaped_keys():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 5, 1))
    state = dict(module.state_dict())
    state.pop("1.bias")
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(4, 3, 3, 3)
    with pytest.raises(AdapterError, match=r"missing: 1.bias; unexpected: extra.weight; wrong shape: 0.weight"):
        load_state_strict(module, state, "ckpt.pt")


def test_corrupt_checkpoint_file_is_a_clear_error(tmp_path: Path):
    adapter = resolve_adapter("smp")()
    adapter.setup(TASK, ["red", "green", "blue"])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AdapterError, match="cannot read checkpoint"):
        adapter.load(bad)


def test_safetensors_weights_load_like_pytorch_ones_and_a_cut_file_is_named(tmp_path: Path, data_root: Path):
    """Most released weights on the Hub are safetensors: tensors only, nothing to unpickle."""
    from safetensors.torch import save_file

    from rsdg_bench.models.checkpoints import read_state_dict
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.records.results import ResultStore
    from rsdg_bench.run.runner import RunSettings, run_tasks

    torch.manual_seed(0)
    source = resolve_adapter(f"{write_plugin(tmp_path)}:Tiny")()
    source.setup(TASK, ["red", "green", "blue"])
    state = {k: v.contiguous() for k, v in source.module.state_dict().items()}
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "released.safetensors")  # DataParallel keys
    read, kind = read_state_dict(tmp_path / "released.safetensors")
    assert kind == "safetensors" and read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    unnamed = tmp_path / "released.bin"  # known by its header, whatever its name
    unnamed.write_bytes((tmp_path / "released.safetensors").read_bytes())
    assert read_state_dict(unnamed)[1] == "safetensors"

    model = ModelSpec(f"{tmp_path / 'tiny.py'}:Tiny", checkpoint=tmp_path / "released.safetensors")
    [outcome] = run_tasks([TASK], model, RunSettings(data_root=data_root, results_root=tmp_path / "r", progress=False,
                                                     limit=1))
    assert outcome.error is None
    records = [record for _, record in ResultStore(tmp_path / "r").load_all()]
    assert records and all(r.model.checkpoint["sha256"] and r.model.training["status"] == "unknown"  # released
                           for r in records)

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "released.safetensors").read_bytes()[:-40])
    with pytest.raises(AdapterError, match="cannot read checkpoint .*cut.safetensors"):
        read_state_dict(cut)


def test_harness_normalizes_in_data_units_and_checks_bands():
    contract = InputContract(3, Normalization((10.0, 20.0, 30.0), (2.0, 4.0, 5.0)))
    x = torch.tensor([12.0, 28.0, 40.0]).view(1, 3, 1, 1)
    assert contract.prepare(x, ["r", "g", "b"], "t").flatten().tolist() == [1.0, 2.0, 2.0]
    with pytest.raises(AdapterError, match="has 4 bands"):
        contract.prepare(torch.zeros(1, 4, 1, 1), ["r", "g", "b", "n"], "t")


def test_band_names_select_by_name():
    contract = InputContract(2, Normalization((0.0, 0.0), (1.0, 1.0)), band_names=("nir", "red"))
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)     # stored as red, green, nir
    assert contract.prepare(x, ["red", "green", "nir"], "t").flatten().tolist() == [3.0, 1.0]
    with pytest.raises(AdapterError, match="needs \\['nir'\\]"):
        contract.prepare(x[:, :2], ["red", "green"], "t")


def test_smp_options_are_validated():
    with pytest.raises(AdapterError, match="unknown smp options"):
        resolve_adapter("smp")(encodr="resnet18")
    adapter = resolve_adapter("smp")(mean="1,2", std="1")
    with pytest.raises(AdapterError, match="2 values for 3 bands"):
        adapter.setup(TASK, ["red", "green", "blue"])


def test_smp_passes_conformance():
    adapter = resolve_adapter("smp")(encoder="resnet18")
    adapter.setup(TASK, ["red", "green", "blue"])
    results = run_conformance(adapter, TASK, ["red", "green", "blue"])
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_conformance_catches_a_broken_adapter(tmp_path: Path):
    noisy_file = write_plugin(tmp_path, suffix=" + torch.randn(1)", name="noisy.py")
    noisy = resolve_adapter(f"{noisy_file}:Tiny")()
    noisy.setup(TASK, ["red", "green", "blue"])
    failed = {r.name for r in run_conformance(noisy, TASK, ["red", "green", "blue"]) if not r.passed}
    assert "finite and deterministic" in failed
    nan_file = write_plugin(tmp_path, suffix=" * float('nan')", name="nan.py")
    nan = resolve_adapter(f"{nan_file}:Tiny")()
    nan.setup(TASK, ["red", "green", "blue"])
    failed = {r.name for r in run_conformance(nan, TASK, ["red", "green", "blue"]) if not r.passed}
    assert "shape and K" in failed


def test_adapter_check_fails_a_broken_adapter_under_python_O_too(tmp_path: Path):
    """The checks raise, they do not `assert`: `python -O` (asserts stripped) must not pass a broken adapter."""
    import subprocess
    import sys

    noisy_file = write_plugin(tmp_path, suffix=" + torch.randn(1)", name="noisy.py")
    done = subprocess.run([sys.executable, "-O", "-m", "rsdg_bench.cli", "adapter", "check", f"{noisy_file}:Tiny"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "FAIL  finite and deterministic" in done.stdout, done.stdout + done.stderr


def test_smp_encoder_weights_load_from_a_local_file(tmp_path: Path):
    source = resolve_adapter("smp")()
    source.setup(TASK, ["red", "green", "blue"])
    encoder_state = {f"encoder.{k}": v for k, v in source.module.encoder.state_dict().items()}
    encoder_state["fc.weight"] = torch.zeros(2, 2)            # a classifier, as torchvision files carry
    torch.save(encoder_state, tmp_path / "enc.pt")
    target = resolve_adapter("smp")(encoder_weights=str(tmp_path / "enc.pt"))
    target.setup(TASK, ["red", "green", "blue"])
    for key, value in source.module.encoder.state_dict().items():
        assert torch.equal(target.module.encoder.state_dict()[key], value)
    wrong = resolve_adapter("smp")(encoder="resnet34", encoder_weights=str(tmp_path / "enc.pt"))
    with pytest.raises(AdapterError, match="missing"):
        wrong.setup(TASK, ["red", "green", "blue"])


def test_a_kind_the_adapter_does_not_declare_is_refused_before_any_data_is_read(tmp_path):
    from conftest import SMALL_MODEL

    from rsdg_bench.run.runner import RunSettings, run_tasks

    for kind in ("temporal_segmentation", "classification"):
        other = TASK.model_copy(update={"kind": kind})
        [outcome] = run_tasks([other], SMALL_MODEL, RunSettings(tmp_path / "no-data-here", tmp_path / "r", progress=False))
        assert f"does not do {kind}" in outcome.error and "not found" not in outcome.error


def test_a_missing_class_in_an_adapter_file_is_named(tmp_path: Path):
    path = write_plugin(tmp_path)
    with pytest.raises(AdapterError, match=r"no class 'Nope' in .*tiny.py \(its Adapter classes: Tiny\)"):
        resolve_adapter(f"{path}:Nope")


def test_a_plugin_named_like_a_builtin_is_an_error_not_silently_shadowed(tmp_path: Path, monkeypatch):
    write_plugin(tmp_path, name="shadow_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = EntryPoint(name="smp", value="shadow_mod:Tiny", group=registry.ENTRY_POINT_GROUP)
    installed_with(monkeypatch, entry)
    with pytest.raises(AdapterError, match="has the name of a built-in adapter"):
        resolve_adapter("smp")


def test_an_adapters_code_is_part_of_its_identity_so_an_edit_runs_again(tmp_path: Path, data_root: Path):
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.run.runner import RunSettings, run_tasks

    path = write_plugin(tmp_path)
    spec = ModelSpec(f"{path}:Tiny", random_init=True)
    settings = RunSettings(data_root=data_root, results_root=tmp_path / "results", progress=False, limit=1)
    [first] = run_tasks([TASK], spec, settings)
    [again] = run_tasks([TASK], spec, settings)
    assert first.written and again.written == [] and len(again.skipped) == len(first.written)
    identity = resolve_adapter(f"{path}:Tiny")().identity()
    assert identity["code"]["files"] == ["tiny.py"] and len(identity["code"]["sha256"]) == 64
    write_plugin(tmp_path, suffix=" * -1")  # negated logits: other code, so other numbers
    [edited] = run_tasks([TASK], spec, settings)
    assert len(edited.written) == len(first.written) and edited.skipped == []
    assert resolve_adapter(f"{path}:Tiny")().identity()["code"]["sha256"] != identity["code"]["sha256"]


def test_a_builtins_code_identity_covers_the_modules_it_uses():
    code = resolve_adapter("crossearth")().identity()["code"]
    assert {"crossearth_adapter.py", "reins_vit.py", "mask2former_head.py"} <= set(code["files"])
    assert "distribution" not in code  # the harness's own built-ins: its version and commit are in provenance


def test_a_plugin_distribution_adds_its_name_and_version_to_the_code_identity(tmp_path: Path, monkeypatch):
    from rsdg_bench.models import code_identity

    write_plugin(tmp_path, name="dist_plugin_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = EntryPoint(name="distplug", value="dist_plugin_mod:Tiny", group=registry.ENTRY_POINT_GROUP)
    installed_with(monkeypatch, entry)
    monkeypatch.setattr(code_identity, "packages_distributions", lambda: {"dist_plugin_mod": ["tiny-plugin"]})
    monkeypatch.setattr(code_identity, "version", lambda name: {"tiny-plugin": "1.2.3"}[name])
    code = resolve_adapter("distplug")().identity()["code"]
    assert code["distribution"] == "tiny-plugin" and code["version"] == "1.2.3"
    assert code["files"] == ["dist_plugin_mod.py"] and len(code["sha256"]) == 64


def test_a_generated_adapter_package_checks_trains_runs_and_reaches_the_board(tmp_path: Path, data_root: Path,
                                                                              monkeypatch):
    from rsdg_bench.base.errors import RsdgError
    from rsdg_bench.leaderboards.aggregate import build_board
    from rsdg_bench.models.model_spec import ModelSpec, default_checkpoint_dir
    from rsdg_bench.models.scaffold import new_adapter
    from rsdg_bench.records.results import ResultStore
    from rsdg_bench.run.runner import RunSettings, run_tasks
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    folder = new_adapter("tiny_net", tmp_path, ["red", "green", "blue"], [127.5] * 3, [127.5] * 3, ["segmentation"])
    assert (folder / "pyproject.toml").read_text().count('tiny_net = "rsdg_tiny_net.adapter:TinyNetAdapter"') == 1
    with pytest.raises(RsdgError, match="exists already"):
        new_adapter("tiny_net", tmp_path, ["red"], [0.0], [1.0], ["segmentation"])
    # installed, the package is an entry point (pip install -e registers it; here the entry point is given directly)
    monkeypatch.syspath_prepend(str(folder))
    entry = EntryPoint(name="tiny_net", value="rsdg_tiny_net.adapter:TinyNetAdapter", group=registry.ENTRY_POINT_GROUP)
    installed_with(monkeypatch, entry)
    adapter = resolve_adapter("tiny_net")()
    adapter.setup(TASK, ["red", "green", "blue"])
    assert all(r.passed for r in run_conformance(adapter, TASK, ["red", "green", "blue"]))
    model = ModelSpec("tiny_net", display_name="tiny net")
    results = tmp_path / "results"
    trainable = build_trainable(model, TASK, data_root)
    train_adapter(trainable, TASK, data_root, default_checkpoint_dir(results, "tiny_net") / f"{TASK.checkpoint_key}.pt",
                  overrides=TrainOverrides(iterations=2, batch_size=2), progress=False)
    demo = TaskCatalog().suite_tasks("demo")  # RGB→IRRG among them: by default the stored bands go in order
    assert {task.checkpoint_key for task in demo} == {TASK.checkpoint_key} and "demo/rgb2irrg" in {t.id for t in demo}
    outcomes = run_tasks(demo, model, RunSettings(data_root=data_root, results_root=results, progress=False))
    assert all(outcome.error is None and outcome.written for outcome in outcomes), [o.error for o in outcomes]
    board = build_board(*ResultStore(results).load_valid())
    assert board.models == ["tiny net"] and not board.excluded
    assert "off-protocol" in dict(board.tasks[0].badges("tiny net"))  # 2 iterations: said so on the board
    # a package that names its bands is given exactly those: it runs where they are stored, refuses IRRG
    by_name = new_adapter("named_net", tmp_path, ["red", "green", "blue"], [127.5] * 3, [127.5] * 3, ["segmentation"],
                          bands_by_name=True)
    [irrg] = run_tasks([TaskCatalog().task("demo/rgb2irrg")], ModelSpec(
        f"{by_name}/rsdg_named_net/adapter.py:NamedNetAdapter", checkpoint=default_checkpoint_dir(results, "tiny_net") /
        f"{TASK.checkpoint_key}.pt"), RunSettings(data_root=data_root, results_root=tmp_path / "named", progress=False))
    assert "has bands ['nir', 'red', 'green']; the model needs ['blue'] too" in irrg.error


def test_listing_adapters_imports_no_adapter_module_and_no_torch():
    import subprocess
    import sys

    code = ("import sys; from rsdg_bench.models.registry import available_adapters; names = available_adapters(); "
            "print(sorted(names)); print([m for m in sys.modules if m.startswith('rsdg_bench.baselines.') or m == 'torch'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "'smp'" in out[0] and "'crossearth'" in out[0] and out[1] == "[]"
    assert resolve_adapter("smp").name == "smp"  # asked for, a built-in is imported then


@pytest.mark.parametrize("name", sorted(builtin_modules()))
def test_a_builtins_listed_facts_read_from_its_source_are_the_imported_classes(name: str):
    """`adapter list` reads kinds and trainability from the sources (importing the built-ins took 12.5 s)."""
    from rsdg_bench.models import adapter_facts

    static = adapter_facts._static_facts(*builtin_entries()[name])
    cls = resolve_adapter(name)
    assert static == adapter_facts.AdapterFacts(frozenset(cls.kinds), cls.trainable)


def test_a_computed_adapter_attribute_is_read_by_importing(tmp_path: Path, monkeypatch):
    from rsdg_bench.models import adapter_facts

    (tmp_path / "computed_mod.py").write_text(
        "from rsdg_bench.models.adapters import Adapter\nfrom rsdg_bench.models.registry import register_adapter\n"
        "KINDS = {'segmentation'}\n@register_adapter('computed')\nclass Computed(Adapter):\n"
        "    kinds = frozenset(KINDS)\n    trainable = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert adapter_facts._static_facts("computed_mod", "Computed") is None  # not a literal: `adapter list` imports
    assert adapter_facts._static_facts("computed_mod", "Other") is None


@pytest.mark.parametrize("name", sorted(builtin_modules()))
def test_a_builtins_code_identity_read_from_its_sources_equals_the_imported_one(name: str):
    """A static `submission verify` hashes a built-in's sources without importing them (no model library is
    loaded); the files and sha256 must be those `run` records from the imported class."""
    from rsdg_bench.models.code_identity import builtin_code_identity, code_identity
    from rsdg_bench.models.registry import builtin_adapter

    assert builtin_code_identity(builtin_modules()[name]) == code_identity(builtin_adapter(name))
