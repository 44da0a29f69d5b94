"""Label maps: total, checked against both class schemas, applied on read, and part of the task hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from rsdg_bench.base.errors import DataError, TaskError
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.label_maps import LabelMap, label_maps_dir, load_label_map
from rsdg_bench.protocol.task_data import TaskData
from rsdg_bench.protocol.task_schema import TaskCatalog, load_task_file


def test_every_shipped_map_is_total_and_named_after_its_file():
    paths = sorted(label_maps_dir().glob("*.yaml"))
    assert paths
    for path in paths:
        label_map = load_label_map(path.stem)
        assert (label_map.lookup[len(label_map.mapping):] == IGNORE_INDEX).all()


def test_lookup_maps_values_and_keeps_ignore():
    label_map = load_label_map("isprs6_to_potsdam_res5")
    label = np.array([[0, 1, 2, 3], [4, 5, 255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(label_map.apply(label), [[0, 1, 255, 2], [3, 4, 255, 0]])


def _map(**mapping: str) -> dict:
    return {"id": "x", "from": "isprs6", "to": "potsdam_res5", "mapping": mapping}


def test_a_map_missing_a_class_is_refused():
    full = yaml.safe_load((label_maps_dir() / "isprs6_to_potsdam_res5.yaml").read_text())["mapping"]
    del full["car"]
    with pytest.raises(ValueError, match=r"\['car'\] are not mapped"):
        LabelMap.model_validate(_map(**full))


def test_a_map_to_an_unknown_class_is_refused():
    full = yaml.safe_load((label_maps_dir() / "isprs6_to_potsdam_res5.yaml").read_text())["mapping"]
    full["car"] = "vehicle"
    with pytest.raises(ValueError, match="vehicle"):
        LabelMap.model_validate(_map(**full))


def _write_task(folder: Path, **overrides) -> Path:
    data = {"id": "mine/t", "name": "t", "version": 1, "suite": "mine", "gap": "region", "classes": "potsdam_res5",
            "source": {"dataset": "potsdam", "domain": "rgb", "split": "train", "label_map": "isprs6_to_potsdam_res5"},
            "targets": [{"dataset": "rescuenet", "domain": "uav", "split": "test",
                         "label_map": "rescuenet11_to_potsdam_res5"}],
            "checkpoint_key": "k"}
    data.update(overrides)
    path = folder / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_map_into_other_classes_than_the_task_is_refused(tmp_path: Path):
    path = _write_task(tmp_path, classes="isprs6")
    with pytest.raises(TaskError, match="maps into 'potsdam_res5'"):
        load_task_file(path)


def test_the_task_hash_follows_the_label_map_content(tmp_path: Path, monkeypatch):
    import rsdg_bench.protocol.task_schema as task_schema

    before = load_task_file(_write_task(tmp_path)).hash
    original = load_label_map("rescuenet11_to_potsdam_res5")
    edited = original.model_copy(update={"mapping": {**original.mapping, "water": "clutter"}})
    monkeypatch.setattr(task_schema, "load_label_map",
                        lambda map_id: edited if map_id == "rescuenet11_to_potsdam_res5" else load_label_map(map_id))
    assert load_task_file(_write_task(tmp_path)).hash != before


def test_a_split_without_the_needed_map_names_the_fix(data_root: Path, tmp_path: Path):
    # ToyEarth holds toyearth5 labels; a task in isprs6 classes reading it without a map must not run.
    path = _write_task(tmp_path, classes="isprs6",
                       source={"dataset": "toyearth", "domain": "urban", "split": "train"},
                       targets=[{"dataset": "toyearth", "domain": "arid", "split": "val"}])
    task = load_task_file(path)
    with pytest.raises(DataError, match="add `label_map:`.*'toyearth5' to 'isprs6'"):
        TaskData(data_root, task, phase="evaluate").open(task.targets[0])


def test_crossearth_tasks_use_maps_only_where_the_paper_remaps():
    catalog = TaskCatalog()
    mapped = {t.id: [r.label_map for r in t.splits()] for t in catalog.suite_tasks("crossearth")}
    assert mapped["crossearth/pr2res"] == ["isprs6_to_potsdam_res5", "rescuenet11_to_potsdam_res5"]
    assert mapped["crossearth/u2oem"] == [None, "openearthmap8_to_loveda7"]
    assert all(maps == [None, None] for tid, maps in mapped.items() if tid not in {"crossearth/pr2res",
                                                                                   "crossearth/pi2res",
                                                                                   "crossearth/u2oem"})
