"""MTP adapter: RVSA ViT and UPerHead parity with the upstream code, the released key layout, loading, and
the model's own sliding window.

Fixtures and the manifest (tests/fixtures/upstream, see its README) come from MTP's `vit_rvsa_mtp.py` and
mmseg 1.0.0's UPerHead on seeded random weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from upstream_fixtures import load_fixture, manifest, synthetic_state

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.references import mmseg_slide_inference
from rsdg_bench.baselines.mtp_adapter import MTPAdapter, MTPSegmentor, rvsa_config
from rsdg_bench.baselines.rvsa_vit import WINDOW, RVSAConfig, RVSAViT, _relative_position_index
from rsdg_bench.baselines.uper_head import UPerHead
from rsdg_bench.cli import main
from rsdg_bench.evaluator.conformance import run_conformance
from rsdg_bench.models.checkpoints import fit_report
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore


def test_rvsa_vit_reproduces_the_upstream_fixture():
    fixture = load_fixture("fx_rvsa_stack.json")
    cfg = fixture["config"]["backbone_cfg"]
    backbone = RVSAViT(RVSAConfig(img_size=cfg["img_size"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                                  num_heads=cfg["num_heads"], interval=cfg["interval"],
                                  out_indices=tuple(cfg["out_indices"])))
    backbone.load_state_dict(fixture["state_dict"], strict=True)
    kinds = [type(block.attn).__name__ for block in backbone.blocks]
    assert kinds == ["RotatedVariedSizeWindowAttention"] * 2 + ["FullAttention"] + \
        ["RotatedVariedSizeWindowAttention"] * 2 + ["FullAttention"]
    assert backbone.blocks[0].attn.sampling_angles[2].weight.abs().sum() > 0  # the rotated path is exercised
    with torch.no_grad():
        maps = backbone.eval()(fixture["input"])
    assert [tuple(m.shape[-2:]) for m in maps] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    for ours, theirs in zip(maps, fixture["output"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_uperhead_reproduces_the_upstream_fixture():
    fixture = load_fixture("fx_uperhead.json")
    cfg = fixture["config"]["head_cfg"]
    head = UPerHead(tuple(cfg["in_channels"]), cfg["num_classes"], channels=cfg["channels"],
                    pool_scales=tuple(cfg["pool_scales"]))
    head.load_state_dict(fixture["state_dict"], strict=True)
    with torch.no_grad():
        logits = head.eval()(fixture["input"])
    torch.testing.assert_close(logits, fixture["output"]["logits"], atol=1e-5, rtol=0)
    resized = F.interpolate(logits, size=(192, 192), mode="bilinear", align_corners=False)  # mmseg's predict
    torch.testing.assert_close(resized, fixture["output"]["predict"], atol=1e-5, rtol=0)


def test_full_size_vit_l_upernet_has_the_released_keys_and_shapes():
    with torch.device("meta"):
        model = MTPSegmentor(rvsa_config("large", 512), num_classes=7)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest("mtp_rvsa_l_upernet_loveda7.json")
    assert model.state_dict()["backbone.blocks.0.attn.relative_position_index"].dtype == torch.int64


def test_rvsa_refuses_other_input_sizes():
    with pytest.raises(AdapterError, match="trained on 128×128 inputs"):
        RVSAViT(RVSAConfig(img_size=128, embed_dim=32, depth=3, num_heads=2, interval=3,
                           out_indices=(0, 1, 2, 2)))(torch.zeros(1, 3, 96, 128))


def small_adapter(monkeypatch: pytest.MonkeyPatch, task_id: str = "crossearth/u2r", **options: str) -> MTPAdapter:
    """The adapter with a 4-block, 32-wide RVSA ViT at 128 px (the window and slide logic are the same)."""
    tiny = RVSAConfig(img_size=128, embed_dim=32, depth=4, num_heads=2, interval=3, out_indices=(0, 1, 2, 3))
    monkeypatch.setattr("rsdg_bench.baselines.mtp_adapter.rvsa_config", lambda variant, img_size: tiny)
    adapter = MTPAdapter(img_size="128", **options)
    adapter.setup(TaskCatalog().task(task_id), ["red", "green", "blue"])
    return adapter


def test_predict_slides_model_sized_windows_like_mmseg(monkeypatch: pytest.MonkeyPatch):
    adapter = small_adapter(monkeypatch, stride="96")
    model = adapter.module.eval()
    x = torch.randn(1, 3, 200, 150)
    with torch.no_grad():
        ours = adapter.predict(x)
        reference = mmseg_slide_inference(model, x, 7, crop=128, stride=96)
        window = torch.randn(1, 3, 128, 128)
        assert torch.equal(adapter.predict(window), model(window))
        small = torch.randn(1, 3, 80, 100)  # smaller than a window: zero-padded to 128, cropped back
        padded = model(F.pad(small, (0, 28, 0, 48)))[:, :, :80, :100]
        torch.testing.assert_close(adapter.predict(small), padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert MTPAdapter().stride == 384 and MTPAdapter(img_size="384").stride == 256


def mmengine_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"meta": {"mmengine_version": "0.8.4", "iter": 8000}, "state_dict": state,
                "message_hub": {"runtime_info": {"iter": 8000}}, "optimizer": {"state": {}, "param_groups": []},
                "param_schedulers": []}, path)
    return path


def test_loading_checks_classes_size_and_foreign_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    adapter = small_adapter(monkeypatch)
    shapes = {k: list(v.shape) for k, v in adapter.module.state_dict().items()}
    state = synthetic_state(shapes, seed=0)
    state = {k: (adapter.module.state_dict()[k] if k.endswith("relative_position_index") else v)
             for k, v in state.items()}
    adapter.load(mmengine_checkpoint(tmp_path / "ok.pth", state))
    assert fit_report(adapter.module, state).clean
    assert torch.equal(adapter.module.state_dict()["backbone.pos_embed"], state["backbone.pos_embed"])

    with pytest.raises(AdapterError, match="predicts 7 classes; the task has 2"):
        small_adapter(monkeypatch, "crossearth/a2s").load(tmp_path / "ok.pth")
    with pytest.raises(AdapterError, match="neither backbone"):
        adapter.load(mmengine_checkpoint(tmp_path / "aux.pth", {**state, "auxiliary_head.conv_seg.weight": torch.ones(1)}))
    bigger = {**state, "backbone.pos_embed": torch.zeros(1, 24 * 24, 32)}
    with pytest.raises(AdapterError, match="is a 384-px MTP model"):
        adapter.load(mmengine_checkpoint(tmp_path / "big.pth", bigger))
    with pytest.raises(AdapterError, match="unknown mtp options"):
        MTPAdapter(window="512")
    with pytest.raises(AdapterError, match="variant"):
        rvsa_config("huge", 512)


def test_conformance_passes(monkeypatch: pytest.MonkeyPatch):
    adapter = small_adapter(monkeypatch)
    results = run_conformance(adapter, TaskCatalog().task("crossearth/u2r"), ["red", "green", "blue"])
    assert all(r.passed for r in results), [(r.name, r.detail) for r in results if not r.passed]


@pytest.mark.slow
def test_vit_b_checkpoint_runs_through_run(ce_data: Path, tmp_path: Path):
    """A synthetic full-size ViT-B + RVSA + UPerHead checkpoint (6 classes, 512 px), mmengine container, through
    `run` on a 512² Vaihingen tile: one window of the model's own size (a ViT-B pass with UPerHead's 768-channel
    convolutions costs seconds on one core; the window grid of larger images is tested in
    test_predict_slides_model_sized_windows_like_mmseg)."""
    with torch.device("meta"):
        shapes = {k: list(v.shape) for k, v in MTPSegmentor(rvsa_config("base", 512), 6).state_dict().items()}
    state = synthetic_state(shapes, seed=3)
    index = _relative_position_index(WINDOW)  # a buffer every checkpoint carries as its model computed it
    state.update({k: index for k in state if k.endswith("relative_position_index")})
    checkpoint = mmengine_checkpoint(tmp_path / "rvsa-b-upernet-512-mae-mtp-potsdam.pth", state)
    code = main(["run", "--model", "mtp", "--model-arg", "variant=base", "--model-arg", "stride=512",
                 "--task", "crossearth/pi2v", "--limit", "1",
                 "--checkpoint", str(checkpoint), "--data-root", str(ce_data), "--results", str(tmp_path / "results"),
                 "--device", "cpu", "--quiet"])
    assert code == 0
    (_, record), = ResultStore(tmp_path / "results").load_all()
    options = record.model["options"]
    assert record.evaluated.num_samples == 1 and (options["variant"], options["stride"]) == ("base", "512")
    assert sum(map(sum, next(iter(record.confusion_matrices.values())))) > 0
