"""Sliding-window and whole-image inference against a literal re-statement of mmseg's slide_inference."""

from __future__ import annotations

import pytest
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.references import mmseg_slide_inference
from rsdg_bench.datasets.windows import window_grid
from rsdg_bench.evaluator.inference import checked_forward, predict_logits
from rsdg_bench.protocol.task_schema import InferenceSpec

K = 4


class ContextModel(torch.nn.Module):
    """Logits depend on context (a 5×5 conv plus the crop's own mean), so window placement matters."""

    def __init__(self, bands: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(bands, K, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x.mean(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize("h,w,crop,stride", [(1500, 1500, 1024, 683), (97, 131, 64, 43), (50, 70, 64, 43),
                                              (64, 64, 64, 64), (130, 65, 64, 21)])
def test_window_grid_matches_mmseg(h, w, crop, stride):
    expected = []
    for h_idx in range(max(h - crop + stride - 1, 0) // stride + 1):
        for w_idx in range(max(w - crop + stride - 1, 0) // stride + 1):
            y2, x2 = min(h_idx * stride + crop, h), min(w_idx * stride + crop, w)
            expected.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    assert window_grid(h, w, crop, stride) == expected


def test_1500_with_crop_1024_stride_683_is_a_2x2_grid_clamped_to_the_edge():
    assert window_grid(1500, 1500, 1024, 683) == [(0, 1024, 0, 1024), (0, 1024, 476, 1500),
                                                  (476, 1500, 0, 1024), (476, 1500, 476, 1500)]


@pytest.mark.parametrize("h,w,crop,stride,window_batch", [(97, 131, 64, 43, 1), (97, 131, 64, 43, 5),
                                                          (50, 70, 64, 43, 8), (130, 65, 64, 21, 3)])
def test_slide_equals_mmseg_reference(h, w, crop, stride, window_batch):
    model = ContextModel()
    image = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h + w))
    forward = checked_forward(model, K, 1, "test")
    spec = InferenceSpec(mode="slide", crop=crop, stride=stride)
    with torch.no_grad():
        ours = predict_logits(forward, image, spec, K, window_batch)
        reference = mmseg_slide_inference(model, image, K, crop, stride)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_large_odd_image_matches_reference():
    model = ContextModel(bands=1)
    image = torch.randn(1, 1, 1500, 1500, generator=torch.Generator().manual_seed(1))
    spec = InferenceSpec(mode="slide", crop=1024, stride=683)
    with torch.no_grad():
        ours = predict_logits(checked_forward(model, K, 1, "test"), image, spec, K, window_batch=2)
        torch.testing.assert_close(ours, mmseg_slide_inference(model, image, K, 1024, 683), rtol=1e-5, atol=1e-5)


def test_slide_on_an_image_smaller_than_the_crop_is_one_whole_pass():
    model = ContextModel()
    image = torch.randn(1, 3, 40, 30)
    with torch.no_grad():
        slid = predict_logits(checked_forward(model, K, 1, "t"), image,
                              InferenceSpec(mode="slide", crop=64, stride=32), K)
        whole = predict_logits(checked_forward(model, K, 1, "t"), image, InferenceSpec(mode="whole"), K)
    torch.testing.assert_close(slid, whole)


def test_padding_to_the_size_divisor_is_cropped_back_and_pads_with_zeros():
    seen = []

    def predict(x):
        seen.append(x.shape)
        return x[:, :1].repeat(1, K, 1, 1)

    image = torch.ones(1, 3, 37, 50)
    out = checked_forward(predict, K, 32, "t")(image)
    assert seen == [torch.Size([1, 3, 64, 64])]
    assert out.shape == (1, K, 37, 50) and torch.all(out == 1)


def test_flip_tta_averages_probabilities_of_the_flipped_passes():
    model = ContextModel()
    image = torch.randn(1, 3, 32, 48)
    forward = checked_forward(model, K, 1, "t")
    with torch.no_grad():
        ours = predict_logits(forward, image, InferenceSpec(tta=("hflip",)), K)
        expected = (model(image).softmax(1) + model(image.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(ours, expected)


def test_wrong_output_shape_is_an_adapter_error():
    forward = checked_forward(lambda x: torch.zeros(x.shape[0], K + 1, *x.shape[-2:]), K, 1, "bad")
    with pytest.raises(AdapterError, match="expected"):
        forward(torch.zeros(1, 3, 8, 8))


def test_nan_logits_are_an_adapter_error():
    forward = checked_forward(lambda x: torch.full((x.shape[0], K, *x.shape[-2:]), float("nan")), K, 1, "bad")
    with pytest.raises(AdapterError, match="NaN"):
        forward(torch.zeros(1, 3, 8, 8))


def test_slide_spec_requires_crop_and_stride_no_larger_than_crop():
    with pytest.raises(ValueError):
        InferenceSpec(mode="slide", crop=64)
    with pytest.raises(ValueError):
        InferenceSpec(mode="slide", crop=64, stride=65)


@pytest.mark.parametrize(("h", "w", "long_side", "expected"), [
    (3000, 4000, 512, (384, 512)),    # RescueNet-sized UAV image under CrossEarth's 512 test Resize
    (512, 512, 512, (512, 512)),      # ISPRS windows: unchanged
    (700, 1024, 1024, (700, 1024)),   # long side already S: unchanged
    (900, 600, 1024, (1024, 683)),    # upscaled too (mmcv's keep_ratio rescale); 600·1024/900 = 682.67 → 683
    (335, 1000, 512, (172, 512)),     # 335·0.512 = 171.52 → 172 (mmcv rounds, not floors)
])
def test_keep_ratio_size_is_mmcv_rescale(h, w, long_side, expected):
    from rsdg_bench.evaluator.inference import keep_ratio_size

    assert keep_ratio_size(h, w, long_side) == expected


def test_resize_runs_the_model_at_the_scaled_size_and_scores_at_the_input_size():
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return x[:, :2] * 1.0

    x = torch.rand(1, 3, 30, 40)
    spec = InferenceSpec(mode="whole", resize_long_side=16)
    scores = predict_logits(forward, x, spec, num_classes=2)
    assert seen == [(12, 16)] and scores.shape == (1, 2, 30, 40)
    down = torch.nn.functional.interpolate(x[:, :2], size=(12, 16), mode="bilinear", align_corners=False)
    up = torch.nn.functional.interpolate(down, size=(30, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores, up)


def test_resize_with_slide_windows_the_scaled_image():
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    predict_logits(forward, torch.rand(1, 3, 300, 400), InferenceSpec(mode="slide", resize_long_side=200, crop=128,
                                                                      stride=85), num_classes=3)
    # 150×200 after the resize; a 128/85 grid over it is 2 rows × 2 columns.
    assert seen == [(128, 128)] * 4


@pytest.mark.parametrize("dim", [1, 2])
def test_class_indices_are_argmax_exactly_ties_included(dim: int):
    """The predicted map comes from one compiled pass (`class_map`): it must be argmax's map, first maximal
    class on ties, or every confusion matrix would move."""
    from rsdg_bench.evaluator.inference import class_indices

    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (2, 5, 7, 33, 35), generator=generator).float()  # many ties
    assert torch.equal(class_indices(scores, dim, "t"), scores.argmax(dim=dim).to(torch.uint8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_scores_checked_in_the_class_pass_refuse_a_non_finite_logit(bad: float):
    """The segmentation kind leaves the NaN / Inf check of each forward pass to `class_indices`: a bad logit
    must still stop the run, whether the scores are plain logits or averaged over windows."""
    from rsdg_bench.evaluator.inference import class_indices

    def model(x: torch.Tensor) -> torch.Tensor:
        logits = torch.randn(x.shape[0], K, *x.shape[-2:])
        logits[0, 3, -1, -1] = bad
        return logits

    forward = checked_forward(model, K, 1, "t", finite=False)
    for spec in (InferenceSpec(mode="whole"), InferenceSpec(mode="slide", crop=48, stride=32)):
        scores = predict_logits(forward, torch.rand(1, 3, 64, 64), spec, K)
        with pytest.raises(AdapterError, match="NaN or Inf"):
            class_indices(scores, 1, "t")


def test_under_tta_a_minus_inf_logit_is_a_probability_of_zero():
    """With TTA the softmax turns a −Inf logit into a probability of 0 (finite), so the scores pass and the
    class map is the one a very negative finite logit gives; +Inf still becomes NaN and is refused."""
    from rsdg_bench.evaluator.inference import class_indices

    base = torch.randn(1, K, 32, 32, generator=torch.Generator().manual_seed(1))

    def with_logit(value: float):
        def model(x: torch.Tensor) -> torch.Tensor:
            logits = base.expand(x.shape[0], -1, -1, -1).clone()
            logits[:, 2, :5] = value
            return logits
        return checked_forward(model, K, 1, "t", finite=False)

    spec = InferenceSpec(mode="whole", tta=["hflip"])
    image = torch.rand(1, 3, 32, 32)
    minus_inf = class_indices(predict_logits(with_logit(float("-inf")), image, spec, K), 1, "t")
    very_negative = class_indices(predict_logits(with_logit(-1e30), image, spec, K), 1, "t")
    assert torch.equal(minus_inf, very_negative)
    with pytest.raises(AdapterError, match="NaN or Inf"):
        class_indices(predict_logits(with_logit(float("inf")), image, spec, K), 1, "t")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_logit_anywhere_is_refused(bad: float):
    from rsdg_bench.evaluator.inference import check_logits

    logits = torch.randn(1, 7, 64, 64)
    check_logits(logits, (1, 7, 64, 64), "t", (1, 3, 64, 64), "B×K×H×W")
    logits[0, 6, 63, 0] = bad
    with pytest.raises(AdapterError, match="NaN or Inf"):
        check_logits(logits, (1, 7, 64, 64), "t", (1, 3, 64, 64), "B×K×H×W")


def test_a_single_window_slide_is_the_plain_forward_and_several_windows_still_average():
    from rsdg_bench.evaluator.inference import _slide

    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x[:, :2] * 3.0

    x = torch.randn(1, 3, 64, 48)
    assert torch.equal(_slide(forward, x, 2, 64, 43, 1), x[:, :2] * 3.0) and calls == [(1, 3, 64, 48)]
    overlapping = _slide(forward, x, 2, 32, 16, 1)
    assert torch.allclose(overlapping, x[:, :2] * 3.0) and len(calls) > 2  # averaged windows of the same values
