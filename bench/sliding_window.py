"""Benchmark: batched sliding-window inference vs mmseg's one-window-at-a-time loop, in one run.

    python bench/sliding_window.py [--size 1024] [--crop 512] [--stride 341] [--window-batch 4]

Same model (a randomly initialised smp U-Net, ResNet-18), same image; the reference is mmseg's
`slide_inference` restated step by step. Reports both times, the ratio, and the largest logit difference
(must be float rounding only).
"""

from __future__ import annotations

import argparse
import time

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from rsdg_bench.inference import checked_forward, predict_logits
from rsdg_bench.task_schema import InferenceSpec


def mmseg_slide(model: torch.nn.Module, img: torch.Tensor, k: int, crop: int, stride: int) -> torch.Tensor:
    _, _, h_img, w_img = img.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds = img.new_zeros((img.shape[0], k, h_img, w_img))
    count = img.new_zeros((img.shape[0], 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            logit = model(img[:, :, y1:y2, x1:x2])
            preds += F.pad(logit, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--stride", type=int, default=341)
    parser.add_argument("--window-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    k = 6
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=k).eval()
    image = torch.randn(1, 3, args.size, args.size)
    spec = InferenceSpec(mode="slide", crop=args.crop, stride=args.stride)
    forward = checked_forward(model, k, 32, "bench")
    with torch.inference_mode():
        ours_runs, ref_runs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = predict_logits(forward, image, spec, k, args.window_batch)
            ours_runs.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference = mmseg_slide(model, image, k, args.crop, args.stride)
            ref_runs.append(time.perf_counter() - start)
    gap = (ours - reference).abs().max().item()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {args.size}², crop {args.crop}, "
          f"stride {args.stride}, window batch {args.window_batch}")
    print(f"rsdg-bench {min(ours_runs):.2f} s   mmseg-style loop {min(ref_runs):.2f} s   "
          f"ratio {min(ref_runs) / min(ours_runs):.2f}x   max |Δlogit| {gap:.2e}")


if __name__ == "__main__":
    main()
