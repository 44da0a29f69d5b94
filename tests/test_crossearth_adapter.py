"""CrossEarth adapter: parity with the upstream modules, the released key layout, and both checkpoint forms.

Fixtures and manifests (tests/fixtures/upstream, see its README) come from CrossEarth's own code with real
mmseg 1.2.2 / mmdet 3.3.0 / mmcv 2.1.0 on seeded random weights. The loader tests use a small model of the
same structure (the sizes are configuration); the end-to-end runs use the full DINOv2-L model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from upstream_fixtures import load_fixture, manifest, manifest_file, synthetic_state

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.baselines import crossearth_adapter
from rsdg_bench.baselines.crossearth_adapter import (
    BACKBONE_FILES,
    CrossEarthAdapter,
    CrossEarthSegmentor,
    crossearth_configs,
    is_backbone_key,
)
from rsdg_bench.baselines.mask2former_head import Mask2FormerConfig, ReinMask2FormerHead
from rsdg_bench.baselines.reins_vit import ReinsDinoBackbone, ReinsViTConfig
from rsdg_bench.cli import main
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore

MANIFESTS = {"crossearth_isprs6_512.json": (6, 512), "crossearth_casid5_1024.json": (5, 1024)}


def fixture_backbone() -> ReinsDinoBackbone:
    fixture = load_fixture("fx_crossearth_reins_vit.json")
    cfg = fixture["config"]["backbone_cfg"]
    rein = cfg["reins_config"]
    backbone = ReinsDinoBackbone(ReinsViTConfig(
        img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
        num_heads=cfg["num_heads"], init_values=cfg["init_values"], out_indices=tuple(cfg["out_indices"]),
        token_length=rein["token_length"], lora_dim=rein["lora_dim"], query_dims=rein["query_dims"]))
    backbone.load_state_dict(fixture["state_dict"], strict=True)
    return backbone.eval()


def test_reins_backbone_reproduces_the_upstream_fixture():
    fixture = load_fixture("fx_crossearth_reins_vit.json")
    backbone = fixture_backbone()
    with torch.no_grad():
        maps = backbone.stage_maps(fixture["input"])
        features, queries = backbone(fixture["input"])
    expected = fixture["output"]
    for ours, theirs in zip(maps, expected["features_prerescale"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert [tuple(f.shape[-2:]) for f in features] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    for ours, theirs in zip(features, expected["features"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(queries, expected["queries"], atol=1e-5, rtol=0)


def fixture_head() -> ReinMask2FormerHead:
    fixture = load_fixture("fx_crossearth_m2f_head.json")
    cfg = fixture["config"]["head_cfg"]
    encoder = cfg["pixel_decoder"]["encoder"]
    decoder = cfg["transformer_decoder"]
    head = ReinMask2FormerHead(Mask2FormerConfig(
        num_classes=cfg["num_classes"], in_channels=tuple(cfg["in_channels"]), feat_channels=cfg["feat_channels"],
        out_channels=cfg["out_channels"], num_levels=cfg["num_transformer_feat_level"],
        encoder_layers=encoder["num_layers"], encoder_heads=encoder["layer_cfg"]["self_attn_cfg"]["num_heads"],
        encoder_points=encoder["layer_cfg"]["self_attn_cfg"]["num_points"],
        encoder_ffn=encoder["layer_cfg"]["ffn_cfg"]["feedforward_channels"], decoder_layers=decoder["num_layers"],
        decoder_heads=decoder["layer_cfg"]["cross_attn_cfg"]["num_heads"],
        decoder_ffn=decoder["layer_cfg"]["ffn_cfg"]["feedforward_channels"]))
    head.load_state_dict(fixture["state_dict"], strict=True)
    return head.eval()


def test_mask2former_head_reproduces_the_upstream_fixture():
    fixture = load_fixture("fx_crossearth_m2f_head.json")
    head = fixture_head()
    feats, queries = fixture["input"]["feats"], fixture["input"]["queries"]
    with torch.no_grad():
        cls_scores, mask_preds = head(feats, queries)
        scores = head.predict(feats, queries, (128, 128))
    expected = fixture["output"]
    assert len(cls_scores) == len(expected["cls_scores"]) == 3  # before the first layer and after each
    for ours, theirs in zip(cls_scores, expected["cls_scores"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    for ours, theirs in zip(mask_preds, expected["mask_preds"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(scores, expected["seg_logits"], atol=1e-4, rtol=0)


def test_the_two_fixtures_chain_like_the_segmentor():
    """The head fixture's input is the backbone fixture's output: our backbone → head path is CrossEarth's."""
    backbone_fixture = load_fixture("fx_crossearth_reins_vit.json")
    head_fixture = load_fixture("fx_crossearth_m2f_head.json")
    with torch.no_grad():
        features, queries = fixture_backbone()(backbone_fixture["input"])
        scores = fixture_head().predict(features, queries, tuple(backbone_fixture["input"].shape[-2:]))
    torch.testing.assert_close(scores, head_fixture["output"]["seg_logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_full_size_model_has_the_released_keys_and_shapes(name: str):
    num_classes, img_size = MANIFESTS[name]
    with torch.device("meta"):
        model = CrossEarthSegmentor(*crossearth_configs(num_classes, img_size))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest(name)
    facts = manifest_file(name)
    assert sorted(k for k in ours if not is_backbone_key(k)) == sorted(facts["keys_saved_by_checkpoint_hook"])
    assert sorted(k for k in ours if is_backbone_key(k)) == sorted(facts["keys_frozen_backbone"])


# ----------------------------------------------------------------------------- loading (small model)

def small_configs(num_classes: int, img_size: int) -> tuple[ReinsViTConfig, Mask2FormerConfig]:
    return (ReinsViTConfig(img_size=img_size, embed_dim=32, depth=4, num_heads=2, out_indices=(0, 1, 2, 3),
                           token_length=6, lora_dim=2, query_dims=32),
            Mask2FormerConfig(num_classes=num_classes, in_channels=(32,) * 4, feat_channels=32, out_channels=32,
                              encoder_layers=1, encoder_ffn=32, decoder_layers=3, decoder_ffn=32))


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(crossearth_adapter, "crossearth_configs", small_configs)


def mmengine_file(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A checkpoint as mmengine's Runner saves it."""
    torch.save({"meta": {"mmengine_version": "0.10.7", "epoch": 0, "iter": 30000},
                "state_dict": state, "message_hub": {"log_scalars": {}, "runtime_info": {"iter": 30000}}}, path)
    return path


def adapter_for(task_id: str, **options: str) -> CrossEarthAdapter:
    adapter = CrossEarthAdapter(**options)
    adapter.setup(TaskCatalog().task(task_id), ["ir", "red", "green"])
    return adapter


def small_weights(num_classes: int, img_size: int, seed: int) -> tuple[dict, dict]:
    """(segmentor keys without the frozen backbone, the backbone as the converted DINOv2 file holds it)."""
    with torch.device("meta"):
        shapes = {k: list(v.shape) for k, v in CrossEarthSegmentor(*small_configs(num_classes, img_size))
                  .state_dict().items()}
    state = synthetic_state(shapes, seed)
    partial = {k: v for k, v in state.items() if not is_backbone_key(k)}
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if is_backbone_key(k)}
    return partial, backbone


def test_partial_checkpoint_takes_the_backbone_file_next_to_it_or_given(small, tmp_path: Path):
    partial, backbone = small_weights(6, 512, seed=0)
    checkpoint = mmengine_file(tmp_path / "Potsdam(i)-source.pth", partial)
    adapter = adapter_for("crossearth/pi2v")
    with pytest.raises(AdapterError, match=r"dinov2_converted\.pth.*not found") as error:
        adapter.load(checkpoint)
    assert "--backbone-checkpoint" in str(error.value)

    torch.save(backbone, tmp_path / BACKBONE_FILES[512])
    adapter.load(checkpoint)
    loaded = adapter.module.state_dict()
    assert torch.equal(loaded["backbone.blocks.0.attn.qkv.weight"], backbone["blocks.0.attn.qkv.weight"])
    assert torch.equal(loaded["decode_head.cls_embed.weight"], partial["decode_head.cls_embed.weight"])
    assert "backbone_sha256" in adapter.identity()

    elsewhere = tmp_path / "weights"
    elsewhere.mkdir()
    moved = (tmp_path / BACKBONE_FILES[512]).rename(elsewhere / BACKBONE_FILES[512])
    for given in (moved, elsewhere):  # a file, or a folder holding the expected name
        other = adapter_for("crossearth/pi2v")
        other.use_backbone_checkpoint(given)
        other.load(checkpoint)
        assert torch.equal(other.module.state_dict()["backbone.pos_embed"], backbone["pos_embed"])


def test_full_checkpoint_needs_no_backbone_file_and_mask_token_may_be_absent(small, tmp_path: Path):
    partial, backbone = small_weights(6, 512, seed=1)
    full = {**{f"backbone.{k}": v for k, v in backbone.items()}, **partial}
    adapter = adapter_for("crossearth/pi2v")
    adapter.load(mmengine_file(tmp_path / "full.pth", full))
    assert "backbone_sha256" not in adapter.identity()
    del backbone["mask_token"]  # unused at inference; some conversions leave it out
    torch.save(backbone, tmp_path / BACKBONE_FILES[512])
    adapter_for("crossearth/pi2v").load(mmengine_file(tmp_path / "partial.pth", partial))


def test_loader_names_what_is_wrong(small, tmp_path: Path):
    partial, backbone = small_weights(6, 512, seed=2)
    adapter = adapter_for("crossearth/pi2res")  # 5 classes: a 6-class ISPRS model does not fit
    with pytest.raises(AdapterError, match="predicts 6 classes; the task has 5"):
        adapter.load(mmengine_file(tmp_path / "six.pth", partial))

    with pytest.raises(AdapterError, match="none of backbone.*, decode_head.* and mim"):
        adapter_for("crossearth/pi2v").load(mmengine_file(tmp_path / "foreign.pth", {**partial, "head.x": torch.ones(1)}))

    original = dict(backbone)
    original["patch_embed.proj.weight"] = torch.zeros(32, 3, 14, 14)  # the unconverted DINOv2 release
    torch.save(original, tmp_path / BACKBONE_FILES[512])
    with pytest.raises(AdapterError, match="14×14 patch embedding"):
        adapter_for("crossearth/pi2v").load(mmengine_file(tmp_path / "partial.pth", partial))

    big_partial, big_backbone = small_weights(5, 1024, seed=3)
    torch.save(big_backbone, tmp_path / BACKBONE_FILES[512])  # a 1024 backbone where the 512 one belongs
    with pytest.raises(AdapterError, match="needs 1024"):
        adapter_for("crossearth/pi2v").load(mmengine_file(tmp_path / "partial.pth", partial))

    full = {**{f"backbone.{k}": v for k, v in big_backbone.items()}, **big_partial}
    with pytest.raises(AdapterError, match="is a 1024-px CrossEarth model"):
        adapter_for("crossearth/pi2res").load(mmengine_file(tmp_path / "full1024.pth", full))
    adapter_for("crossearth/pi2res", img_size="1024").load(tmp_path / "full1024.pth")


def test_image_size_follows_the_task_and_released_names_come_first():
    catalog = TaskCatalog()
    casid = CrossEarthAdapter()
    with torch.device("meta"):
        casid.setup(catalog.task("crossearth/sub2tem"), ["r", "g", "b"])
    assert casid.img_size == 1024
    assert casid.checkpoint_names(catalog.task("crossearth/sub2tem")) == ["casid-sub-source.pth", "casid_sub_source.pt"]
    assert CrossEarthAdapter().checkpoint_names(catalog.task("crossearth/u2r"))[0] == "loveda_urban_source.pt"
    with pytest.raises(AdapterError, match="3 bands"):
        CrossEarthAdapter().setup(catalog.task("crossearth/pi2v"), ["a", "b", "c", "d"])
    with pytest.raises(AdapterError, match="unknown crossearth options"):
        CrossEarthAdapter(size="big")


def test_position_embedding_is_resized_like_dinov2_for_other_grids():
    backbone = fixture_backbone()  # trained on 8×8 tokens
    grid = backbone.pos_embed[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, scale_factor=(6.1 / 8, 10.1 / 8), mode="bicubic")
    resized = backbone.position_embedding(6, 10)
    assert resized.shape == (1, 1 + 60, backbone.pos_embed.shape[-1])
    torch.testing.assert_close(resized[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 60, -1))
    assert torch.equal(resized[:, :1], backbone.pos_embed[:, :1])
    assert backbone.position_embedding(8, 8) is backbone.pos_embed
    with torch.no_grad():
        features, _ = backbone(torch.randn(1, 3, 96, 160))
    assert [tuple(f.shape[-2:]) for f in features] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    with pytest.raises(AdapterError, match="multiples of 16"):
        backbone(torch.randn(1, 3, 100, 128))


# ----------------------------------------------------------------------------- end to end (full size)

@pytest.fixture(scope="module")
def released_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic full-size 6-class 512-px checkpoint in both forms, under the released file name."""
    root = tmp_path_factory.mktemp("crossearth_weights")
    state = synthetic_state(manifest("crossearth_isprs6_512.json"), seed=7)
    (root / "full").mkdir()
    (root / "partial").mkdir()
    (root / "dinov2").mkdir()
    mmengine_file(root / "full" / "Potsdam(i)-source.pth", state)
    mmengine_file(root / "partial" / "Potsdam(i)-source.pth", {k: v for k, v in state.items() if not is_backbone_key(k)})
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if is_backbone_key(k)},
               root / "dinov2" / BACKBONE_FILES[512])
    return {"full": root / "full", "partial": root / "partial", "backbone": root / "dinov2" / BACKBONE_FILES[512],
            "state": state}


@pytest.mark.slow
def test_released_checkpoints_run_pi2v_in_both_forms(ce_data: Path, released_weights: dict[str, Path], tmp_path: Path):
    """The full form (one file) runs through `run` under its released name; the partial form (the checkpoint
    without its frozen backbone, plus the converted DINOv2 file) loads, along the path `run` takes, to the very
    same tensors, so it counts the same (one full-size forward pass is enough to show both)."""
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.protocol.task_data import TaskData
    from rsdg_bench.run.runner import load_for_task, model_block

    assert main(["run", "--model", "crossearth", "--task", "crossearth/pi2v", "--limit", "1", "--data-root",
                 str(ce_data), "--device", "cpu", "--quiet", "--checkpoints", str(released_weights["full"]),
                 "--results", str(tmp_path / "full")]) == 0
    (_, full), = ResultStore(tmp_path / "full").load_all()
    assert full.evaluated.num_samples == 1 and full.model["checkpoint"]["path"].endswith("Potsdam(i)-source.pth")
    assert "backbone_sha256" not in full.model
    assert sum(map(sum, next(iter(full.confusion_matrices.values())))) > 0

    task = TaskCatalog().task("crossearth/pi2v")
    partial = ModelSpec("crossearth", checkpoint_dir=released_weights["partial"],
                        backbone_checkpoint=released_weights["backbone"])
    adapter, weights = load_for_task(partial, task, TaskData(ce_data, task, "evaluate"), tmp_path)
    loaded = adapter.module.state_dict()
    assert loaded.keys() == released_weights["state"].keys()
    assert all(torch.equal(loaded[key], value) for key, value in released_weights["state"].items())
    block = model_block(adapter, weights, "partial")
    assert block["checkpoint"]["path"].endswith("Potsdam(i)-source.pth") and "backbone_sha256" in block
    assert {k: v for k, v in block.items() if k not in ("backbone_sha256", "checkpoint", "display_name")} == \
        {k: v for k, v in full.model.items() if k not in ("checkpoint", "display_name")}  # the same model otherwise
