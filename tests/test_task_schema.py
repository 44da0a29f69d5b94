"""Task YAML: validation with suggestions, includes, hashing, discovery, JSON Schema."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rsdg_bench.base.errors import TaskError
from rsdg_bench.protocol.task_schema import TaskCatalog, load_task_file, task_json_schema

BASE = {
    "id": "mine/a2b", "name": "A2B", "version": 1, "suite": "mine", "gap": "region", "classes": "toyearth5",
    "source": {"dataset": "toyearth", "domain": "urban", "split": "train"},
    "select": {"dataset": "toyearth", "domain": "urban", "split": "val"},
    "targets": [{"dataset": "toyearth", "domain": "arid", "split": "val"}],
    "checkpoint_key": "k",
}


def write(folder: Path, name: str, data: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_task_and_suite_validates():
    catalog = TaskCatalog()
    assert {"demo/u2a", "demo/rgb2irrg", "demo/u2coarse"} <= set(catalog.tasks)
    assert [t.id for t in catalog.suite_tasks("demo")] == ["demo/u2a", "demo/rgb2irrg", "demo/u2coarse"]


def test_include_supplies_defaults_and_the_task_overrides_them(tmp_path):
    write(tmp_path, "_defaults.yaml", {**{k: v for k, v in BASE.items() if k not in ("id", "name", "targets")},
                                       "inference": {"mode": "slide", "crop": 64, "stride": 32}})
    task = load_task_file(write(tmp_path, "t.yaml", {"include": "_defaults.yaml", "id": "mine/x", "name": "X",
                                                      "targets": BASE["targets"], "inference": {"stride": 48}}))
    assert task.inference.mode == "slide" and task.inference.crop == 64 and task.inference.stride == 48


def test_an_include_is_parsed_once_shared_by_copy_and_reread_when_it_changes(tmp_path, monkeypatch):
    from rsdg_bench.protocol import task_schema

    defaults = {**{k: v for k, v in BASE.items() if k not in ("id", "name", "targets")},
                "inference": {"mode": "slide", "crop": 64, "stride": 32}}
    write(tmp_path, "_defaults.yaml", defaults)
    reads: list[str] = []
    real_read = task_schema._read_yaml
    monkeypatch.setattr(task_schema, "_read_yaml", lambda path: reads.append(path.name) or real_read(path))
    tasks = [load_task_file(write(tmp_path, f"t{i}.yaml", {"include": "_defaults.yaml", "id": f"mine/x{i}",
                                                            "name": "X", "targets": BASE["targets"]}))
             for i in range(3)]
    assert reads.count("_defaults.yaml") == 1 and all(t.inference.crop == 64 for t in tasks)
    first = task_schema._included(tmp_path / "_defaults.yaml", ())
    first["inference"]["crop"] = 1  # a copy: one task's merge cannot change what the next one includes
    assert task_schema._included(tmp_path / "_defaults.yaml", ())["inference"]["crop"] == 64
    write(tmp_path, "_defaults.yaml", {**defaults, "inference": {"mode": "slide", "crop": 96, "stride": 48}})
    os.utime(tmp_path / "_defaults.yaml", ns=(1, 1))  # another mtime, whatever the clock's resolution
    assert load_task_file(tmp_path / "t0.yaml").inference.crop == 96 and reads.count("_defaults.yaml") == 2


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(TaskError, match=r"unknown key 'inferance'.*did you mean 'inference'") as info:
        load_task_file(write(tmp_path, "t.yaml", {**BASE, "inferance": {"mode": "whole"}}))
    assert "t.yaml" in str(info.value)


def test_unknown_nested_key_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(TaskError, match=r"inference.strid.*did you mean 'stride'"):
        load_task_file(write(tmp_path, "t.yaml", {**BASE, "inference": {"mode": "whole", "strid": 3}}))


def test_a_bad_list_item_is_reported_once_at_its_own_key(tmp_path):
    bad_target = {**BASE["targets"][0], "extra": 1}
    with pytest.raises(TaskError) as info:
        load_task_file(write(tmp_path, "t.yaml", {**BASE, "targets": [bad_target]}))
    assert "targets.0.extra" in str(info.value) and "at least 1 item" not in str(info.value)


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: [unclosed\n")
    with pytest.raises(TaskError, match="broken.yaml is not valid YAML"):
        load_task_file(path)


def test_a_target_that_is_the_source_is_refused(tmp_path):
    with pytest.raises(TaskError, match="would not be unseen"):
        load_task_file(write(tmp_path, "t.yaml", {**BASE, "targets": [BASE["select"]]}))


def test_headline_classes_must_exist_in_the_schema(tmp_path):
    with pytest.raises(TaskError, match="bulding"):
        load_task_file(write(tmp_path, "t.yaml", {**BASE, "metrics": {"classes": ["bulding"]}}))


def test_hash_is_stable_and_moves_only_with_fields_that_can_move_a_number(tmp_path):
    a = load_task_file(write(tmp_path, "a.yaml", BASE))
    again = load_task_file(write(tmp_path, "b.yaml", dict(reversed(list(BASE.items())))))
    renamed = load_task_file(write(tmp_path, "c.yaml", {**BASE, "name": "Other name", "description": "x"}))
    other_crop = load_task_file(write(tmp_path, "d.yaml", {**BASE, "inference": {"mode": "slide", "crop": 64, "stride": 32}}))
    bumped = load_task_file(write(tmp_path, "e.yaml", {**BASE, "version": 2}))
    assert a.hash == again.hash == renamed.hash
    assert len({a.hash, other_crop.hash, bumped.hash}) == 3


def test_task_path_adds_user_tasks_and_duplicate_ids_are_refused(tmp_path, monkeypatch):
    write(tmp_path, "mine.yaml", BASE)
    monkeypatch.setenv("RSDG_TASK_PATH", str(tmp_path))
    assert "mine/a2b" in TaskCatalog().tasks
    write(tmp_path, "again.yaml", BASE)
    with pytest.raises(TaskError, match="defined twice"):
        TaskCatalog()


def test_unknown_task_suggests_close_ids():
    with pytest.raises(TaskError, match="demo/u2a"):
        TaskCatalog().task("demo/u2b")


def test_json_schema_describes_the_task_fields():
    schema = task_json_schema()
    assert {"id", "source", "targets", "inference", "metrics", "training"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("bad_id", ["../evil", "demo/../x", "Demo/u2a", "demo", "demo/.hidden"])
def test_task_ids_are_slugs_that_cannot_escape_the_results_folder(tmp_path, bad_id):
    with pytest.raises(TaskError, match="id"):
        load_task_file(write(tmp_path, "t.yaml", {**BASE, "id": bad_id}))


def test_known_departures_from_the_papers_are_data_on_their_tasks():
    """What the fidelity audit (issue 38) found and the harness shows rather than copies stays on the tasks it
    concerns, where the board reads it: the uint8 resize on RescueNet's targets, CromSS's mixed precision,
    drop_last and float32 histc on every NoLDO task, CoDEX's unpublished OSCD grid, the DW batch size."""
    catalog = TaskCatalog()

    def text(task_id: str, field: str) -> str:
        return " ".join(getattr(catalog.task(task_id).reference, field))

    for task_id in ("crossearth/pi2res", "crossearth/pr2res"):
        assert "uint8" in text(task_id, "differences") and "72,467 of 589,824" in text(task_id, "differences")
    noldo = [t for t in catalog.tasks if t.startswith("noldo_s12/")]
    assert len(noldo) == 9
    for task_id in noldo:  # how CromSS scores, for every row; how it trains, for rows trained here
        assert all(word in text(task_id, "differences") for word in ("drop_last", "histc"))
        assert all(word in text(task_id, "training_differences") for word in ("mixed precision", "grid_sample"))
    assert "batch_size 32" in text("noldo_s12/dw-s2", "unverified")
    assert "patch grid" in text("codex/oscd", "unverified") and "own" in text("codex/fmow", "differences")
    assert all(catalog.task(t).reference.unverified for t in catalog.tasks if t.startswith(("crossearth/", "dfc25/")))


def test_fields_added_later_leave_hashes_and_training_fingerprints_as_they_were():
    """A protocol that leaves the later fields (schedule end and stepping, augmentation, label fraction) at their
    defaults dumps to what it dumped before they existed: its task hash, and an interrupted training's saved
    fingerprint, stay valid; one that sets them (NoLDO-S12, all but the label fraction) keeps them."""
    from rsdg_bench.protocol.task_schema import without_later_defaults

    added = {"final_lr", "decay_fraction", "schedule_step", "augment", "label_fraction", "schedule_iterations"}
    demo = TaskCatalog().task("demo/u2a").training.model_dump(mode="json")
    assert without_later_defaults("training", demo) == {k: v for k, v in demo.items() if k not in added}
    noldo = TaskCatalog().task("noldo_s12/dw-s2").training.model_dump(mode="json")
    assert without_later_defaults("training", noldo) == {k: v for k, v in noldo.items()
                                                         if k not in ("label_fraction", "schedule_iterations")}
    crossearth = TaskCatalog().task("crossearth/pi2v").training.model_dump(mode="json")
    assert without_later_defaults("training", crossearth)["schedule_iterations"] == 40000  # set: hashed
    assert TaskCatalog().task("demo/u2a").hash == "2a1cea6da431" + TaskCatalog().task("demo/u2a").hash[12:]
