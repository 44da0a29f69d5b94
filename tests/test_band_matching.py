"""Band matching from a task's bands to a pretrained encoder's: by name, then by colour; the policies for a band
the task lacks; and what each policy feeds the encoder."""

from __future__ import annotations

import pytest
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.baselines.encoder_adapter import EncoderAdapter
from rsdg_bench.models.band_matching import band_family, canonical_band, match_bands
from rsdg_bench.protocol.task_schema import TaskCatalog

S2 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8a", "B9", "B10", "B11", "B12")


def test_names_compare_without_case_or_zero_padding_and_colours_match_sentinel2_bands():
    assert canonical_band("B04") == canonical_band("b4") == "B4" and canonical_band("B8a") == "B8A"
    assert band_family("B04") == band_family("red") == band_family("R") == "red"
    assert band_family("B8") == band_family("nir") and band_family("B8A") != band_family("B8")
    assert band_family("VV") is None


def test_exact_names_win_over_colours_and_each_task_band_feeds_one_encoder_band():
    match = match_bands(("B04", "B03", "B02"), ["B2", "B3", "B4", "red"], "error", "x")
    assert match.task_bands == ("B4", "B3", "B2") and match.how == ("name", "name", "name")
    rgb = match_bands(("B4", "B3", "B2"), ["blue", "green", "red"], "error", "x")
    assert rgb.task_bands == ("red", "green", "blue") and rgb.how == ("family",) * 3
    twice = match_bands(("B8", "nir"), ["nir"], "zero_fill", "x")  # one NIR band cannot feed two encoder bands
    assert twice.task_bands == ("nir", None)


def test_a_missing_band_is_an_error_naming_it_unless_a_policy_says_otherwise():
    with pytest.raises(AdapterError, match=r"lacks \['B1', 'B5'") as info:
        match_bands(S2, ["B2", "B3", "B4", "B8", "B8A", "B9", "B10", "B11", "B12", "B6", "B7"], "error", "preset s")
    assert "band_policy=zero_fill" in info.value.fix
    zero = match_bands(S2, ["red", "green", "blue"], "zero_fill", "x")
    assert zero.fed == ("blue", "green", "red") and zero.how.count("zero_fill") == 10
    assert zero.record()["fed_by"]["B4"] == "red" and zero.record()["how"]["B1"] == "zero_fill"
    drop = match_bands(S2, ["red", "green", "blue"], "drop", "x")
    assert drop.kept == (1, 2, 3)
    with pytest.raises(AdapterError, match="none of"):
        match_bands(("VV", "VH"), ["red"], "zero_fill", "x")
    with pytest.raises(AdapterError, match="unknown band policy"):
        match_bands(S2, ["red"], "guess", "x")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def task():
    return TaskCatalog().task("noldo_s12/dw-s2")


def test_zero_fill_feeds_zeros_in_the_missing_bands_and_drop_slices_their_first_layer_weights(task):
    """With zero_fill the encoder sees its 13 bands with zeros in the 10 the RGB task lacks; with drop its first
    layer keeps exactly the weights of the 3 bands it is fed, so both give the same features for an RGB image."""
    torch.manual_seed(0)
    zero = EncoderAdapter(preset="ssl4eo-s2-resnet50-moco", protocol="linear_probe", weights="random",
                          band_policy="zero_fill")
    zero.setup(task, ["red", "green", "blue"])
    drop = EncoderAdapter(preset="ssl4eo-s2-resnet50-moco", protocol="linear_probe", weights="random", band_policy="drop")
    drop.setup(task, ["red", "green", "blue"])
    assert zero.input_contract().band_names == drop.input_contract().band_names == ("blue", "green", "red")
    assert zero.module.encoder.conv1.weight.shape[1] == 13 and drop.module.encoder.conv1.weight.shape[1] == 3
    assert torch.equal(drop.module.encoder.conv1.weight, zero.module.encoder.conv1.weight[:, [1, 2, 3]])
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(zero._with_filled_bands(x)[:, [1, 2, 3]], x)
    assert not zero._with_filled_bands(x)[:, [0, *range(4, 13)]].any()
    zero.eval()
    drop.eval()
    with torch.no_grad():
        torch.testing.assert_close(zero.module.encode(zero._with_filled_bands(x)), drop.module.encode(x))
    assert zero.identity()["bands"]["policy"] == "zero_fill" and drop.identity()["bands"]["how"]["B1"] == "drop"


def test_the_contract_normalizes_each_fed_band_with_the_weights_statistics(task):
    adapter = EncoderAdapter(preset="dinov2-vits14", protocol="linear_probe", weights="random")
    adapter.setup(task, ["B2", "B3", "B4", "B8"])  # RGB weights on Sentinel-2 data: B4, B3, B2 by colour
    contract = adapter.input_contract()
    assert contract.band_names == ("B4", "B3", "B2")
    assert contract.normalization.mean == pytest.approx((123.675, 116.28, 103.53))
    assert contract.size_divisor == 14
