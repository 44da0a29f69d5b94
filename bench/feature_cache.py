"""Benchmark of the frozen protocols' feature cache: one linear-probe training with the encoder's features cached
against the same training recomputing them, in one run, on the same data and seed.

    python bench/feature_cache.py [--preset ssl4eo-s2-vits16-dino] [--iterations 60] [--val-interval 10] [--threads 2]

The NoLDO-S12 fake is prepared by the real preparer (Sentinel-2 tiles of 30 and 32 pixels) and a task of its
training tiles is written with a 32-pixel crop, batch 8 and a selection split (the training tiles of the test
domain), so that the two places a frozen encoder sees the same input again are both measured: a tile drawn again
(the crop covers it, four flip states) and the selection split scored at every `--val-interval`. Weights are
random (`weights=random`; the cost of a forward pass does not depend on the values). Printed: each training's
wall time inside this process (`train_adapter`, imports and data preparation excluded), the cached one's hits and
misses, the ratio, and the largest difference between the two checkpoints' weights: a cached feature is the
uncached one up to the rounding of the batch it was computed in (a batch mixing cached and new tiles computes the
new ones as a smaller batch, whose matrix products may round differently in the last bits).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from rsdg_bench.prep import get_preparer


def _task_file(folder: Path) -> None:
    bands = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    folder.mkdir()
    (folder / "probe.yaml").write_text(yaml.safe_dump({
        "id": "bench/probe", "name": "probe", "version": 1, "suite": "bench", "kind": "segmentation", "gap": "none",
        "classes": "dynamicworld9", "inference": {"mode": "whole"}, "checkpoint_key": "probe",
        "metrics": {"primary": "miou", "report": ["miou"]}, "inputs": {"bands": bands},
        "source": {"dataset": "noldo_s12", "domain": "dw_s2", "split": "train"},
        "select": {"dataset": "noldo_s12", "domain": "dw_s2", "split": "test"},
        "targets": [{"dataset": "noldo_s12", "domain": "osm_s2", "split": "test", "label_map": "osm13_to_dynamicworld9"}],
        "training": {"iterations": 100, "batch_size": 8, "lr": 1e-3, "crop": 32}}))


def _train(preset: str, cache_mib: int, data: Path, out: Path, iterations: int, val_interval: int) -> tuple[float, object]:
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

    task = TaskCatalog().task("bench/probe")
    model = ModelSpec("encoder", {"preset": preset, "protocol": "linear_probe", "weights": "random",
                                  "feature_cache_mib": str(cache_mib)})
    adapter = build_trainable(model, task, data)
    start = time.perf_counter()
    train_adapter(adapter, task, data, out, overrides=TrainOverrides(iterations=iterations, val_interval=val_interval),
                  progress=False)
    return time.perf_counter() - start, getattr(adapter, "feature_caches", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ssl4eo-s2-vits16-dino")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--val-interval", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        preparer = get_preparer("noldo_s12")
        data = root / "data"
        preparer.prepare(preparer.make_fake(root / "raw"), data, progress=False)
        _task_file(root / "tasks")
        os.environ["RSDG_TASK_PATH"] = str(root / "tasks")
        plain, _ = _train(args.preset, 0, data, root / "plain.pt", args.iterations, args.val_interval)
        cached, cache = _train(args.preset, 2048, data, root / "cached.pt", args.iterations, args.val_interval)
        plain_state, cached_state = (torch.load(root / f"{name}.pt", weights_only=True)["state_dict"]
                                     for name in ("plain", "cached"))
        gap = max((plain_state[k].double() - cached_state[k].double()).abs().max().item()
                  for k in plain_state if plain_state[k].is_floating_point())
    print(f"preset {args.preset}, linear_probe, {args.iterations} iterations of batch 8, selection every "
          f"{args.val_interval}, {args.threads} threads")
    print(f"recomputing: {plain:.1f} s   cached: {cached:.1f} s   speed-up {plain / cached:.2f}×")
    if cache is not None:
        for name, part in (("training draws", cache[True]), ("selection split", cache[False])):
            print(f"cache of the {name}: {part.hits} hits, {part.misses} misses, "
                  f"{part.size_bytes / 2**20:.1f} MiB")
    print(f"largest difference between the two checkpoints' weights: {gap:.2e}")


if __name__ == "__main__":
    main()
