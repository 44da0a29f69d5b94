"""What several commands share: argument types, the data and results folders, and the option groups every
command of a kind declares once (`common`, `model`, `evaluation`), so their flags cannot drift apart.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.base.paths import default_data_root, default_results_root

if TYPE_CHECKING:
    import torch

    from rsdg_bench.models.model_spec import ModelSpec

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def model_args(pairs: list[str]) -> dict[str, str]:
    """`--model-arg KEY=VALUE` pairs as the adapter's options."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RsdgError(f"--model-arg {pair!r} is not key=value", "write e.g. --model-arg encoder=resnet18")
        options[key.strip()] = value.strip()
    return options


def positive_int(text: str) -> int:
    """argparse type: an integer above 0 (a limit or a count)."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of 0 or more (a count where 0 means none)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def read_threads_arg(text: str) -> int | Literal["auto"]:
    """argparse type of `--read-threads`: `auto` (measured on each split's first images) or a count above 0."""
    return "auto" if text == "auto" else positive_int(text)


def seed_list(text: str) -> list[int]:
    """argparse type for `--seeds`: a count N (the seeds 0 … N−1) or a comma list of seeds ("0,1,5")."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()] if "," in text else list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count (3) nor a comma list of seeds (0,1,5)") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one seed, none below 0, none twice")
    return seeds


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def data_root(args: argparse.Namespace) -> Path:
    return Path(args.data_root).expanduser() if args.data_root else default_data_root()


def results_root(args: argparse.Namespace) -> Path:
    return Path(args.results).expanduser() if args.results else default_results_root()


def percent(value: float | None) -> str:
    """A score in percent with two decimals, or – where there is none."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def chosen_device(args: argparse.Namespace) -> torch.device:
    from rsdg_bench.evaluator.distributed import resolve_device

    return resolve_device(args.device)


def common_options() -> argparse.ArgumentParser:
    """The folders and progress flag of every command that reads or writes data or results."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-root", help="prepared data folder (default: $RSDG_DATA or ~/.local/share/rsdg-bench/data)")
    common.add_argument("--results", help="results folder (default: $RSDG_RESULTS or ./rsdg-results)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    return common


def model_options() -> argparse.ArgumentParser:
    """Which model and where it runs: every command that builds a model (`train`, `run`, `predict`)."""
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default="smp", help="adapter name: a built-in (see `adapter list`), a plug-in, or "
                                                       "a backbone preset (see `adapter presets`: e.g. dinov2-vits14)")
    model.add_argument("--protocol", help="how a backbone preset is put to the task: linear_probe (default), "
                                          "frozen_upernet, finetune_upernet or lora_upernet (docs/foundation-models.md)")
    model.add_argument("--adapter", help="adapter from a file instead: path/to/file.py:ClassName")
    model.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="adapter option, repeatable (smp: arch=unet encoder=resnet18 mean=... std=... encoder_weights=FILE)")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    model.add_argument("--workers", type=non_negative_int, default=0,
                       help="DataLoader worker processes (default 0: threads of this process read samples ahead "
                            "of the model, --read-threads, which is faster than handing images between processes)")
    return model


def evaluation_options() -> argparse.ArgumentParser:
    """The weights a model is evaluated with and how its forward passes run: every command that evaluates a
    trained model (`run`, `predict`); `model_spec` reads them."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--checkpoint", help="one checkpoint file for every task")
    p.add_argument("--checkpoints", "--checkpoint-dir", dest="checkpoint_dir",
                   help="folder of checkpoints, one per source setting: <checkpoint_key>.pt as `train` writes them, or "
                        "the authors' released file names for adapters that know them (crossearth); default "
                        "<results>/checkpoints/<adapter>")
    p.add_argument("--backbone-checkpoint",
                   help="frozen backbone weights (file or folder) for checkpoints saved without them (crossearth: "
                        "dinov2_converted.pth / dinov2_converted_1024x1024.pth)")
    p.add_argument("--random-init", action="store_true", help="no weights (plumbing tests); never on a leaderboard")
    p.add_argument("--name", help="display name of the model on the leaderboard")
    p.add_argument("--window-batch", type=positive_int, default=1,
                   help="sliding windows per forward pass (speed only; raise it on a GPU; default 1)")
    p.add_argument("--batch-size", type=positive_int, default=1,
                   help="samples per batch: consecutive equal-size images share one forward pass (speed; on a "
                        "GPU raise it; batch-independent adapters give the same matrices; default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="arithmetic of the adapter's forward: fp32 is IEEE float32 on every device; tf32 lets "
                        "CUDA's convolutions and matrix products round to TF32; bf16 / fp16 autocast (tf32 and "
                        "fp16 on CUDA only; for adapters that declare it, e.g. smp). Not fp32 gives other "
                        "numbers: the record, its key and the leaderboard row name the precision (default fp32)")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="run the module through torch.compile (default backend inductor: fused kernels, on a GPU "
                        "fewer launches; the first pass per input size is slow). Speed only, but float sums may be "
                        "reordered: the record names the backend (provenance.execution.compile)")
    p.add_argument("--read-threads", type=read_threads_arg, metavar="N|auto",
                   help="threads reading samples ahead without --workers: auto reads each split's first images with "
                        "1, 2, 4 … threads and keeps the smallest count within 5 %% of the fastest (recorded in "
                        "provenance.execution); speed only (default: 2 on the CPU, auto beside a GPU)")
    return p


def chosen_model(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The adapter and its options that `--model`/`--adapter`, `--model-arg` and `--protocol` name: a backbone
    preset's name is the `encoder` adapter with that preset."""
    from rsdg_bench.baselines.encoder_presets import PRESETS

    name, options = args.adapter or args.model, model_args(args.model_arg)
    if name in PRESETS:
        name, options = "encoder", {"preset": name, **options}
    if args.protocol:
        if name != "encoder":
            raise RsdgError(f"--protocol puts a backbone preset to a task; {name!r} is not one",
                            "pass --model <preset> (`rsdg-bench adapter presets` lists them), or drop --protocol")
        options["protocol"] = args.protocol
    return name, options


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model the `model` and `evaluation` options name."""
    from rsdg_bench.models.model_spec import ModelSpec

    return ModelSpec(*chosen_model(args),
                     checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                     checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                     backbone_checkpoint=Path(args.backbone_checkpoint) if args.backbone_checkpoint else None,
                     random_init=args.random_init, display_name=args.name)
