"""Backbone presets under the protocols: every registered preset's real module structure against its manifest and
published size, and every preset trained by `train` under a protocol and evaluated by `run` (random weights on the
fakes), with what each protocol trains and what the records say of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml

from rsdg_bench.baselines.encoder_adapter import EncoderAdapter, LinearHead, UperHead, level_channels
from rsdg_bench.baselines.encoder_presets import PRESETS, EncoderPreset
from rsdg_bench.baselines.encoder_protocols import load_protocols
from rsdg_bench.cli import main
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore

MANIFESTS = Path(__file__).parent / "fixtures" / "encoder_presets.json"
PROTOCOLS = sorted(load_protocols())
TRAIN_ITERATIONS = 1


def structure(preset: EncoderPreset) -> dict:
    """The encoder's state-dict structure as the preset builds it (on the meta device: no memory, no init)."""
    with torch.device("meta"):
        encoder = timm.create_model(preset.architecture, **preset.timm_kwargs())
    shapes = {key: list(value.shape) for key, value in encoder.state_dict().items()}
    digest = hashlib.sha256("\n".join(f"{k}:{v}" for k, v in sorted(shapes.items())).encode()).hexdigest()
    params = sum(p.numel() for p in encoder.parameters())
    first = next(k for k, v in shapes.items() if len(v) == 4)  # the first layer over the bands
    return {"architecture": preset.architecture, "tensors": len(shapes), "parameters": params,
            "first_layer": [first, shapes[first]], "keys_sha256": digest}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_builds_the_structure_its_manifest_pins_at_its_published_size(name: str):
    """The key/shape manifest catches a library release that renames or reshapes the encoder (the weights would no
    longer load); the parameter count is checked against the one its paper publishes (within 6 %); the first
    layer takes as many bands as the weights' metadata names."""
    preset = PRESETS[name]
    built = structure(preset)
    manifests = json.loads(MANIFESTS.read_text())
    assert name in manifests, f"no manifest for preset {name}: add to {MANIFESTS.name}: {json.dumps({name: built})}"
    assert built == manifests[name]
    assert built["first_layer"][1][1] == len(preset.bands)
    assert preset.published_params_m is not None
    assert built["parameters"] / 1e6 == pytest.approx(preset.published_params_m, rel=0.06)


S2_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


def _tiny_tasks(folder: Path) -> Path:
    """Two tasks of the real kind on NoLDO-S12's small fake tiles (30 and 32 pixels), which a CPU trains and scores
    in a second: Sentinel-2's 13 bands (an RGB preset takes B4, B3, B2 by colour) and Sentinel-1's VV and VH. No
    selection split: training keeps its last state."""
    folder.mkdir(exist_ok=True)
    common = {"version": 1, "kind": "segmentation", "inference": {"mode": "whole"}, "gap": "region",
              "suite": "fmtiny", "classes": "dynamicworld9", "metrics": {"primary": "miou", "report": ["miou"]},
              "training": {"iterations": 50, "batch_size": 2, "lr": 0.5, "crop": 32}}
    for name, bands in (("s2", S2_BANDS), ("s1", ["VV", "VH"])):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({
            **common, "id": f"fmtiny/{name}", "name": name.upper(), "checkpoint_key": name, "inputs": {"bands": bands},
            "source": {"dataset": "noldo_s12", "domain": f"dw_{name}", "split": "train"},
            "targets": [{"dataset": "noldo_s12", "domain": f"dw_{name}", "split": "test"}]}))
    return folder


def protocol_under_test(name: str) -> str:
    """The protocol a preset is tested under: the protocols in turn over the presets in name order, but the linear
    probe for an encoder over 100 M parameters (a ViT-L's full fine-tune takes 40 s on a CPU core; the other
    protocols run on smaller encoders of the same families)."""
    preset = PRESETS[name]
    if preset.published_params_m is not None and preset.published_params_m > 100:
        return "linear_probe"
    return PROTOCOLS[sorted(PRESETS).index(name) % len(PROTOCOLS)]


def test_every_protocol_is_tested_on_three_presets_or_more():
    chosen = [protocol_under_test(name) for name in PRESETS]
    assert {protocol: chosen.count(protocol) >= 3 for protocol in PROTOCOLS} == dict.fromkeys(PROTOCOLS, True)


def _setting(preset: EncoderPreset) -> tuple[str, list[str]]:
    """The tiny task a preset's bands suit and its bands there."""
    return ("fmtiny/s1", ["VV", "VH"]) if preset.bands == ("VV", "VH") else ("fmtiny/s2", S2_BANDS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_trains_under_a_protocol_and_run_scores_its_checkpoint(name, tmp_path, monkeypatch, prepared_fakes):
    """`train --model <preset> --protocol <p>` then `run`, each preset under one of the protocols in turn (so every
    protocol runs on several architectures). What trains is what the protocol says: a frozen or LoRA checkpoint
    holds the head (and the LoRA layers) only, the encoder being the released one; the head moved from its initial
    weights, LoRA's B matrices from zero; a fine-tune moved the encoder. The record judges the checkpoint against
    the protocol's values over the task's (only the iterations, cut for the test, differ), and names the preset,
    the protocol and the band match."""
    preset = PRESETS[name]
    protocol = protocol_under_test(name)
    declared = load_protocols()[protocol]
    monkeypatch.setenv("RSDG_TASK_PATH", str(_tiny_tasks(tmp_path / "tasks")))
    task_id, bands = _setting(preset)
    model = ["--model", name, "--protocol", protocol, "--model-arg", "weights=random"]
    common = ["--task", task_id, "--data-root", str(prepared_fakes.data("noldo_s12", "dfc2020")), "--results",
              str(tmp_path / "res"), "--device", "cpu", "--quiet"]
    assert main(["train", *model, *common, "--iterations", str(TRAIN_ITERATIONS)]) == 0
    task = TaskCatalog().task(task_id)
    checkpoint = tmp_path / "res" / "checkpoints" / "encoder" / f"{task.checkpoint_key}.{name}.{protocol}.random.pt"
    payload = torch.load(checkpoint, weights_only=True)
    assert {k: payload["rsdg"]["training"][k] for k in declared.training} == declared.training
    trained = payload["state_dict"]

    torch.manual_seed(task.training.seed)  # the initial weights, as `train` draws them
    if declared.encoder == "full":
        initial = EncoderAdapter(preset=name, protocol=protocol, weights="random")  # built as `train` built it
        initial.setup(task, bands)
        before = initial.module.state_dict()
        assert set(trained) == set(before)
        assert any(not torch.equal(trained[k], before[k]) for k in before if k.startswith("encoder."))
        assert any(not torch.equal(trained[k], before[k]) for k in before if k.startswith("head."))
    else:
        assert trained and not [k for k in trained if k.startswith("encoder.") and "lora_" not in k]
        if declared.encoder == "lora":
            lora = [k for k in trained if "lora_B" in k]
            assert lora and any(not torch.equal(trained[k], torch.zeros_like(trained[k])) for k in lora)
        else:  # the head alone draws from the seeded generator (the encoder is built under its own seed)
            with torch.device("meta"):
                channels = level_channels(timm.create_model(preset.architecture, **preset.timm_kwargs()))
            head = (LinearHead if declared.head == "linear" else UperHead)(channels, task.class_schema.num_classes)
            before = {f"head.{k}": v for k, v in head.state_dict().items()}
            assert set(trained) == {*before, "encoder_weights_sha256"}  # and what the head was trained over
            assert not trained["encoder_weights_sha256"].any()  # weights=random
            assert any(not torch.equal(trained[k], before[k]) for k in before if before[k].is_floating_point())

    assert main(["run", *model, *common, "--limit", "1"]) == 0
    (_, record), = ResultStore(tmp_path / "res").load_all()
    assert record.model["options"]["preset"] == name and record.model["options"]["protocol"] == protocol
    assert record.model["bands"]["policy"] == "error"
    verdict = record.model["training"]
    assert verdict["status"] == "off-protocol" and [d.split()[0] for d in verdict["differences"]] == ["iterations"]
    assert verdict["objective"] == "ce"
    assert sum(map(sum, next(iter(record.confusion_matrices.values())))) > 0


def test_run_trains_what_is_missing_under_the_full_protocol_then_scores_it(tmp_path, monkeypatch, prepared_fakes):
    """`run --model <preset> --protocol <p> --train-missing`: one command trains the checkpoint under the task's
    protocol with the preset protocol's values (its records are full-protocol), then evaluates; a second run
    finds it and trains nothing."""
    monkeypatch.setenv("RSDG_TASK_PATH", str(_tiny_tasks(tmp_path / "tasks")))
    args = ["run", "--model", "ssl4eo-s2rgb-resnet50-moco", "--protocol", "linear_probe", "--model-arg", "weights=random",
            "--task", "fmtiny/s2", "--data-root", str(prepared_fakes.data("noldo_s12", "dfc2020")), "--results",
            str(tmp_path / "res"), "--device", "cpu", "--quiet", "--train-missing"]
    assert main(args) == 0
    checkpoint = tmp_path / "res" / "checkpoints" / "encoder" / "s2.ssl4eo-s2rgb-resnet50-moco.linear_probe.random.pt"
    (_, record), = ResultStore(tmp_path / "res").load_all()
    assert record.model["training"]["status"] == "protocol" and record.model["training"]["iterations"] == 50
    assert record.model["checkpoint"]["path"] == str(checkpoint)
    stamp = checkpoint.stat().st_mtime_ns
    assert main([*args, "--force"]) == 0 and checkpoint.stat().st_mtime_ns == stamp
