"""The module paths of the flat layout (0.1: `rsdg_bench.results`, `rsdg_bench.runner`, …), importable for one
more release: each old name is the module at its new place (docs/architecture.md, "Stages"), with a
DeprecationWarning that names the new path. Installed by `rsdg_bench/__init__.py` on the import system.

The old name is bound to the very module object of the new one, so a plug-in that imports
`rsdg_bench.adapters.Adapter` gets the same class, and patching either name patches both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

OLD_TO_NEW = {
    "errors": "base.errors",
    "io": "base.io",
    "paths": "base.paths",
    "yaml_load": "base.yaml_load",
    "bounded_json": "base.bounded_json",
    "folder_swap": "base.folder_swap",
    "output_owner": "base.output_owner",
    "compiled": "base.compiled",
    "allocator": "base.allocator",
    "host_syncs": "base.host_syncs",
    "references": "base.references",
    "prepared": "datasets.prepared",
    "data_lock": "datasets.data_lock",
    "classes": "datasets.classes",
    "label_maps": "datasets.label_maps",
    "windows": "datasets.windows",
    "quicklook": "datasets.quicklook",
    "untrusted_raster": "datasets.untrusted_raster",
    "leakage": "datasets.leakage",
    "read_ahead": "datasets.read_ahead",
    "task_schema": "protocol.task_schema",
    "task_places": "protocol.task_places",
    "label_subsets": "protocol.label_subsets",
    "data": "protocol.task_data",
    "split_dataset": "protocol.split_dataset",
    "metrics": "scoring.metrics",
    "pair_counts": "scoring.pair_counts",
    "sparse_counts": "scoring.sparse_counts",
    "split_counts": "scoring.split_counts",
    "adapters": "models.adapters",
    "registry": "models.registry",
    "checkpoints": "models.checkpoints",
    "code_identity": "models.code_identity",
    "adapter_facts": "models.adapter_facts",
    "module_adapter": "models.module_adapter",
    "graph_compile": "models.graph_compile",
    "scaffold": "models.scaffold",
    "inference": "evaluator.inference",
    "class_map": "evaluator.class_map",
    "evaluation": "evaluator.evaluation",
    "distributed": "evaluator.distributed",
    "conformance": "evaluator.conformance",
    "compute_profile": "evaluator.compute_profile",
    "predictions": "evaluator.predictions",
    "results": "records.results",
    "record_building": "records.record_building",
    "results_frame": "records.results_frame",
    "training_record": "records.training_record",
    "training": "train.training",
    "training_history": "train.training_history",
    "augment": "train.augment",
    "runner": "run.runner",
    "preflight": "run.preflight",
    "launchers": "run.launchers",
    "train_job": "run.train_job",
    "hub_dataset": "hub.hub_dataset",
    "hub_export": "hub.hub_export",
    "kinds": "evaluator.kinds",
    "kinds.base": "protocol.kind",
    "kinds.registry": "evaluator.kinds",
    "kinds.segmentation": "evaluator.kinds.segmentation",
    "kinds.temporal_segmentation": "evaluator.kinds.temporal_segmentation",
    "kinds.classification": "evaluator.kinds.classification",
}
PACKAGE = "rsdg_bench"


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder; `exec_module` puts the real module in its place

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        warnings.warn(f"{old} moved to {self.new}; the old path goes in the next release", DeprecationWarning,
                      stacklevel=2)
        sys.modules[old] = importlib.import_module(self.new)  # what the import statement returns


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the flat layout's module names and answers with their new modules."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix(PACKAGE + ".")
        if old == fullname or old not in OLD_TO_NEW:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(f"{PACKAGE}.{OLD_TO_NEW[old]}"))


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        # First: below an aliased package (`rsdg_bench.kinds`) the path finder would otherwise load the
        # new package's files a second time under their old names
        sys.meta_path.insert(0, MovedModules())
