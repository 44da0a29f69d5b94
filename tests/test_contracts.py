"""Contract tests over every registered preparer, task and adapter (timm's way: parametrised over the
registries). A dataset or adapter that is registered is tested here without new test code."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.evaluator.conformance import check_adapter
from rsdg_bench.models.registry import available_adapters, resolve_adapter
from rsdg_bench.prep import available_preparers, get_preparer
from rsdg_bench.protocol.task_data import SegmentationSplit, TaskData
from rsdg_bench.protocol.task_schema import SplitRef, TaskCatalog

PREPARERS = sorted(available_preparers())


@pytest.fixture(scope="session")
def every_dataset(prepared_fakes, data_root: Path) -> Path:
    """One data root holding every registered dataset prepared from its folder fake, once per session (the
    shared root; ToyEarth linked from `data_root`)."""
    if not (prepared_fakes.root / "toyearth").exists():
        (prepared_fakes.root / "toyearth").symlink_to(data_root / "toyearth", target_is_directory=True)
    return prepared_fakes.data(*PREPARERS)


@pytest.mark.parametrize("name", PREPARERS)
def test_preparer_states_its_facts_prepares_verifies_and_opens(name: str, every_dataset: Path, prepared_fakes):
    preparer = get_preparer(name)
    dataset = PreparedDataset.open(every_dataset, name)
    card = dataset.card
    assert (card.citation, card.licence, card.prep_version, card.classes.id) == (
        preparer.citation, preparer.licence, preparer.prep_version, preparer.classes)
    assert set(card.domains) <= set(preparer.domains)
    for domain, info in card.domains.items():  # the bands known without data are the bands stored
        assert preparer.domain_bands(domain) == [band.name for band in info.bands]
    assert dataset.verify_files() == []

    for domain, splits in card.split_counts.items():
        for split, count in splits.items():
            assert count > 0, f"{domain}/{split}"
            sample = SegmentationSplit(dataset, SplitRef(dataset=name, domain=domain, split=split), limit=1)[0]
            bands = len(card.domains[domain].bands)
            assert sample["image"].shape[-3] == bands, f"{domain}/{split}"
            if card.label_level != "image" and f"{domain}/{split}" not in card.unlabelled:
                assert tuple(sample["label"].shape[-2:]) == tuple(sample["image"].shape[-2:])
            x0, y0, x1, y1 = dataset.rows(domain, split).iloc[0]["window"]  # (x0, y0, x1, y1) in every manifest
            if card.label_level != "image":  # a map sample: its window is its crop of the source, pixel for pixel
                assert (y1 - y0, x1 - x0) == tuple(sample["image"].shape[-2:]), f"{domain}/{split}"

    # the download as archives prepares to the very same manifest, and leaves no extraction behind (prepared
    # once per run in a data root of its own, where other tests read it too)
    archived = prepared_fakes.from_archive(name)
    from_archives = PreparedDataset.open(archived, name)
    assert from_archives.manifest_sha256 == dataset.manifest_sha256
    archives = {a.name for a in from_archives.card.source_archives}  # the card names the archives it came from
    assert archives & set(preparer.archives), (archives, set(preparer.archives))
    left = sorted(p.name for p in archived.iterdir())
    assert left == sorted([name, f".{name}.lock", f".{name}.prepare.lock"])  # the dataset and its lock files


TASKS = sorted(TaskCatalog().tasks)


@pytest.mark.parametrize("task_id", TASKS)
def test_every_task_opens_each_split_it_reads(task_id: str, every_dataset: Path):
    task = TaskCatalog().task(task_id)
    data = TaskData(every_dataset, task, phase="evaluate")
    for ref in task.splits():
        prepared = data.prepared(ref.dataset)
        if f"{ref.domain}/{ref.split}" in prepared.card.unlabelled:
            continue
        sample = data.open(ref, limit=1)[0]
        assert sample["image"].shape[-3] == len(data.band_names(ref)), ref.slug
        assert int(sample["label"].max()) < task.class_schema.num_classes or int(sample["label"].max()) == 255


ADAPTERS = sorted(available_adapters())


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_passes_its_checks_on_a_task_of_its_own_kind(name: str):
    """What `rsdg-bench adapter check NAME` runs, with no --task."""
    import torch

    torch.manual_seed(0)
    adapter_class = resolve_adapter(name)
    report = check_adapter(adapter_class, options=dict(adapter_class.check_options))
    assert report.task.kind in adapter_class.kinds
    assert report.failed == 0, [(r.name, r.detail) for r in report.results if not r.passed]


def test_adapter_check_without_task_picks_one_of_the_adapters_kind(capsys: pytest.CaptureFixture):
    from rsdg_bench.cli import main

    assert main(["adapter", "check", "smp-temporal"]) == 0
    out = capsys.readouterr().out
    assert "task codex/dynamicearthnet (temporal_segmentation), bands R, G, B, NIR" in out and "0 failed" in out


class FakeLand:
    """A third party's dataset, declared through the `rsdg_bench.datasets` entry-point group."""


def _plugin_preparer(name: str = "fakeland") -> type:
    from rsdg_bench.prep import Preparer

    return type("FakeLand", (Preparer,), {
        "__module__": __name__, "name": name, "summary": "a plug-in", "prep_version": 1, "archives": {},
        "classes": "building2", "citation": "nobody", "licence": "CC0-1.0", "domains": {},
        "make_fake": lambda self, out, seed=0, archive=False: out, "build": lambda self, files, root, progress: root})


def test_datasets_register_by_entry_point_and_a_name_is_taken_once(monkeypatch: pytest.MonkeyPatch):
    from importlib.metadata import EntryPoint

    from rsdg_bench.base.errors import DataError
    from rsdg_bench.prep import base

    monkeypatch.setattr(base.PREPARERS, "_items", dict(base.PREPARERS._items))
    monkeypatch.setattr(base.PREPARERS, "_sources", dict(base.PREPARERS._sources))
    monkeypatch.setattr(__import__(__name__), "FakeLand", _plugin_preparer())
    monkeypatch.setattr(base.PREPARERS, "entry_points",
                        lambda: [EntryPoint("fakeland", f"{__name__}:FakeLand", base.ENTRY_POINT_GROUP)])
    assert "fakeland" in available_preparers() and get_preparer("fakeland").citation == "nobody"

    with pytest.raises(DataError, match="two preparers are registered as 'potsdam'"):
        base.register_preparer(_plugin_preparer("potsdam"))
    incomplete = _plugin_preparer("incomplete")
    del incomplete.citation
    with pytest.raises(DataError, match="states no citation"):
        base.register_preparer(incomplete)


def test_a_task_kind_name_is_taken_once():
    from rsdg_bench.base.errors import TaskError
    from rsdg_bench.protocol.kind import DEFAULT_KIND, TaskKind, get_kind, kind_names, register_kind

    assert DEFAULT_KIND == "segmentation" and DEFAULT_KIND in kind_names() and get_kind("classification").grouped
    with pytest.raises(TaskError, match="two task kinds are registered as 'segmentation'"):
        register_kind(type("OtherSegmentation", (TaskKind,), {"name": "segmentation", "summary": "",
                                                              "entry_point": "predict"}))
