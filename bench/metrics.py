"""Benchmark: rsdg-bench's metric engine vs torchmetrics' MulticlassJaccardIndex, in one run, same inputs.

    python bench/metrics.py [--maps 32] [--classes 6] [--repeats 3]

Both consume the same stack of 512×512 label/prediction maps, one map per update, and must agree on
mIoU. Reported: throughput of each (best of --repeats) and the ratio. Settings: torchmetrics' defaults
(validate_args=True, no ignore index, so the maps carry no ignore pixels) on uint8 maps (as the harness
stores labels) and on int64 maps (argmax output and long targets, as torchmetrics is usually fed), and
`ignore_index=255` on uint8 maps with 10 % ignore pixels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from rsdg_bench.scoring.metrics import confusion_matrix, scores_from_confusion


def make_maps(count: int, k: int, ignore_fraction: float, dtype: torch.dtype, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, k, size=(count, 512, 512), dtype=np.uint8)
    pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, k, size=label.shape)).astype(np.uint8)
    if ignore_fraction:
        label[rng.random(label.shape) < ignore_fraction] = 255
    return torch.from_numpy(label).to(dtype), torch.from_numpy(pred).to(dtype)


def time_ours(labels: torch.Tensor, preds: torch.Tensor, k: int) -> tuple[float, float]:
    start = time.perf_counter()
    matrix = np.zeros((k, k), dtype=np.int64)
    for label, pred in zip(labels, preds, strict=True):
        matrix += confusion_matrix(label, pred, k)
    miou = scores_from_confusion(matrix).miou
    return time.perf_counter() - start, miou


def time_torchmetrics(labels: torch.Tensor, preds: torch.Tensor, metric: MulticlassJaccardIndex) -> tuple[float, float]:
    metric.reset()
    start = time.perf_counter()
    for label, pred in zip(labels, preds, strict=True):
        metric.update(pred, label)
    miou = metric.compute().item()
    return time.perf_counter() - start, miou


def best_of(repeats: int, fn, *args) -> tuple[float, float]:
    runs = [fn(*args) for _ in range(repeats)]
    return min(r[0] for r in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=32)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    k = args.classes
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.maps} maps of 512×512, K={k}")
    settings = [
        ("defaults, uint8 maps", 0.0, torch.uint8, MulticlassJaccardIndex(num_classes=k)),
        ("defaults, int64 maps", 0.0, torch.int64, MulticlassJaccardIndex(num_classes=k)),
        ("ignore_index=255, uint8 maps", 0.1, torch.uint8, MulticlassJaccardIndex(num_classes=k, ignore_index=255)),
    ]
    for title, ignore_fraction, dtype, metric in settings:
        labels, preds = make_maps(args.maps, k, ignore_fraction, dtype)
        pixels = labels.numel()
        ours_s, ours_miou = best_of(args.repeats, time_ours, labels, preds, k)
        ref_s, ref_miou = best_of(args.repeats, time_torchmetrics, labels, preds, metric)
        assert abs(ours_miou - ref_miou) < 1e-6, (ours_miou, ref_miou)
        print(f"{title:30s} rsdg-bench {pixels / ours_s / 1e6:8.1f} Mpix/s   torchmetrics "
              f"{pixels / ref_s / 1e6:7.1f} Mpix/s   ratio {ref_s / ours_s:6.1f}x   mIoU {ours_miou:.6f} (equal)")


if __name__ == "__main__":
    main()
