"""`adapter`: list the adapters, run the conformance checks on one, or write a new plug-in package."""

from __future__ import annotations

import argparse
from pathlib import Path

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.cli.options import chosen_device, model_args, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapter", help="list adapters, run the conformance suite on one, or start a new one",
                       description="`check NAME` builds the adapter with random weights (or --checkpoint) and runs shape, "
                                   "dtype, K, NaN/Inf, determinism, batch-independence and band-count checks on synthetic "
                                   "input. `new NAME` writes a plug-in package (pyproject with the entry point, the "
                                   "adapter with its input contract from --bands/--mean/--std, a conformance test) that "
                                   "passes `check` as written; see docs/adapters.md.")
    p.add_argument("action", choices=["list", "presets", "check", "new"],
                   help="list: the adapters; presets: the backbone presets (pretrained encoders by name, for "
                        "`run --model <preset> --protocol <name>`) with their bands, units and weights file; check; new")
    p.add_argument("name", nargs="?", help="adapter name or path/to/file.py:Class")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="check: adapter option, repeatable, as for run (smp: arch=unet encoder=resnet18)")
    p.add_argument("--task", default=None,
                   help="check: the task whose classes set K and whose source bands the input has (default: demo/u2a "
                        "for a segmentation model, else the first task of a kind the adapter declares)")
    p.add_argument("--bands", default=None,
                   help="check: band names of the synthetic input (default: the bands the adapter names, else the "
                        "task's source bands); new: the bands the adapter takes (default red,green,blue)")
    p.add_argument("--checkpoint", help="check with these weights instead of random init")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default): where the checks run")
    p.add_argument("--out", default=".", help="new: the folder to write the package into (default .)")
    p.add_argument("--mean", default="123.675,116.28,103.53",
                   help="new: per-band mean in the prepared data's units (default ImageNet's, 0..255)")
    p.add_argument("--std", default="58.395,57.12,57.375", help="new: per-band std (default ImageNet's, 0..255)")
    p.add_argument("--kind", action="append", choices=["segmentation", "change_detection"], default=None,
                   help="new: task kinds it does, repeatable (default segmentation; time series and classification "
                        "adapters implement predict_series / classify instead, see docs/adapters.md)")
    p.add_argument("--size-divisor", type=positive_int, default=1, help="new: input sides are padded to a multiple of this")
    p.add_argument("--bands-by-name", action="store_true",
                   help="new: the harness picks --bands by name and refuses data without them (a multispectral model); "
                        "default: the model takes the first N stored bands in order, as RGB models take IRRG tiles")
    p.set_defaults(func=cmd_adapter)



def cmd_adapter(args: argparse.Namespace) -> int:
    from rsdg_bench.models.registry import available_adapters

    if args.action == "list":  # built-ins read from their source; a plug-in is imported, and says why it fails
        from rsdg_bench.models.adapter_facts import adapter_facts

        print(f"{'adapter':16s} {'kinds':40s} {'trainable':9s} origin")
        for name, origin in sorted(available_adapters().items()):
            try:
                facts = adapter_facts(name)
                kinds, trainable = ", ".join(sorted(facts.kinds)), "yes" if facts.trainable else "no"
            except RsdgError as exc:
                kinds, trainable = f"(cannot import: {exc.problem})", "?"
            print(f"{name:16s} {kinds:40s} {trainable:9s} {origin}")
        return 0
    if args.action == "presets":
        return _print_presets()
    if not args.name:
        raise RsdgError(f"adapter {args.action} needs an adapter name", f"e.g. rsdg-bench adapter {args.action} smp")
    if args.action == "new":
        return _new_adapter(args)
    from rsdg_bench.evaluator.conformance import check_adapter
    from rsdg_bench.models.registry import resolve_adapter
    from rsdg_bench.protocol.task_schema import TaskCatalog

    bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
    device = chosen_device(args)
    report = check_adapter(resolve_adapter(args.name), TaskCatalog().task(args.task) if args.task else None, bands,
                           model_args(args.model_arg), Path(args.checkpoint) if args.checkpoint else None, device)
    print(f"checking {report.adapter.name} on {device}: task {report.task.id} ({report.task.kind}), "
          f"bands {', '.join(report.bands)}")
    for result in report.results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name:26s} {result.detail}")
    print(f"{len(report.results) - report.failed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def _new_adapter(args: argparse.Namespace) -> int:
    from rsdg_bench.models.scaffold import new_adapter

    def numbers(text: str, option: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise RsdgError(f"{option} {text!r} is not a comma-separated list of numbers",
                            f"e.g. {option} 123.675,116.28,103.53") from exc

    bands = [b.strip() for b in (args.bands or "red,green,blue").split(",") if b.strip()]
    folder = new_adapter(args.name, Path(args.out), bands, numbers(args.mean, "--mean"), numbers(args.std, "--std"),
                         args.kind or ["segmentation"], args.size_divisor, bands_by_name=args.bands_by_name)
    print(f"adapter package -> {folder}")
    print(f"next:\n  pip install -e {folder}\n  rsdg-bench adapter check {args.name}\n"
          f"  (before installing: rsdg-bench adapter check {folder}/rsdg_{args.name}/adapter.py:"
          f"{''.join(p.capitalize() for p in args.name.split('_'))}Adapter)")
    return 0


def _print_presets() -> int:
    """The backbone presets and the protocols they can be put to a task under (no torch needed for timm's facts;
    a torchgeo preset's facts need torchgeo, and say so when it is missing)."""
    from rsdg_bench.baselines.encoder_presets import PRESETS
    from rsdg_bench.baselines.encoder_protocols import load_protocols

    for name, preset in sorted(PRESETS.items()):
        try:
            source = preset.source
            bands = ",".join(preset.bands)
            weights = f"{source.hf_hub_id}/{source.file_name}" if source.hf_hub_id else source.file_name
        except RsdgError as exc:
            bands, weights = f"({exc.problem})", preset.weights
        gsd = f", {preset.gsd_m:g} m" if preset.gsd_m else ""
        print(f"{name:28s} {preset.description}\n{'':28s} bands {bands} ({preset.units}{gsd})\n{'':28s} weights {weights}")
    print("\nprotocols: " + ", ".join(f"{p.name} ({p.description})" for p in load_protocols().values()))
    return 0
