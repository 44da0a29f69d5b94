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

from rsdg_bench.base.references import mmseg_slide_inference
from rsdg_bench.evaluator.inference import checked_forward, predict_logits
from rsdg_bench.protocol.task_schema import InferenceSpec


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
            reference = mmseg_slide_inference(model, image, k, args.crop, args.stride)
            ref_runs.append(time.perf_counter() - start)
    gap = (ours - reference).abs().max().item()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {args.size}², crop {args.crop}, "
          f"stride {args.stride}, window batch {args.window_batch}")
    print(f"rsdg-bench {min(ours_runs):.2f} s   mmseg-style loop {min(ref_runs):.2f} s   "
          f"ratio {min(ref_runs) / min(ours_runs):.2f}x   max |Δlogit| {gap:.2e}")


if __name__ == "__main__":
    main()
