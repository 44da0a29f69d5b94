"""The presets' protocols as data: every file valid and named as itself, what each sets over the task's training
block, malformed files refused with the file named, and the command line's preset and protocol flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rsdg_bench.base.errors import AdapterError, RsdgError
from rsdg_bench.baselines import encoder_protocols
from rsdg_bench.baselines.encoder_protocols import EncoderProtocol, load_protocols
from rsdg_bench.cli.options import chosen_model
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.training_record import training_provenance


def test_the_shipped_protocols_and_what_they_set_over_a_task():
    protocols = load_protocols()
    assert set(protocols) == {"linear_probe", "frozen_upernet", "finetune_upernet", "lora_upernet"}
    task = TaskCatalog().task("demo/u2a")
    probe = protocols["linear_probe"].apply(task.training)
    assert (probe.lr, probe.weight_decay, probe.optimizer) == (1e-3, 1e-4, "adamw")
    assert (probe.iterations, probe.batch_size, probe.crop, probe.augment) == (
        task.training.iterations, task.training.batch_size, task.training.crop, task.training.augment)
    assert protocols["lora_upernet"].lora is not None and protocols["lora_upernet"].lora.rank == 8
    crossearth = TaskCatalog().task("crossearth/pi2v")  # the protocol's poly decays over the run on every task,
    assert crossearth.training.schedule_iterations == 40000  # not over a task's own longer horizon
    assert protocols["frozen_upernet"].apply(crossearth.training).schedule_iterations is None
    noldo = TaskCatalog().task("noldo_s12/dw-s2")  # a cosine task: its cosine values go with its schedule
    assert noldo.training.schedule == "cosine" and noldo.training.final_lr is not None
    poly = protocols["linear_probe"].apply(noldo.training)
    assert (poly.schedule, poly.final_lr, poly.decay_fraction, poly.epochs) == ("poly", None, 1.0, noldo.training.epochs)
    assert noldo.training.schedule_step == "epoch" and poly.schedule_step == "iteration"


def test_a_checkpoint_is_judged_against_the_protocol_it_was_trained_under():
    task = TaskCatalog().task("demo/u2a")
    spec = load_protocols()["linear_probe"].apply(task.training)
    block = {"training": spec.model_dump(mode="json"), "task_id": task.id}
    assert training_provenance(task, block, 8, spec)["status"] == "protocol"
    task_view = training_provenance(task, block, 8)
    assert task_view["status"] == "off-protocol" and any(d.startswith("weight_decay ") for d in task_view["differences"])


@pytest.mark.parametrize(("text", "problem"), [
    ("name: bad\nversion: 1\ndescription: d\nencoder: frozen\nhead: linear\ntraining: {crop: 64}\n", "crop"),
    ("name: bad\nversion: 1\ndescription: d\nencoder: full\nhead: linear\ncache_features: true\n", "frozen"),
    ("name: bad\nversion: 1\ndescription: d\nencoder: lora\nhead: upernet\n", "lora"),
    ("name: other\nversion: 1\ndescription: d\nencoder: frozen\nhead: linear\n", "names itself"),
    ("name: bad\nname: bad\n", "twice"),
])
def test_a_malformed_protocol_file_is_refused_naming_it(tmp_path: Path, monkeypatch, text: str, problem: str):
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.setattr(encoder_protocols, "protocols_folder", lambda: tmp_path)
    encoder_protocols.load_protocols.cache_clear()
    try:
        with pytest.raises(AdapterError, match=problem) as info:
            load_protocols()
        assert str(tmp_path / "bad.yaml") in info.value.problem
    finally:
        encoder_protocols.load_protocols.cache_clear()
    assert EncoderProtocol.model_fields["training"].default_factory is dict


def _flags(model: str, protocol: str | None, *pairs: str) -> argparse.Namespace:
    return argparse.Namespace(adapter=None, model=model, model_arg=list(pairs), protocol=protocol)


def test_a_preset_name_is_the_encoder_adapter_and_protocol_goes_with_presets_only():
    assert chosen_model(_flags("dinov2-vits14", "lora_upernet", "weights=w.pt")) == (
        "encoder", {"preset": "dinov2-vits14", "weights": "w.pt", "protocol": "lora_upernet"})
    assert chosen_model(_flags("smp", None, "encoder=resnet18")) == ("smp", {"encoder": "resnet18"})
    with pytest.raises(RsdgError, match="not one"):
        chosen_model(_flags("smp", "linear_probe"))


def test_a_head_only_checkpoint_loads_only_over_the_encoder_weights_it_was_trained_on(tmp_path: Path):
    """A frozen protocol's checkpoint holds no encoder; it carries the sha256 of the weights it was trained over and
    is refused over others, with both named."""
    import torch

    from rsdg_bench.baselines.encoder_adapter import EncoderAdapter

    task = TaskCatalog().task("noldo_s12/dw-s2")
    random = EncoderAdapter(preset="ssl4eo-s2rgb-resnet50-moco", weights="random")
    random.setup(task, ["B2", "B3", "B4"])
    state = random.trained_state()
    assert not [k for k in state if k.startswith("encoder.")] and not state["encoder_weights_sha256"].any()
    path = tmp_path / "head.pt"
    torch.save({"state_dict": state}, path)
    random.load(path)  # the same (random) encoder
    full = EncoderAdapter(preset="resnet50-imagenet", protocol="finetune_upernet", weights="random")
    full.setup(task, ["B2", "B3", "B4"])
    full_path = tmp_path / "full.pt"
    torch.save({"state_dict": full.trained_state()}, full_path)  # a fine-tuned encoder says what it grew from too
    weights = tmp_path / "encoder.pt"
    torch.save({k.removeprefix("encoder."): v for k, v in random.module.state_dict().items() if k.startswith("encoder.")},
               weights)
    released = EncoderAdapter(preset="ssl4eo-s2rgb-resnet50-moco", weights=str(weights))
    with pytest.raises(AdapterError, match="published file"):  # the file's sha256 is not the published prefix
        released.setup(task, ["B2", "B3", "B4"])
    resnet = EncoderAdapter(preset="resnet50-imagenet", weights=str(weights))  # timm states no prefix
    resnet.setup(task, ["B2", "B3", "B4"])
    with pytest.raises(AdapterError, match="random .weights=random.; this run's are sha256") as info:
        resnet.load(path)
    assert "weights=FILE" in info.value.fix
    tuned = EncoderAdapter(preset="resnet50-imagenet", protocol="finetune_upernet", weights=str(weights))
    tuned.setup(task, ["B2", "B3", "B4"])
    with pytest.raises(AdapterError, match="over encoder weights random"):
        tuned.load(full_path)
    assert tuned.checkpoint_stem(task) == "ssl4eo_dw_s2_source.resnet50-imagenet.finetune_upernet"
    assert full.checkpoint_stem(task).endswith(".finetune_upernet.random")
    assert tuned.display_name() == f"resnet50-imagenet · finetune_upernet (weights {tuned.identity()['options']['weights'][:8]})"
