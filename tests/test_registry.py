"""The one registry every axis of variation uses (rsdg_bench/base/registry.py), and the metric table that every
headline, board column, export and task schema reads (rsdg_bench/protocol/metric_table.py)."""

from __future__ import annotations

import math
import sys
import types
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from rsdg_bench.base.errors import RsdgError, TaskError
from rsdg_bench.base.registry import Registry
from rsdg_bench.protocol.metric_table import BY_NAME, CONVENTIONS, HEADLINE_NAMES, HEADLINE_RATES, METRICS, PER_PLACE_NAMES


class Thing:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("registry_plugin_mod")
    module.Good = type("Good", (), {"name": "good", "__module__": "registry_plugin_mod"})
    module.Misnamed = type("Misnamed", (), {"name": "other", "__module__": "registry_plugin_mod"})
    monkeypatch.setitem(sys.modules, "registry_plugin_mod", module)
    return module


def registry_with(*entries: EntryPoint) -> Registry:
    registry = Registry("widget", "rsdg_bench.widgets", TaskError)
    registry.entry_points = lambda: list(entries)  # as if installed packages declared them
    return registry


def test_a_name_is_read_from_the_object_and_taken_once():
    registry = registry_with()
    first = registry.register(Thing("a"))
    assert registry.get("a") is first and registry.names() == ["a"] and "a" in registry
    with pytest.raises(TaskError, match="two widgets are registered as 'a'"):
        registry.register(type("Other", (), {"name": "a"}))
    with pytest.raises(TaskError, match="has no name"):
        registry.register(object())
    with pytest.raises(TaskError, match=r"no widget 'b'.*\n  fix: the widgets are a"):
        registry.get("b")


def test_an_entry_point_is_listed_without_importing_and_loaded_when_asked_for(plugin_module):
    registry = registry_with(EntryPoint("good", "registry_plugin_mod:Good", "rsdg_bench.widgets"))
    del plugin_module.Good  # listing must not touch the module
    assert registry.names() == ["good"] and registry.source("good") == "registry_plugin_mod:Good"
    plugin_module.Good = type("Good", (), {"name": "good", "__module__": "registry_plugin_mod"})
    assert registry.get("good") is plugin_module.Good
    with pytest.raises(TaskError, match="two widgets are registered as 'good'"):  # an entry point's name is claimed
        registry.register(type("Impostor", (), {"name": "good"}))


def test_an_entry_point_whose_object_calls_itself_otherwise_is_refused(plugin_module):
    registry = registry_with(EntryPoint("misnamed", "registry_plugin_mod:Misnamed", "rsdg_bench.widgets"))
    with pytest.raises(TaskError, match="declared as 'misnamed' but calls itself 'other'"):
        registry.get("misnamed")


def test_a_plugin_that_fails_to_import_is_named():
    registry = registry_with(EntryPoint("gone", "no_such_module_anywhere:Gone", "rsdg_bench.widgets"))
    with pytest.raises(TaskError, match=r"widget 'gone' \(no_such_module_anywhere:Gone\) failed to import"):
        registry.get("gone")


def test_two_packages_declaring_one_name_is_an_error():
    registry = registry_with(EntryPoint("twice", "a_mod:A", "rsdg_bench.widgets"),
                             EntryPoint("twice", "b_mod:B", "rsdg_bench.widgets"))
    with pytest.raises(TaskError, match="two installed packages declare the widget 'twice'"):
        registry.names()


def test_a_plugin_may_not_take_a_builtin_name():
    """rsdg-bench's own entry points are the built-ins; a plug-in declaring one of their names is refused."""
    from rsdg_bench.models.registry import ADAPTERS

    [smp] = [entry for entry in ADAPTERS.entry_points() if entry.name == "smp"]
    assert Registry.is_builtin(smp)
    registry = registry_with(smp, EntryPoint("smp", "shadow:Smp", "rsdg_bench.adapters"))
    with pytest.raises(TaskError, match="has the name of a built-in widget"):
        registry.names()


def test_metadata_without_the_builtins_says_to_reinstall():
    """A checkout installed before its built-ins were declared as entry points (or a stale egg-info beside it)."""
    with pytest.raises(TaskError, match="reinstall it"):
        registry_with().get("segmentation")


def test_every_builtin_kind_and_adapter_is_declared_and_named_as_it_registers():
    from rsdg_bench.models.registry import ADAPTERS, builtin_entries
    from rsdg_bench.protocol.kind import KINDS

    assert set(KINDS.names()) >= {"segmentation", "change_detection", "temporal_segmentation", "classification"}
    for name in KINDS.names():
        assert KINDS.get(name).name == name
    assert set(builtin_entries()) >= {"smp", "crossearth", "daformer", "mtp", "cromss", "codex"}
    for name, (module, attr) in builtin_entries().items():
        assert module.startswith("rsdg_bench.baselines.") and ADAPTERS.source(name) in (
            f"{module}:{attr}", f"{module}.{attr}")


# The metric table


def test_the_metric_table_names_every_headline_once_and_the_engine_computes_each():
    from rsdg_bench.scoring.metrics import scores_from_confusion

    assert len(BY_NAME) == len(METRICS) and set(HEADLINE_NAMES) | set(PER_PLACE_NAMES) == set(BY_NAME)
    assert set(HEADLINE_RATES) == set(HEADLINE_NAMES)  # every headline says which rate it averages
    headline = scores_from_confusion(np.array([[5, 1], [2, 4]])).headline()
    assert tuple(headline) == HEADLINE_NAMES
    # each headline is the mean of its rate (OA the whole matrix's), recomputed here by hand
    iou = [5 / 8, 4 / 7]
    recall = [5 / 6, 4 / 6]
    f1 = [10 / 13, 8 / 11]
    assert math.isclose(headline["miou"], np.mean(iou)) and math.isclose(headline["oa"], 9 / 12)
    assert math.isclose(headline["aa"], np.mean(recall)) and math.isclose(headline["mf1"], np.mean(f1))
    assert math.isclose(headline["mfscore"], np.mean(f1))


def test_board_export_schema_and_task_schema_read_the_metric_table():
    from rsdg_bench.hub.hub_export import SCHEMA
    from rsdg_bench.leaderboards.views import METRIC_COLUMNS, METRIC_LABELS
    from rsdg_bench.protocol.task_schema import MetricsSpec, task_json_schema

    assert METRIC_COLUMNS == HEADLINE_NAMES and METRIC_LABELS["mf1"] == "mDice"
    assert set(HEADLINE_NAMES) <= set(SCHEMA.names)
    allowed = task_json_schema()["$defs"]["MetricsSpec"]["properties"]["primary"]["enum"]
    assert allowed == list(BY_NAME)
    with pytest.raises(ValueError, match="miou"):
        MetricsSpec(primary="not_a_metric")


@pytest.mark.parametrize("convention, absent_class_iou", [("mmseg", math.nan), ("smp", 1.0), ("codex", 0.0)])
def test_each_convention_is_its_facts(convention: str, absent_class_iou: float):
    """A class absent from ground truth and prediction: NaN left out (mmseg), 1 (smp's zero_division=1), 0
    (CoDEX), and the mean over headline classes follows."""
    from rsdg_bench.scoring.metrics import scores_from_confusion

    scores = scores_from_confusion(np.array([[3, 1, 0], [1, 3, 0], [0, 0, 0]]), convention=convention)
    assert (math.isnan(scores.iou[2]) if math.isnan(absent_class_iou) else scores.iou[2] == absent_class_iou)
    present = [3 / 5, 3 / 5]
    expected = np.mean(present) if CONVENTIONS.get(convention).mean_skips_nan else np.mean(present + [absent_class_iou])
    assert math.isclose(scores.miou, expected)


def test_a_task_names_only_a_registered_convention_and_ignored_pixels_only_where_it_counts_them():
    from rsdg_bench.protocol.task_schema import MetricsSpec

    with pytest.raises(ValueError, match="mmseg"):
        MetricsSpec(convention="sklearn")
    with pytest.raises(ValueError, match="is the smp convention's"):
        MetricsSpec(convention="codex", ignored_pixels="error")
    assert MetricsSpec(convention="smp", ignored_pixels="error").convention == "smp"
    with pytest.raises(RsdgError, match="two metric conventions are registered as 'smp'"):
        CONVENTIONS.register(type("Smp", (), {"name": "smp"}))
