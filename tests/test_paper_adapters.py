"""CromSS and DAFormer adapters against the upstream key manifests and numerical fixtures.

The manifests and fixture in tests/fixtures/upstream were produced by the upstream code on random weights
(see its README); synthetic checkpoints here are built from the manifests' key lists and shapes
in the real container formats (Lightning `.ckpt`, mmcv-1 `.pth` with DAFormer's UDA wrapper).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from upstream_fixtures import load_fixture, manifest, synthetic_state

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.baselines.cromss_adapter import S2_MEAN, S2_STD, CromSSAdapter, cromss_normalization
from rsdg_bench.baselines.daformer_adapter import DAFormerAdapter
from rsdg_bench.baselines.daformer_head import DAFormerHead
from rsdg_bench.protocol.task_schema import Task


def task(classes: str, dataset: str = "d") -> Task:
    return Task.model_validate({
        "id": "t/x", "name": "x", "version": 1, "suite": "t", "gap": "g", "classes": classes,
        "source": {"dataset": dataset, "domain": "a", "split": "train"},
        "targets": [{"dataset": dataset, "domain": "b", "split": "test"}], "checkpoint_key": "k"})


# ----------------------------------------------------------------------------- DAFormer

def test_daformer_head_reproduces_the_upstream_fixture():
    fixture = load_fixture("fx_daformer_head.json")
    head = DAFormerHead((8, 16, 24, 32), 5, channels=16, embed_dims=16)
    head.load_state_dict(fixture["state_dict"], strict=True)
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(list(fixture["input"])), fixture["output"], atol=1e-5, rtol=0)


def _daformer_checkpoint(path: Path, num_classes: int, placeholders: bool = False) -> dict[str, torch.Tensor]:
    """A DAFormer UDA checkpoint as mmcv-1 writes it: meta, state_dict with model/ema_model/imnet_model. With
    `placeholders`, every tensor but the classifier's holds one element: the manifest's keys, the class count, and
    a file a tenth of a second to write and read, where the full one (85 M weights, three times) takes seconds."""
    shapes = dict(manifest("daformer_mitb5_19.json"))
    if placeholders:
        shapes = dict.fromkeys(shapes, [1])
    shapes["model.decode_head.conv_seg.weight"] = [num_classes, 256, 1, 1]
    shapes["model.decode_head.conv_seg.bias"] = [num_classes]
    student = synthetic_state(shapes, seed=1)
    teacher = {k.replace("model.", "ema_model.", 1): v + 1 for k, v in student.items()}
    imnet = {k.replace("model.", "imnet_model.", 1): v for k, v in student.items()}
    torch.save({"meta": {"CLASSES": [f"c{i}" for i in range(num_classes)], "iter": 40000},
                "state_dict": {**student, **teacher, **imnet}, "optimizer": {"state": {}}}, path)
    return student


def test_daformer_keys_match_the_manifest_and_uda_checkpoints_load_the_student(tmp_path: Path):
    checkpoint = tmp_path / "daformer.pth"
    student = _daformer_checkpoint(checkpoint, num_classes=5)
    adapter = DAFormerAdapter()
    adapter.setup(task("toyearth5"), ["red", "green", "blue"])
    own = {f"model.{k}": list(v.shape) for k, v in adapter.module.state_dict().items()}
    assert own == {k: list(v.shape) for k, v in student.items()}
    adapter.load(checkpoint)
    torch.testing.assert_close(adapter.module.state_dict()["decode_head.conv_seg.weight"],
                               student["model.decode_head.conv_seg.weight"])
    teacher = DAFormerAdapter(keep="ema_model")
    teacher.setup(task("toyearth5"), ["red", "green", "blue"])
    teacher.load(checkpoint)
    torch.testing.assert_close(teacher.module.state_dict()["decode_head.conv_seg.weight"],
                               student["model.decode_head.conv_seg.weight"] + 1)


def test_daformer_refuses_a_cityscapes_checkpoint_for_another_class_count_and_stray_keys(tmp_path: Path):
    checkpoint = tmp_path / "cityscapes.pth"
    # each refusal below comes before a weight is copied (the class count, a stray key, an unreadable file), so
    # the weights are placeholders; a full checkpoint loads in the test above
    _daformer_checkpoint(checkpoint, num_classes=19, placeholders=True)
    adapter = DAFormerAdapter()
    adapter.setup(task("toyearth5"), ["red", "green", "blue"])
    with pytest.raises(AdapterError, match="predicts 19 classes; the task has 5"):
        adapter.load(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    state["model.auxiliary_head.conv_seg.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, checkpoint)
    with pytest.raises(AdapterError, match="model.auxiliary_head.conv_seg.weight"):
        adapter.load(checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(AdapterError, match="cannot read checkpoint"):
        adapter.load(checkpoint)


# ----------------------------------------------------------------------------- CromSS

def _lightning_checkpoint(path: Path, manifest_name: str) -> dict[str, torch.Tensor]:
    state = synthetic_state(manifest(manifest_name), seed=2)
    torch.save({"epoch": 199, "global_step": 1000, "pytorch-lightning_version": "1.9.0", "state_dict": state,
                "hyper_parameters": {"n_bands": 13}}, path)
    return state


@pytest.mark.parametrize(("fusion", "manifest_name", "prefix"), [
    ("mid", "cromss_midF_13B.json", "net."), ("late", "cromss_lateF_13B.json", "net.model2.")])
def test_cromss_zero_shot_loads_the_whole_s2_unet(tmp_path: Path, fusion: str, manifest_name: str, prefix: str):
    checkpoint = tmp_path / f"weights-cromss-13B-{fusion}Fusion-epoch=199.ckpt"
    state = _lightning_checkpoint(checkpoint, manifest_name)
    adapter = CromSSAdapter(mode="zeroshot", fusion=fusion)
    adapter.setup(task("dynamicworld9"), [])
    adapter.load(checkpoint)
    loaded = adapter.module.state_dict()
    encoder = "net.encoder." if fusion == "mid" else "net.model2.encoder."
    torch.testing.assert_close(loaded["encoder.conv1.weight"], state[f"{encoder}conv1.weight"])
    torch.testing.assert_close(loaded["segmentation_head.0.weight"], state[f"{prefix}segmentation_head.0.weight"])
    assert loaded["encoder.conv1.weight"].shape == (64, 13, 7, 7)


@pytest.mark.parametrize("arch", ["unet", "pspnet", "deeplabv3plus", "fpn"])
def test_cromss_transfer_takes_the_encoder_and_trains_the_decoder(tmp_path: Path, arch: str):
    checkpoint = tmp_path / "weights-cromss-13B-midFusion-epoch=199.ckpt"
    state = _lightning_checkpoint(checkpoint, "cromss_midF_13B.json")
    adapter = CromSSAdapter(arch=arch, pretrained=str(checkpoint), freeze_encoder="true")
    adapter.setup(task("toyearth5"), [])
    encoder = adapter.module.encoder.state_dict()
    assert all(torch.equal(encoder[k], state[f"net.encoder.{k}"]) for k in encoder)
    assert not any(p.requires_grad for p in adapter.module.encoder.parameters())
    s1 = CromSSAdapter(arch=arch, modality="s1", pretrained=str(checkpoint))
    s1.setup(task("toyearth5"), [])
    assert torch.equal(s1.module.encoder.state_dict()["conv1.weight"], state["net.encoder1.conv1.weight"])
    assert s1.input_contract().band_names == ("VV", "VH")


def test_cromss_wrong_layout_is_named(tmp_path: Path):
    checkpoint = tmp_path / "weights-cromss-13B-lateFusion-epoch=199.ckpt"
    _lightning_checkpoint(checkpoint, "cromss_lateF_13B.json")
    with pytest.raises(AdapterError, match=r"(?s)no net\.encoder\.\* keys.*fusion=mid"):
        CromSSAdapter(pretrained=str(checkpoint)).setup(task("toyearth5"), [])
    nine = CromSSAdapter(bands="9", fusion="late", pretrained=str(checkpoint))
    with pytest.raises(AdapterError, match=r"wrong shape: encoder.conv1.weight"):
        nine.setup(task("toyearth5"), [])


def test_cromss_normalization_is_its_clip_stretch_truncate_rule():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 6000, (1, 13, 32, 32)).astype(np.float32)
    raw[0, :, 0, 0] = 0  # below μ − 2σ for most bands
    expected = np.empty_like(raw)
    for band, (mean, std) in enumerate(zip(S2_MEAN, S2_STD, strict=True)):  # CromSS's img_clip, restated
        low, high = mean - 2 * std, mean + 2 * std
        expected[0, band] = np.clip((raw[0, band] - low) / (high - low) * 255.0, 0, 255).astype(np.uint8) / 255
    ours = cromss_normalization(S2_MEAN, S2_STD).apply(torch.from_numpy(raw)).numpy()
    assert np.abs(ours - expected).max() <= 1 / 255 + 1e-6
    assert (np.abs(ours - expected) < 1e-6).mean() > 0.999
    assert ours.min() == 0.0 and ours.max() <= 1.0


def test_run_cromss_zero_shot_on_a_13_band_task_writes_a_record(tmp_path: Path, monkeypatch, capsys):
    """`rsdg-bench run --model cromss ... --checkpoint <pretraining ckpt>` end to end, on a small S2 dataset."""
    import yaml

    from rsdg_bench.baselines.cromss_adapter import S2_BANDS
    from rsdg_bench.cli import main
    from rsdg_bench.datasets.classes import load_class_schema
    from rsdg_bench.datasets.prepared import BandInfo, DomainInfo, PreparedWriter, SampleArrays
    from rsdg_bench.records.results import ResultStore

    rng = np.random.default_rng(3)
    writer = PreparedWriter(tmp_path / "data", "s2toy", load_class_schema("dynamicworld9"), fingerprint={"v": 1})
    for domain in ("europe", "asia"):
        for i in range(2):
            writer.add(SampleArrays(f"{domain}_{i}", domain, "test" if domain == "asia" else "train",
                                    rng.integers(0, 5000, (13, 64, 64)).astype(np.uint16),
                                    rng.integers(0, 9, (64, 64)).astype(np.uint8), f"{domain}_{i}.tif", (0, 0, 64, 64)))
    bands = [BandInfo(name=b, dtype="uint16", units="TOA reflectance x 1e4") for b in S2_BANDS]
    writer.finish(prep_version=1, citation="test", licence="test",
                  domains={d: DomainInfo(description=d, bands=bands) for d in ("europe", "asia")},
                  source_archives=[], expected_counts={("europe", "train"): 2, ("asia", "test"): 2})
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "e2a.yaml").write_text(yaml.safe_dump({
        "id": "s2toy/e2a", "name": "E2A", "version": 1, "suite": "s2toy", "gap": "region", "classes": "dynamicworld9",
        "source": {"dataset": "s2toy", "domain": "europe", "split": "train"},
        "targets": [{"dataset": "s2toy", "domain": "asia", "split": "test"}], "checkpoint_key": "dw"}))
    monkeypatch.setenv("RSDG_TASK_PATH", str(tasks))
    checkpoint = tmp_path / "weights-cromss-13B-midFusion-epoch=199.ckpt"
    _lightning_checkpoint(checkpoint, "cromss_midF_13B.json")
    code = main(["run", "--model", "cromss", "--model-arg", "mode=zeroshot", "--task", "s2toy/e2a", "--checkpoint",
                 str(checkpoint), "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "res"), "--quiet"])
    assert code == 0, capsys.readouterr()
    [(_, record)] = ResultStore(tmp_path / "res").load_all()
    assert record.model["adapter"] == "cromss" and record.model["options"]["mode"] == "zeroshot"
    assert record.model["checkpoint"]["sha256"] == sha256_file(checkpoint)
    assert record.normalization["clip"] == [0.0, 1.0] and record.normalization["levels"] == 255
