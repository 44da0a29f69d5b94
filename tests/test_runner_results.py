"""Runner and result records: contents, resume, smoke runs, failure isolation, tamper detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SMALL_MODEL, TRAINED_ITERATIONS, linear_model

from rsdg_bench.base.errors import ResultsError
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore, decode_per_image, load_record, metrics_block, recompute
from rsdg_bench.run.runner import RunSettings, run_tasks


def settings(data_root: Path, results: Path, **kw) -> RunSettings:
    return RunSettings(data_root=data_root, results_root=results, progress=False, **kw)


def model_with(trained: dict) -> ModelSpec:
    return ModelSpec(SMALL_MODEL.adapter, SMALL_MODEL.options, checkpoint=trained["checkpoint"], display_name="unet-r18")


def test_records_hold_metrics_matrices_and_provenance(trained: dict, data_root: Path, tmp_path: Path):
    task = TaskCatalog().task("demo/u2a")
    [outcome] = run_tasks([task], model_with(trained), settings(data_root, tmp_path))
    assert outcome.error is None and len(outcome.written) == 2          # source reference + one target
    records = {load_record(Path(p)).evaluated.role: load_record(Path(p)) for p in outcome.written}
    target = records["target"]
    slug = "toyearth/arid/val"
    assert set(target.metrics[slug]) >= {"miou", "oa", "aa", "mf1", "per_class"}
    assert sum(map(sum, target.confusion_matrices[slug])) > 0
    per_image = decode_per_image(target.per_image_matrices[slug])  # one matrix per image, for bootstrap intervals
    assert per_image.shape[0] == target.evaluated.num_samples and (per_image.sum(axis=(1, 2)) > 0).all()
    assert per_image.sum(axis=0).tolist() == target.confusion_matrices[slug]
    prov = target.provenance
    assert prov["task_hash"] == task.hash
    assert prov["checkpoint_sha256"] == target.model["checkpoint"]["sha256"]
    assert prov["dataset_manifest_sha256"] == json.loads((data_root / "toyearth/dataset.json").read_text())["manifest_sha256"]
    assert {"harness_version", "git_commit", "torch_version", "device", "wall_time_s", "date"} <= set(prov)
    assert prov["decoders"]["jpeg"].startswith("Pillow ") and "GDAL" in prov["decoders"]["other"]  # read by what
    assert target.normalization["mean"] == [127.5, 127.5, 127.5]
    assert target.inference == {"mode": "slide", "resize_long_side": None, "crop": 128, "stride": 85, "tta": []}
    # the trained model is much better on its own domain than on the unseen one
    assert records["source"].metrics["toyearth/urban/val"]["miou"] > target.metrics[slug]["miou"] + 0.1


def test_rerun_skips_and_force_recomputes_identically(linear_checkpoint: Path, data_root: Path, tmp_path: Path):
    task = TaskCatalog().task("demo/rgb2irrg")
    [first] = run_tasks([task], linear_model(linear_checkpoint), settings(data_root, tmp_path))
    [second] = run_tasks([task], linear_model(linear_checkpoint), settings(data_root, tmp_path))
    assert second.written == [] and sorted(second.skipped) == sorted(first.written)
    [forced] = run_tasks([task], linear_model(linear_checkpoint), settings(data_root, tmp_path, force=True))
    assert sorted(forced.written) == sorted(first.written)
    assert load_record(Path(forced.written[0])).confusion_matrices == load_record(Path(first.written[0])).confusion_matrices


def test_limit_marks_a_smoke_run_under_its_own_key(linear_checkpoint: Path, data_root: Path, tmp_path: Path):
    task = TaskCatalog().task("demo/u2a")
    [full] = run_tasks([task], linear_model(linear_checkpoint), settings(data_root, tmp_path))
    [smoke] = run_tasks([task], linear_model(linear_checkpoint), settings(data_root, tmp_path, limit=1))
    assert smoke.written and not set(smoke.written) & set(full.written)
    record = load_record(Path(smoke.written[0]))
    assert record.smoke == {"limit": 1} and record.evaluated.num_samples == 1


def test_a_failing_task_is_reported_and_the_rest_runs(linear_checkpoint: Path, data_root: Path, tmp_path: Path, monkeypatch):
    catalog = TaskCatalog()
    broken = catalog.task("demo/u2a").model_copy(update={
        "id": "demo/missing", "targets": (catalog.task("demo/u2a").targets[0].model_copy(update={"dataset": "nope"}),)})
    outcomes = run_tasks([broken, catalog.task("demo/u2coarse")], linear_model(linear_checkpoint), settings(data_root, tmp_path))
    assert "prepared dataset 'nope' not found" in outcomes[0].error and outcomes[0].written == []
    assert not (tmp_path / "records" / "demo" / "missing").exists()  # not even its source split's record
    assert outcomes[1].error is None and outcomes[1].written
    summary = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert [o["task_id"] for o in summary["outcomes"]] == ["demo/missing", "demo/u2coarse"]


def test_an_adapter_returning_nan_fails_its_task_with_a_clear_error(trained: dict, data_root: Path, tmp_path: Path):
    plugin = tmp_path / "nan_adapter.py"
    plugin.write_text(
        "import torch\n"
        "from rsdg_bench.baselines.smp_adapter import SmpAdapter\n"
        "class NanAdapter(SmpAdapter):\n"
        "    def predict(self, x):\n"
        "        return super().predict(x) * float('nan')\n")
    model = ModelSpec(f"{plugin}:NanAdapter", {}, checkpoint=trained["checkpoint"])
    [outcome] = run_tasks([TaskCatalog().task("demo/u2a")], model, settings(data_root, tmp_path))
    assert "NaN or Inf" in outcome.error and not outcome.written


def test_missing_checkpoint_says_how_to_get_one(data_root: Path, tmp_path: Path):
    [outcome] = run_tasks([TaskCatalog().task("demo/u2a")], SMALL_MODEL, settings(data_root, tmp_path))
    assert "rsdg-bench train --task demo/u2a" in outcome.error


def test_edited_record_is_detected_and_recompute_restores_it(linear_checkpoint: Path, data_root: Path, tmp_path: Path):
    [outcome] = run_tasks([TaskCatalog().task("demo/u2a")], linear_model(linear_checkpoint), settings(data_root, tmp_path))
    path = Path(outcome.written[-1])
    original = json.loads(path.read_text())
    slug = next(iter(original["metrics"]))
    edited = json.loads(path.read_text())
    edited["metrics"][slug]["miou"] = 0.99
    path.write_text(json.dumps(edited))
    with pytest.raises(ResultsError, match="edited"):
        load_record(path)
    recompute(path)
    assert load_record(path).metrics[slug]["miou"] == pytest.approx(original["metrics"][slug]["miou"])


def test_malformed_record_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "records" / "demo" / "x" / "k.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="not a valid result record"):
        ResultStore(tmp_path).load_all()


def test_nan_metrics_are_stored_as_null_and_read_back():
    block = metrics_block([[3, 1, 0], [0, 2, 0], [0, 0, 0]], ["a", "b", "c"], [0, 1, 2])
    assert block["per_class"]["c"]["iou"] is None and block["per_class"]["c"]["recall"] is None
    assert block["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert "NaN" not in json.dumps(block, allow_nan=False)


@pytest.mark.parametrize("change", ["image cut short", "label swapped for another valid label"])
def test_a_prepared_file_changed_after_prepare_names_itself_and_writes_nothing(linear_checkpoint: Path, data_root: Path,
                                                                               tmp_path: Path, change: str):
    """A changed file keeps the manifest, and so the resume key: only its bytes can tell. A valid label swapped
    for another one decodes fine and would silently score against the wrong map."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_root, copy)
    folder = copy / "toyearth" / "arid" / "val" / ("images" if change.startswith("image") else "labels")
    first, second = sorted(folder.iterdir())[:2]
    if change.startswith("image"):
        first.write_bytes(first.read_bytes()[:200])
    else:
        first.write_bytes(second.read_bytes())
    [outcome] = run_tasks([TaskCatalog().task("demo/u2a")], linear_model(linear_checkpoint), settings(copy, tmp_path / "r"))
    assert f"{first} changed after toyearth was prepared" in outcome.error and "--verify" in outcome.error
    assert all(load_record(Path(path)).evaluated.domain != "arid" for path in outcome.written)  # none of it


def test_save_predictions_keeps_painted_samples_and_the_site_shows_them(linear_checkpoint: Path, data_root: Path,
                                                                        tmp_path: Path):
    import numpy as np
    from matplotlib.image import imread

    from rsdg_bench.datasets.prepared import PreparedDataset
    from rsdg_bench.leaderboards.aggregate import build_board, with_suites
    from rsdg_bench.leaderboards.render import write_site

    task = TaskCatalog().task("demo/u2a")
    [outcome] = run_tasks([task], linear_model(linear_checkpoint), settings(data_root, tmp_path, save_predictions=2))
    record_path = next(Path(p) for p in outcome.written if load_record(Path(p)).evaluated.role == "target")
    record = load_record(record_path)
    [slug] = record.predictions
    saved = record.predictions[slug]
    assert len(saved) == 2 and {"sample_id", "image", "label", "prediction"} <= set(saved[0])
    label_png = imread(record_path.parent / saved[0]["label"])[..., :3]
    dataset = PreparedDataset.open(data_root, "toyearth")
    row = dataset.rows("arid", "val").iloc[0]
    assert row["sample_id"] == saved[0]["sample_id"]
    colours = np.array([c.colour for c in task.class_schema.classes], dtype=np.uint8)
    label = dataset.read_label(row)
    painted = np.where(label[..., None] == 255, 0, colours[np.minimum(label, len(colours) - 1)])
    assert np.array_equal(np.round(label_png * 255).astype(np.uint8), painted)  # ground truth in the class colours
    site = write_site(with_suites(build_board(ResultStore(tmp_path).load_all()), TaskCatalog()), tmp_path / "site").parent
    html = (site / "tasks" / "demo-u2a.html").read_text()
    assert html.count("<img ") >= 6 and "Sample predictions" in html
    assert len(list((site / "predictions").rglob("*.png"))) >= 6
    copied = shutil.copytree(site, tmp_path / "elsewhere" / "copied-site")  # a site is published by copying it
    shutil.rmtree(tmp_path / "records")  # ... away from the results it was built from
    assert broken_links(copied) == []


def broken_links(site: Path) -> list[str]:
    """Every href/src of every page that is not a file inside the site (absolute paths and URLs count as
    broken: a copied site must stand alone and load nothing external), except links to the pages of the
    model cards (`leaderboards/cards.yaml`), which a reader may follow and which load nothing."""
    import re
    from urllib.parse import unquote, urlsplit

    from rsdg_bench.leaderboards.cards import load_cards

    cards = load_cards()
    card_pages = {url for card in [*cards.by_adapter.values(), *cards.by_method.values()] for _, url in card.links}
    broken = []
    for page in site.rglob("*.html"):
        for attribute, target in re.findall(r'(href|src)="([^"]*)"', page.read_text()):
            parts = urlsplit(target)
            if parts.scheme == "data" or target.startswith("#") or (attribute == "href" and target in card_pages):
                continue
            resolved = (page.parent / unquote(parts.path)).resolve()
            if parts.scheme or target.startswith("/") or not resolved.is_file() or \
                    not resolved.is_relative_to(site.resolve()):
                broken.append(f"{page.relative_to(site)} -> {target}")
    return broken


def test_a_short_trained_checkpoint_is_marked_off_protocol_everywhere_it_shows(trained: dict, data_root: Path,
                                                                                tmp_path: Path):
    from rsdg_bench.leaderboards.aggregate import build_board, with_suites
    from rsdg_bench.leaderboards.render import write_site
    from rsdg_bench.leaderboards.tables import to_markdown
    from rsdg_bench.leaderboards.views import task_summary_table

    task = TaskCatalog().task("demo/u2a")
    [outcome] = run_tasks([task], model_with(trained), settings(data_root, tmp_path))
    record = load_record(Path(outcome.written[0]))
    training = record.model["training"]
    assert training["status"] == "off-protocol" and training["trained_for"] == "demo/u2a"
    assert training["differences"] == [f"iterations {TRAINED_ITERATIONS} (protocol {task.training.iterations})"]
    assert training["iterations"] == TRAINED_ITERATIONS and training["seed"] == task.training.seed
    records = [(Path(p), load_record(Path(p))) for p in outcome.written]
    for _, rec in records:  # the demo data is a fake (not the published size); let it through here
        rec.evaluated.published_samples = None
    board = with_suites(build_board(records), TaskCatalog())
    [table] = board.tasks
    why = f"iterations {TRAINED_ITERATIONS} (protocol {task.training.iterations})"
    assert table.badges("unet-r18") == [("off-protocol", why)]
    assert f"[off-protocol: {why}]" in to_markdown(task_summary_table(table))
    write_site(board, tmp_path / "site")
    assert f'class="badge warn" title="{why}">off-protocol<' in (tmp_path / "site" / "suites" / "demo.html").read_text()
    strict = build_board(records, only_protocol=True)
    assert not strict.tasks and all(f"off-protocol: iterations {TRAINED_ITERATIONS}" in why for _, why in strict.excluded)


def test_training_verdicts_protocol_unknown_and_no_protocol(tmp_path: Path):
    import torch

    from rsdg_bench.records.training_record import badge, read_training_block, training_provenance

    task = TaskCatalog().task("demo/u2a")
    protocol = task.training.model_dump(mode="json")
    assert training_provenance(task, {"training": protocol}, 32)["status"] == "protocol"
    assert badge(training_provenance(task, {"training": protocol}, 32)) is None
    bare = tmp_path / "released.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bare)  # released weights: a plain state dict
    unknown = training_provenance(task, read_training_block(bare), 32)
    assert unknown["status"] == "unknown" and badge(unknown)[0] == "training unknown"
    assert badge(None)[0] == "training unknown"  # a record made before training was recorded
    epochs = TaskCatalog().task("noldo_s12/dw-s2")  # 50 epochs of batch 56: 50 × (3574 // 56) iterations
    spec = {**epochs.training.model_dump(mode="json"), "iterations": 50 * (3574 // 56)}
    assert training_provenance(epochs, {"training": spec}, 3574)["status"] == "protocol"
    assert training_provenance(epochs, {"training": spec}, 3)["status"] == "off-protocol"


def test_a_checkpoint_predating_the_newer_protocol_fields_is_judged_at_their_defaults():
    """Blocks written before the schedule's end, its stepping and the augmentation were recorded lack those
    keys: on a task that leaves them at their defaults they are the protocol; where the protocol sets them
    (NoLDO's cosine, per-epoch schedule and rotations), the verdict names each one."""
    from rsdg_bench.records.training_record import training_provenance

    added = {"final_lr", "decay_fraction", "schedule_step", "augment"}
    demo = TaskCatalog().task("demo/u2a")
    old = {k: v for k, v in demo.training.model_dump(mode="json").items() if k not in added}
    assert training_provenance(demo, {"training": old}, 32)["status"] == "protocol"
    noldo = TaskCatalog().task("noldo_s12/osm-s2")
    version_2 = {**{k: v for k, v in noldo.training.model_dump(mode="json").items() if k not in added},
                 "iterations": 50 * (400 // 32), "schedule": "constant", "weight_decay": 0, "loss": "ce+dice"}
    verdict = training_provenance(noldo, {"training": version_2}, 400)
    named = {difference.split(" ")[0] for difference in verdict["differences"]}
    assert verdict["status"] == "off-protocol" and named == {"weight_decay", "schedule", "final_lr", "decay_fraction",
                                                             "schedule_step", "loss", "augment"}


def test_verbose_logging_says_what_a_run_did_and_why(trained: dict, data_root: Path, tmp_path: Path, caplog):
    import logging

    from rsdg_bench.cli import configure_logging

    configure_logging(1, False)  # rsdg-bench -v
    task = TaskCatalog().task("demo/u2a")
    with caplog.at_level(logging.INFO, logger="rsdg_bench"):
        run_tasks([task], model_with(trained), settings(data_root, tmp_path, limit=1))
        run_tasks([task], model_with(trained), settings(data_root, tmp_path, limit=1))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("rsdg_bench")]
    assert any("evaluating (no record yet)" in m for m in messages)
    assert any(m.startswith("demo/u2a toyearth/arid/val: wrote ") for m in messages)
    assert any("exists (same task, adapter code and options, checkpoint, data): skipped" in m for m in messages)
    configure_logging(0, True)  # rsdg-bench -q: errors only
    assert logging.getLogger("rsdg_bench").level == logging.ERROR
    configure_logging(0, False)
    assert logging.getLogger("rsdg_bench").level == logging.WARNING
    assert sum(getattr(h, "rsdg_cli", False) for h in logging.getLogger("rsdg_bench").handlers) == 1  # one handler
