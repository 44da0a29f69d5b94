"""CrossEarth's Earth-style injection and masked-image-modelling terms (`baselines/crossearth_earth_style.py`):
each term does what the paper's equations say (the mask generator's blocks and ratio, the style's channel means
and deviations, the Gaussian of Earth styles, the masked image's visual prompt), the adapter's options pick the
paper's settings, and a small model of the real structure trains with all terms and still evaluates without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.baselines import crossearth_adapter
from rsdg_bench.baselines.crossearth_adapter import CrossEarthAdapter
from rsdg_bench.baselines.crossearth_earth_style import (
    CrossEarthObjective,
    EarthStyle,
    MaskSpec,
    MimDecoder,
    block_mask,
    channel_style,
    earth_style_statistics,
    inject_style,
    paper_masks,
)
from rsdg_bench.baselines.mask2former_head import Mask2FormerConfig
from rsdg_bench.baselines.reins_vit import ReinsViTConfig
from rsdg_bench.models.adapters import IMAGENET_MEAN, IMAGENET_STD
from rsdg_bench.protocol.task_schema import TaskCatalog

CPU = torch.device("cpu")


def small_configs(num_classes: int, img_size: int) -> tuple[ReinsViTConfig, Mask2FormerConfig]:
    """The released structure at a small width (as tests/test_crossearth_adapter.py builds it)."""
    return (ReinsViTConfig(img_size=img_size, embed_dim=32, depth=4, num_heads=2, out_indices=(0, 1, 2, 3),
                           token_length=6, lora_dim=2, query_dims=32),
            Mask2FormerConfig(num_classes=num_classes, in_channels=(32,) * 4, feat_channels=32, out_channels=32,
                              encoder_layers=1, encoder_ffn=32, decoder_layers=3, decoder_ffn=32))


def style_file(tmp_path: Path, styles: torch.Tensor) -> Path:
    path = tmp_path / "earth_style.json"
    path.write_text(json.dumps(earth_style_statistics(styles)))
    return path


def test_the_mask_is_constant_per_block_and_keeps_one_minus_the_ratio():
    torch.manual_seed(0)
    mask = block_mask(40, 64, 64, MaskSpec(0.7, 16), CPU)
    assert mask.shape == (40, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    blocks = mask.unfold(-2, 16, 16).unfold(-2, 16, 16)  # 40 × 1 × 4 × 4 × 16 × 16
    assert torch.all(blocks.amin(dim=(-2, -1)) == blocks.amax(dim=(-2, -1)))  # one value per 16 × 16 block
    assert blocks[..., 0, 0].mean().item() == pytest.approx(0.3, abs=0.04)  # U > 0.7 keeps about 30 %
    # 70 rows: a 5-row grid (⌈70/16⌉) resized to 70 as MIC does, so bands of 14 rows
    tall = block_mask(8, 70, 16, MaskSpec(0.5, 16), CPU)[:, 0, :, 0]
    changes = {row for row in range(1, 70) if not torch.equal(tall[:, row], tall[:, row - 1])}
    assert changes and changes <= {14, 28, 42, 56}
    assert block_mask(2, 8, 8, MaskSpec(0.0, 4), CPU).min() == 1  # ratio 0: every block kept (U > 0)


def test_injection_sets_each_channels_mean_and_deviation():
    x = torch.rand(2, 3, 16, 16) * 4 + 1
    target = torch.tensor([[0.5, -1.0, 2.0, 0.3, 1.5, 0.7], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    styled = inject_style(x, target)
    torch.testing.assert_close(channel_style(styled), target, atol=1e-5, rtol=1e-5)
    # per channel an increasing affine map: the image's content (its ordering of pixels) stays
    assert torch.equal(styled.flatten(2).argsort(dim=-1), x.flatten(2).argsort(dim=-1))


def test_styles_are_drawn_from_the_earth_gaussian_with_its_covariance():
    mean = torch.tensor([100.0, 110.0, 90.0, 40.0, 35.0, 30.0], dtype=torch.float64)
    root = torch.tensor([[5.0, 0, 0, 0, 0, 0], [4.0, 3.0, 0, 0, 0, 0], [0, 0, 2.0, 0, 0, 0],
                         [0, 0, 1.0, 1.0, 0, 0], [0, 0, 0, 0, 1.5, 0], [0, 0, 0, 0, 0.5, 0.5]], dtype=torch.float64)
    style = EarthStyle(mean, root @ root.T)  # correlated: a diagonal-only draw would miss the off-diagonals
    torch.manual_seed(1)
    draws = style.sample(40_000, CPU).double()
    torch.testing.assert_close(draws.mean(dim=0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), root @ root.T, atol=0.6, rtol=0.03)


def test_statistics_round_trip_and_normalize_like_the_pixels(tmp_path: Path):
    """Injecting a raw-unit style into a raw image and then normalizing equals injecting the normalized style into
    the normalized image: the statistics follow the harness's normalization exactly."""
    styles = torch.rand(50, 6, dtype=torch.float64) * 40 + torch.tensor([100, 100, 100, 30, 30, 30])
    loaded = EarthStyle.from_file(style_file(tmp_path, styles))
    torch.testing.assert_close(loaded.mean, styles.mean(dim=0))
    torch.testing.assert_close(loaded.covariance, torch.cov(styles.T))
    pixel_mean, pixel_std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    normalized = loaded.normalized(IMAGENET_MEAN, IMAGENET_STD)
    raw = torch.rand(1, 3, 8, 8) * 255
    target = loaded.mean.float()[None]
    expected = (inject_style(raw, target) - pixel_mean) / pixel_std
    got = inject_style((raw - pixel_mean) / pixel_std, normalized.mean.float()[None])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [1.0, 2.0, 3.0], "covariance": [[1.0]]}))
    with pytest.raises(AdapterError, match="2C"):
        EarthStyle.from_file(tmp_path / "bad.json")


def test_the_styled_image_mixes_the_earth_style_with_its_own_where_the_mask_is_one():
    x = torch.rand(1, 3, 32, 32)
    fixed = torch.tensor([1.0, 2.0, -1.0, 0.5, 0.25, 2.0], dtype=torch.float64)
    style = EarthStyle(fixed, torch.zeros(6, 6, dtype=torch.float64))  # every draw is the mean
    everywhere = CrossEarthObjective(style=style, style_alpha=0.5, style_mask=MaskSpec(0.0, 8))
    expected = 0.5 * fixed.float() + 0.5 * channel_style(x)[0]
    torch.testing.assert_close(channel_style(everywhere.styled(x))[0], expected, atol=1e-5, rtol=1e-5)
    torch.manual_seed(3)
    partly = CrossEarthObjective(style=style, style_mask=MaskSpec(0.5, 8)).styled(x)
    same = (partly == x).all(dim=1)  # per pixel: untouched, or styled
    blocks = same.unfold(-2, 8, 8).unfold(-2, 8, 8)
    assert torch.all(blocks.all(dim=(-2, -1)) | ~blocks.any(dim=(-2, -1)))  # whole 8 × 8 blocks either way
    assert 0 < same.float().mean() < 1


def test_the_masked_image_holds_the_prompt_where_masked_and_the_decoder_restores_the_size():
    decoder = MimDecoder(embed_dim=8, stages=4, patch_size=16, image_size=32, channels=4)
    x = torch.rand(2, 3, 32, 32)
    keep = block_mask(2, 32, 32, MaskSpec(0.5, 16), CPU)
    with torch.no_grad():
        decoder.prompt.fill_(7.0)
        masked = decoder.masked(x, keep)
    assert torch.equal(masked, torch.where(keep.bool(), x, torch.full_like(x, 7.0)))
    maps = [torch.rand(2, 8, 2, 2) for _ in range(4)]
    assert decoder(maps).shape == (2, 3, 32, 32)


def test_the_options_take_the_papers_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(crossearth_adapter, "crossearth_configs", small_configs)
    catalog = TaskCatalog()
    adapter = CrossEarthAdapter()
    adapter.setup(catalog.task("crossearth/pi2v"), ["ir", "r", "g"])
    assert adapter.objective.mim_loss is None and adapter.objective.style is None  # off: the released training
    assert not any(k.startswith("mim.") for k in adapter.module.state_dict())
    paper = CrossEarthAdapter(mim="paper")
    paper.setup(catalog.task("crossearth/pi2v"), ["ir", "r", "g"])
    assert paper.objective.mim_loss == "mse" and paper.objective.style is None  # §5.1: MSE but on CASID
    assert (paper.objective.style_mask, paper.objective.mim_mask) == (MaskSpec(0.7, 64), MaskSpec(0.7, 64))
    casid = CrossEarthAdapter(mim="paper", style_mask="0.3/16", earth_style=str(style_file(tmp_path, torch.rand(9, 6))))
    casid.setup(catalog.task("crossearth/tem2sub"), ["r", "g", "b"])
    assert casid.objective.mim_loss == "l1" and casid.objective.style is not None and casid.objective.style_p == 0.1
    assert (casid.objective.style_mask, casid.objective.mim_mask) == (MaskSpec(0.3, 16), MaskSpec(0.7, 128))
    assert "earth_style_sha256" in casid.identity()
    assert paper_masks("potsdam_irrg_source_10pct") == paper_masks("potsdam_irrg_source")
    for bad in ({"mim": "yes"}, {"style_p": "2"}, {"mim_mask": "0.7"}, {"style_mask": "1.5/16"}):
        with pytest.raises(AdapterError):
            CrossEarthAdapter(**bad).setup(catalog.task("crossearth/pi2v"), ["ir", "r", "g"])


def test_a_small_model_trains_with_every_term_and_evaluates_without_them(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """Two optimizer steps with the style gate always open and the MIM flow: every term is finite and adds to the
    loss, the Reins, head, MIM decoder and prompt move, DINOv2 does not; the checkpoint then loads into the default
    adapter (the MIM parts are training-only) and predicts."""
    monkeypatch.setattr(crossearth_adapter, "crossearth_configs", small_configs)
    task = TaskCatalog().task("crossearth/pi2v")
    styles = torch.rand(20, 6) * 30 + torch.tensor([90.0, 90, 90, 40, 40, 40])
    adapter = CrossEarthAdapter(mim="paper", style_p="1", earth_style=str(style_file(tmp_path, styles)),
                                mim_mask="0.7/16", style_mask="0.1/16")
    torch.manual_seed(0)
    adapter.setup(task, ["ir", "r", "g"])
    module = adapter.module
    x, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 6, (1, 64, 64))
    torch.manual_seed(5)
    segmentation_only = module.training_loss(x, labels)
    torch.manual_seed(5)
    total = adapter.training_loss((x,), {"label": labels})
    assert torch.isfinite(total) and total.item() > segmentation_only.item()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    optimizer = torch.optim.AdamW(adapter.parameter_groups(0.05), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        loss = adapter.training_loss((x,), {"label": labels})
        loss.backward()
        optimizer.step()
    after = module.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert {"mim.prompt", "mim.linear.weight", "mim.stages.0.0.weight", "backbone.reins.learnable_tokens_a",
            "decode_head.cls_embed.weight"} <= moved
    assert not any(k.startswith("backbone.blocks.") for k in moved)
    checkpoint = tmp_path / "trained.pt"
    torch.save({"state_dict": after}, checkpoint)
    plain = CrossEarthAdapter()
    plain.setup(task, ["ir", "r", "g"])
    plain.load(checkpoint)
    with torch.no_grad():
        assert plain.predict(x).shape == (1, 6, 64, 64)


def test_the_mim_flow_sees_the_masked_image(monkeypatch: pytest.MonkeyPatch):
    """The backbone's second pass reads X with whole masked blocks replaced by the prompt (zeros at start)."""
    monkeypatch.setattr(crossearth_adapter, "crossearth_configs", small_configs)
    adapter = CrossEarthAdapter(mim="l1", mim_mask="0.5/16")
    adapter.setup(TaskCatalog().task("crossearth/pi2v"), ["ir", "r", "g"])
    module = adapter.module
    seen: list[torch.Tensor] = []
    stage_maps = module.backbone.stage_maps
    monkeypatch.setattr(module.backbone, "stage_maps", lambda image: seen.append(image) or stage_maps(image))
    x = torch.randn(1, 3, 64, 64) + 3  # no pixel is 0 by chance
    torch.manual_seed(2)
    module.training_loss(x, torch.randint(0, 6, (1, 64, 64)), objective=adapter.objective)
    first, masked = seen  # the segmentation pass, then the MIM pass
    assert torch.equal(first, x)
    kept = (masked == x).all(dim=1)[0].unfold(0, 16, 16).unfold(1, 16, 16)
    zeroed = (masked == 0).all(dim=1)[0].unfold(0, 16, 16).unfold(1, 16, 16)
    assert torch.all(kept.all(dim=(-2, -1)) | zeroed.all(dim=(-2, -1)))
    assert kept.all(dim=(-2, -1)).any() and zeroed.all(dim=(-2, -1)).any()
