"""Prediction maps: `predict` + `score` give the records `run` gives, bit for bit, for every task kind; every
malformed prediction is refused with an error naming the file; hidden labels are scored by an organizer."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import SMALL_MODEL, pixel_linear
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine

from rsdg_bench.base.errors import DataError, SubmissionError
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.prep import get_preparer
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore, load_record
from rsdg_bench.run.runner import RunSettings, run_tasks
from rsdg_bench.submissions.predict_maps import predict_task
from rsdg_bench.submissions.prediction_maps import PREDICTIONS_FILE
from rsdg_bench.submissions.score_maps import score_predictions


def _counts(records) -> dict:
    return {(r.evaluated.role, r.evaluated.slug): (r.confusion_matrices, r.per_image_matrices,
                                                   r.samples[r.evaluated.slug].ids) for r in records}


def _run_records(task, model, data_root: Path, results: Path) -> dict:
    [outcome] = run_tasks([task], model, RunSettings(data_root, results, progress=False))
    assert outcome.error is None, outcome.error
    return _counts(r for _, r in ResultStore(results).load_all())


def _scored(task, model, data_root: Path, results: Path, out: Path) -> tuple[dict, list]:
    predict_task(task, model, data_root, results, out, progress=False)
    return _score(task, out, data_root, out.parent / "scored")


def _score(task, maps: Path, data_root: Path, scored: Path) -> tuple[dict, list]:
    paths = score_predictions(task, maps, data_root, scored, progress=False)
    records = [load_record(p) for p in paths]
    return _counts(records), records


def _trained_model(trained: dict) -> ModelSpec:
    """The U-Net the demo trained, as a checkpoint."""
    return ModelSpec(SMALL_MODEL.adapter, SMALL_MODEL.options, checkpoint=trained["checkpoint"], display_name="u")


@pytest.fixture(scope="module")
def linear_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded `PixelLinear` weights for the demo tasks (RGB in, ToyEarth's 5 classes out), as a checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pixel-linear") / "pixel-linear.pt"
    torch.save(torch.nn.Conv2d(3, 5, 1).state_dict(), path)
    return path


@pytest.mark.parametrize("task_id", ["demo/u2a", "demo/rgb2irrg", "demo/u2coarse"])
def test_predict_then_score_equals_run_bit_for_bit(task_id: str, data_root: Path, trained: dict, good_maps: Path,
                                                   linear_weights: Path, tmp_path: Path):
    """demo/u2a with the trained U-Net, whose every pixel depends on its sliding window (so a window placed or
    blended otherwise by `predict` than by `run` shows), its maps the module's `good_maps`; the other two tasks
    (other bands, another GSD: what differs is the data, the windows are the same) with a 1×1-conv model,
    where a U-Net costs seconds per split."""
    task = TaskCatalog().task(task_id)
    if task_id == "demo/u2a":
        model = _trained_model(trained)
        ran = _run_records(task, model, data_root, tmp_path / "run")
        scored, records = _score(task, good_maps, data_root, tmp_path / "scored")
    else:
        model = ModelSpec(pixel_linear().adapter, checkpoint=linear_weights, display_name="u")
        ran = _run_records(task, model, data_root, tmp_path / "run")
        scored, records = _scored(task, model, data_root, tmp_path / "run", tmp_path / "maps")
    assert scored == ran and len(ran) == len(task.targets) + int(task.metrics.source_reference)
    assert all(r.model.scored_from["form"] == "map" for r in records)
    assert {r.model.checkpoint["sha256"] for r in records} == {load_record(p).model.checkpoint["sha256"]
                                                               for p in ResultStore(tmp_path / "run").paths()}


def test_predict_takes_the_evaluation_flags_of_run(data_root: Path, linear_weights: Path, tmp_path: Path, capsys):
    """`predict` through the command line, with `run`'s flags: batching is speed only, so maps predicted three
    samples and two windows at a time score what `run` counts one at a time; a precision the adapter does not
    declare is refused as `run` refuses it."""
    from rsdg_bench.cli import main

    task = TaskCatalog().task("demo/u2coarse")
    model = ModelSpec(pixel_linear().adapter, checkpoint=linear_weights, display_name="u")
    ran = _run_records(task, model, data_root, tmp_path / "run")
    common = ["predict", "--task", task.id, "--model", model.adapter, "--checkpoint", str(linear_weights), "--name",
              "u", "--data-root", str(data_root), "--results", str(tmp_path / "run"), "--device", "cpu", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "maps"), "--batch-size", "3", "--window-batch", "2"]) == 0
    scored, _ = _score(task, tmp_path / "maps", data_root, tmp_path / "scored")
    assert scored == ran
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "maps-fp16"), "--precision", "fp16"]) == 2
    assert "--precision fp16" in capsys.readouterr().err and not (tmp_path / "maps-fp16").exists()


def test_classification_predictions_are_one_csv_and_score_like_run(tmp_path: Path, prepared_fakes):
    data = prepared_fakes.data("fmow")
    task = TaskCatalog().task("codex/fmow")
    model = ModelSpec("timm-classifier", random_init=True, display_name="c")
    torch.manual_seed(0)
    ran = _run_records(task, model, data, tmp_path / "run")
    torch.manual_seed(0)  # the same random weights again
    scored, _ = _scored(task, model, data, tmp_path / "run", tmp_path / "maps")
    assert scored == ran
    table = next((tmp_path / "maps").rglob("predictions.csv")).read_text().splitlines()
    assert table[0] == "sample_id,class_index" and len(table) > 1


@pytest.mark.slow
def test_time_series_predictions_have_one_band_per_date(tmp_path: Path, prepared_fakes):
    data = prepared_fakes.data("muds")
    task = TaskCatalog().task("codex/muds")
    # a light per-date network: the maps and their scoring are what this checks, not the U-Net smp-temporal
    # builds by default (which took most of this test's 20 s)
    model = ModelSpec("smp-temporal", {"features": "4", "arch": "linknet", "encoder": "tu-mobilenetv3_small_050"},
                      random_init=True, display_name="t")
    torch.manual_seed(0)
    ran = _run_records(task, model, data, tmp_path / "run")
    torch.manual_seed(0)
    scored, _ = _scored(task, model, data, tmp_path / "run", tmp_path / "maps")
    assert scored == ran
    first = next((tmp_path / "maps").rglob("*.tif"))
    dates = len(PreparedDataset.open(data, "muds").card.timesteps)
    with rasterio.open(first) as src:
        assert src.count == dates > 1  # one band per date


# --------------------------------------------------------------------------- malformed predictions

@pytest.fixture(scope="module")
def good_maps(tmp_path_factory: pytest.TempPathFactory, data_root: Path, trained: dict) -> Path:
    """demo/u2a predicted by the trained U-Net: read only (a test that changes it works on a copy)."""
    out = tmp_path_factory.mktemp("good") / "maps"
    predict_task(TaskCatalog().task("demo/u2a"), _trained_model(trained), data_root, trained["results"], out,
                 progress=False)
    return out


def _manifest(folder: Path) -> dict:
    return json.loads((folder / PREDICTIONS_FILE).read_text())


def _save(folder: Path, manifest: dict) -> None:
    (folder / PREDICTIONS_FILE).write_text(json.dumps(manifest))


def _rewrite_first_map(folder: Path, planes: np.ndarray | None = None, raw: bytes | None = None,
                       **profile) -> str:
    """Replace the first target map (and its sha256 in the manifest, so the deeper check is reached)."""
    import hashlib

    manifest = _manifest(folder)
    entry = next(s for s in manifest["splits"] if s["role"] == "target")["files"][0]
    path = folder / entry["path"]
    if raw is None:
        with rasterio.open(path) as src:
            base = {**src.profile, "count": planes.shape[0], "height": planes.shape[1], "width": planes.shape[2],
                    "dtype": str(planes.dtype), **profile}
        with rasterio.open(path, "w", **base) as dst:
            dst.write(planes)
    else:
        path.write_bytes(raw)
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    _save(folder, manifest)
    return entry["path"]


def _first_map(folder: Path) -> np.ndarray:
    entry = next(s for s in _manifest(folder)["splits"] if s["role"] == "target")["files"][0]
    with rasterio.open(folder / entry["path"]) as src:
        return src.read()


def _drop_first_id(folder: Path) -> str:
    manifest = _manifest(folder)
    split = next(s for s in manifest["splits"] if s["role"] == "target")
    gone = split["sample_ids"].pop(0)
    split["files"].pop(0)
    _save(folder, manifest)
    return gone


def _add_id(folder: Path) -> str:
    manifest = _manifest(folder)
    split = next(s for s in manifest["splits"] if s["role"] == "target")
    split["sample_ids"].append("arid_val_999")
    split["files"].append(dict(split["files"][0]))
    _save(folder, manifest)
    return "arid_val_999"


def _edit_manifest(folder: Path, change) -> str:
    manifest = _manifest(folder)
    said = change(manifest)
    _save(folder, manifest)
    return said


MALFORMED = {
    "missing sample id": (_drop_first_id, "1 sample ids missing"),
    "extra sample id": (_add_id, "1 sample ids extra (not in the split): arid_val_999"),
    "wrong shape": (lambda f: _rewrite_first_map(f, _first_map(f)[:, :-1, :]), "the sample's label is 1×"),
    "wrong dtype": (lambda f: _rewrite_first_map(f, _first_map(f).astype(np.uint16)), "holds uint16 values"),
    "class index >= K": (lambda f: _rewrite_first_map(f, np.full_like(_first_map(f), 5)), "holds class index 5"),
    "no-prediction 255": (lambda f: _rewrite_first_map(f, np.full_like(_first_map(f), 255)), "class index 255"),
    "CRS": (lambda f: _rewrite_first_map(f, _first_map(f), crs="EPSG:4326"), "has CRS EPSG:4326"),
    "transform": (lambda f: _rewrite_first_map(f, _first_map(f), transform=Affine(9, 0, 0, 0, -9, 0)), "transform"),
    "corrupt file": (lambda f: _rewrite_first_map(f, raw=b"II*\x00 not a tiff"), "is not a readable raster"),
    "file edited after predict": (lambda f: (next(f.rglob("arid/val/*.tif")).write_bytes(b"x"), "")[1],
                                  "changed after predictions.json was written"),
    "path outside the folder": (lambda f: _edit_manifest(f, lambda m: m["splits"][-1]["files"][0].update(
        path="../../etc/passwd")), "outside"),
    "task hash": (lambda f: _edit_manifest(f, lambda m: (m["task"].update(hash="0" * 64),
                                                         m["task"]["resolved"]["metrics"].update(primary="oa"))),
                  "changed: metrics.primary"),
    "inputs (manifest)": (lambda f: _edit_manifest(f, lambda m: m["splits"][-1].update(inputs_sha256="0" * 64)),
                          "were made on other inputs"),
    "not a manifest": (lambda f: (f / PREDICTIONS_FILE).write_text("{"), "is not a valid predictions manifest"),
    # the model and task blocks a submitter writes: data of any shape, refused as such, never a traceback
    "model checkpoint a string": (lambda f: _edit_manifest(f, lambda m: m["model"].update(checkpoint="weights.pt")),
                                  "is not a valid predictions manifest"),
    "model without a name": (lambda f: _edit_manifest(f, lambda m: m["model"].update(display_name=["u"])),
                             "is not a valid predictions manifest"),
    "model of another shape": (lambda f: _edit_manifest(f, lambda m: m.update(model={"adapter": 5})),
                               "is not a valid predictions manifest"),
    "checkpoint sha256 a number": (lambda f: _edit_manifest(f, lambda m: m["model"]["checkpoint"].update(sha256=5)),
                                   "is not a valid predictions manifest"),
    "resolved task a string": (lambda f: _edit_manifest(f, lambda m: m["task"].update(hash="0" * 64, resolved="x")),
                               "another definition of demo/u2a"),
    "task hash a number": (lambda f: _edit_manifest(f, lambda m: m["task"].update(hash=5)),
                           "another definition of demo/u2a"),
    "task id a list": (lambda f: _edit_manifest(f, lambda m: m["task"].update(id=["demo/u2a"])),
                       "holds predictions for task"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_predictions_are_refused_naming_the_file(case: str, good_maps: Path, data_root: Path,
                                                           tmp_path: Path):
    folder = tmp_path / "maps"
    shutil.copytree(good_maps, folder)
    change, says = MALFORMED[case]
    named = change(folder)
    with pytest.raises(SubmissionError, match=None) as caught:
        score_predictions(TaskCatalog().task("demo/u2a"), folder, data_root, tmp_path / "results", progress=False)
    assert says in str(caught.value), str(caught.value)
    assert caught.value.fix
    if case in ("wrong shape", "wrong dtype", "class index >= K", "CRS", "corrupt file"):
        assert named in caught.value.problem  # the file is named
    assert not (tmp_path / "results").exists()  # nothing written


def test_scored_records_pack_into_a_bundle_whose_provenance_verifies(good_maps: Path, data_root: Path,
                                                                    tmp_path: Path):
    """A record scored from prediction maps ran no model here, so it names no torch version; verify asks for one
    only of records a model made."""
    from rsdg_bench.submissions.bundle import pack
    from rsdg_bench.submissions.verify import verify_bundle

    paths = score_predictions(TaskCatalog().task("demo/u2a"), good_maps, data_root, tmp_path / "results",
                              progress=False)
    scored = load_record(paths[0])
    assert scored.provenance.torch_version is None and scored.model.scored_from
    pack(tmp_path / "results", scored.model.display_name, ["demo/u2a"], tmp_path / "bundle", folder=True)
    checks = {c.name: c for c in verify_bundle(tmp_path / "bundle", data_root).checks}
    assert checks["provenance"].passed, checks["provenance"].detail


def test_scored_records_carry_a_badge_on_the_board(good_maps: Path, data_root: Path, tmp_path: Path):
    from rsdg_bench.api import build_leaderboard

    paths = score_predictions(TaskCatalog().task("demo/u2a"), good_maps, data_root, tmp_path / "results",
                              progress=False)
    assert len(paths) == 2
    build_leaderboard(tmp_path / "results", tmp_path / "site")
    assert "scored here against the prepared labels" in (tmp_path / "site" / "tasks" / "demo-u2a.html").read_text()


# --------------------------------------------------------------------------- hidden labels

def test_hidden_test_labels_are_scored_by_an_organizer_only(tmp_path: Path):
    preparer = get_preparer("openearthmap_sar")
    raw = preparer.make_fake(tmp_path / "raw")
    private = raw.parent / "private_labels"
    public, organizer = tmp_path / "public", tmp_path / "organizer"
    preparer.prepare(raw, public, progress=False)
    get_preparer("openearthmap_sar", private_labels=private).prepare(raw, organizer, progress=False)
    task = TaskCatalog().task("dfc25/sar-test")
    assert task.id not in {t.id for t in TaskCatalog().suite_tasks("all")}
    # the public cannot score the test split, but predicts it from the inputs alone
    [refused] = run_tasks([task], ModelSpec("smp", random_init=True), RunSettings(public, tmp_path / "r", progress=False))
    assert "has no public labels" in refused.error
    model = ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}, random_init=True, display_name="sar-model")
    predict_task(task, model, public, tmp_path / "r", tmp_path / "maps", progress=False)
    with pytest.raises(DataError, match="has no public labels"):
        score_predictions(task, tmp_path / "maps", public, tmp_path / "r", progress=False)
    # the organizer's preparation holds the labels and the same inputs: the maps score there
    [path] = score_predictions(task, tmp_path / "maps", organizer, tmp_path / "org", progress=False)
    record = load_record(path)
    assert record.evaluated.slug == "openearthmap_sar/sar/test" and record.model.display_name == "sar-model"
    assert sum(map(sum, record.confusion_matrices["openearthmap_sar/sar/test"])) > 0
    with pytest.raises(DataError, match="publishes the labels of all its splits"):
        get_preparer("toyearth", private_labels=private)


# --------------------------------------------------------------------------- strangers' maps (docs/security.md)

def _vrt(source: str, size: tuple[int, int]) -> bytes:
    height, width = size
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><VRTRasterBand dataType="Byte" band="1">'
            f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1</SourceBand>'
            '</SimpleSource></VRTRasterBand></VRTDataset>').encode()


@pytest.mark.parametrize("source", ["label file", "vsicurl"])
def test_a_vrt_map_is_refused_before_gdal_reads_what_it_points_at(source: str, good_maps: Path, data_root: Path,
                                                                   tmp_path: Path):
    """A 'map' that is a VRT over the hidden label file (or a URL) is refused by its magic bytes: it neither
    scores the labels nor makes a request."""
    import socket

    folder = tmp_path / "maps"
    shutil.copytree(good_maps, folder)
    split = next(s for s in _manifest(folder)["splits"] if s["role"] == "target")
    sample_id = split["sample_ids"][0]
    label = next(p for p in data_root.rglob(f"{sample_id}.*") if "labels" in p.parts)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    target = (str(label) if source == "label file" else
              f"/vsicurl/http://127.0.0.1:{listener.getsockname()[1]}/{label.name}")
    named = _rewrite_first_map(folder, raw=_vrt(target, _first_map(good_maps).shape[1:]))
    try:
        with pytest.raises(SubmissionError) as caught:
            score_predictions(TaskCatalog().task("demo/u2a"), folder, data_root, tmp_path / "results", progress=False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert "is not an allowed raster format: a GDAL VRT" in caught.value.problem and named in caught.value.problem
    assert "PNG or GeoTIFF" in caught.value.fix and not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- fuzzed prediction maps

def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


MAP_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2 ** 31), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2 ** 31)),
    st.tuples(st.just("json"), st.text(min_size=1, max_size=12),
              st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=20)),
    st.tuples(st.just("swap")),
    st.tuples(st.just("drop")),
)


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(index=st.integers(0, 50), mutation=MAP_MUTATIONS)
def test_a_mutated_predictions_folder_is_scored_or_refused_and_nothing_else(
        good_maps: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory, index: int, mutation: tuple):
    """A stranger's prediction maps, one file mutated at random (a byte flipped, truncated, a JSON field given any
    value, two maps swapped, a map removed): `score` ends in scores or in a `SubmissionError`/`DataError` that
    says why, never another exception; it writes nothing but its own records, in bounded time and memory."""
    scratch = tmp_path_factory.mktemp("map-fuzz")
    folder = scratch / "maps"
    shutil.copytree(good_maps, folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = files[index % len(files)]
    data = target.read_bytes()
    kind = mutation[0]
    if kind == "flip" and data:
        position = mutation[1] % len(data)
        target.write_bytes(data[:position] + bytes([data[position] ^ mutation[2]]) + data[position + 1:])
    elif kind == "truncate":
        target.write_bytes(data[:mutation[1] % max(len(data), 1)])
    elif kind == "json":
        try:
            content = json.loads(data)
        except ValueError:
            content = None
        if isinstance(content, dict) and content:
            content[sorted(content)[hash(mutation[1]) % len(content)]] = mutation[2]
            target.write_text(json.dumps(content, allow_nan=True))
    elif kind == "swap":
        other = files[(index + 1) % len(files)]
        other_data = other.read_bytes()
        other.write_bytes(data)
        target.write_bytes(other_data)
    elif kind == "drop":
        target.unlink()
    data_before = {str(p): p.stat().st_mtime_ns for p in data_root.rglob("*")}
    peak_before, started = _peak_rss_mib(), time.monotonic()
    try:
        score_predictions(TaskCatalog().task("demo/u2a"), folder, data_root, scratch / "results", progress=False)
    except (SubmissionError, DataError) as refused:
        assert refused.fix or refused.problem  # a reason the submitter can act on
    assert time.monotonic() - started < 30
    assert _peak_rss_mib() - peak_before < 1024, "scoring one small folder raised the peak memory by over 1 GiB"
    assert {str(p): p.stat().st_mtime_ns for p in data_root.rglob("*")} == data_before
    written = {p.relative_to(scratch).parts[0] for p in scratch.rglob("*")}
    assert written <= {"maps", "results"}  # its own records, nothing beside them
