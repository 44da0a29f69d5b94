"""Bad input ends in a clear error or a correct result, never in a traceback or a silently wrong number:
strict YAML, confined paths, hostile and broken records, export injection, adapters that misbehave."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_leaderboard import GOOD, POOR, record

import rsdg_bench as rb
from rsdg_bench.base.errors import AdapterError, RsdgError, TaskError
from rsdg_bench.base.io import canonical_json, sha256_bytes
from rsdg_bench.cli import main
from rsdg_bench.leaderboards.tables import Row, Table, to_csv, to_markdown
from rsdg_bench.protocol.task_schema import load_task_file, package_tasks_dir
from rsdg_bench.records.results import ResultStore, recompute


def _task_copy(tmp_path: Path, line: str = "", replacing: str | None = None) -> Path:
    """demo/u2a as a file of one's own, with `line` added (replacing the line that sets `replacing`)."""
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    shutil.copy(package_tasks_dir() / "demo" / "_defaults.yaml", folder / "_defaults.yaml")
    text = (package_tasks_dir() / "demo" / "u2a.yaml").read_text().replace("id: demo/u2a", "id: mine/u2a")
    kept = [entry for entry in text.splitlines() if replacing is None or not entry.startswith(f"{replacing}:")]
    path = folder / "u2a.yaml"
    path.write_text("\n".join([*kept, line]) + "\n")
    return path


def test_a_repeated_yaml_key_is_an_error_naming_it(tmp_path: Path):
    path = _task_copy(tmp_path, "gap: region")
    with pytest.raises(TaskError, match="found the key 'gap' twice"):
        load_task_file(path)


@pytest.mark.parametrize("line", ["checkpoint_key: ../../outside",
                                  "targets: [{dataset: ../elsewhere, domain: arid, split: val}]",
                                  "targets: [{dataset: toyearth, domain: ../../x, split: val}]",
                                  "classes: ../classes/toyearth5"])
def test_a_task_cannot_name_a_path_outside_its_folders(tmp_path: Path, line: str):
    path = _task_copy(tmp_path, line, replacing=line.split(":")[0])
    with pytest.raises(TaskError, match="should match pattern"):
        load_task_file(path)


def _digest_of(data: dict) -> str:
    """The content digest of a record's JSON, computed as anyone could (it detects edits, it signs nothing)."""
    return sha256_bytes(canonical_json({k: v for k, v in data.items() if k not in ("digest", "metrics")}).encode())


@pytest.mark.parametrize("edit", ["smoke", "random_init", "task_hash", "sample_count", "digest_removed"])
def test_a_hand_edit_that_keeps_the_numbers_consistent_is_named_as_an_edit(tmp_path: Path, edit: str):
    store = ResultStore(tmp_path / "results")
    real = store.write(record(key="real", matrix=GOOD, task_hash="h1"))
    smoke = store.write(record(key="smoke", matrix=POOR, smoke={"limit": 2}, model="smoke"))
    data = json.loads((real if edit != "smoke" else smoke).read_text())
    assert data["digest"] == _digest_of(data)  # the rule the module docstring states
    if edit == "smoke":
        data["smoke"] = None
    elif edit == "random_init":
        data["model"]["checkpoint"]["random_init"] = True
    elif edit == "task_hash":
        data["task"]["hash"] = "h2"  # a newer-looking definition would evict the real records
    elif edit == "sample_count":
        data["evaluated"]["num_samples"] = 400
    else:
        del data["digest"]
    edited = tmp_path / "results" / "records" / "demo" / "u2a" / "edited.json"
    edited.write_text(json.dumps(data))
    valid, refused = store.load_valid()
    assert str(edited) in dict(refused)
    assert "was edited" in dict(refused)[str(edited)] or "no content digest" in dict(refused)[str(edited)]
    assert {p.name for p, _ in valid} == {"real.json", "smoke.json"}
    with pytest.raises(RsdgError, match="edited|digest"):
        recompute(edited)  # restoring the metrics never launders an edit


def test_hostile_and_broken_records_are_refused_one_by_one_and_the_board_still_builds(tmp_path: Path,
                                                                                        capsys: pytest.CaptureFixture):
    results = tmp_path / "results"
    store = ResultStore(results)
    (tmp_path / "secret").write_text("do not publish")
    good = store.write(record(key="good", matrix=GOOD, model="$\\frac{1}{$ =cmd|' /C calc'!A0"))

    def variant(key: str, edit) -> Path:
        data = json.loads(good.read_text())
        data["key"] = key
        edit(data)
        data["digest"] = _digest_of(data)  # a digest is not a signature: a hostile record can carry a matching one
        path = good.with_name(f"{key}.json")
        path.write_text(json.dumps(data))
        return path

    slug = next(iter(json.loads(good.read_text())["confusion_matrices"]))
    passwd = {"sample_id": "x", "image": "/etc/passwd", "label": "/etc/passwd", "prediction": "/etc/passwd"}
    climb = {"sample_id": "y", "image": "../../../../secret", "label": "../../../../secret", "prediction": "../../../../secret"}
    variant("passwd", lambda d: d.update(predictions={slug: [passwd]}))
    variant("climb", lambda d: d.update(predictions={slug: [climb]}))
    variant("negative", lambda d: d["confusion_matrices"][slug][0].__setitem__(1, -5))
    variant("no-classes", lambda d: d["task"].update(class_names=[], headline_classes=[]))
    variant("headline", lambda d: d["task"].update(headline_classes=[0, 99]))
    variant("huge-k", lambda d: d.update(per_image_matrices={slug: {"images": 4, "k": 10 ** 6, "entries": []}}))
    variant("images", lambda d: d.update(per_image_matrices={slug: {"images": -1, "k": 5, "entries": []}}))
    variant("index", lambda d: d.update(per_image_matrices={slug: {"images": 1, "k": 5, "entries": [[7, 0, 1]]}}))
    (good.parent / "folder.json").mkdir()
    (good.parent / "dangling.json").symlink_to(tmp_path / "gone.json")

    valid, refused = store.load_valid()
    assert [p.name for p, _ in valid] == ["good.json"]
    reasons = dict(refused)
    assert len(reasons) == 10 and all(why.startswith("refused: ") for why in reasons.values())
    assert "outside" in reasons[str(good.with_name("passwd.json"))]
    assert "outside" in reasons[str(good.with_name("climb.json"))]
    assert "negative count" in reasons[str(good.with_name("negative.json"))]
    assert "10000" in reasons[str(good.with_name("huge-k.json"))] or "1000000" in reasons[str(good.with_name("huge-k.json"))]

    assert main(["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site")]) == 0
    site = tmp_path / "site"
    assert not (site / "predictions").exists()
    assert not any("do not publish" in p.read_text(errors="ignore") for p in site.rglob("*") if p.is_file())
    assert "\\frac" in (site / "tasks" / "demo-u2a.html").read_text()  # the name drawn as plain text

    capsys.readouterr()
    assert main(["results", "show", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert out.count("refused: ") == 10 and "10 of 11 records refused" in out

    scores = list(csv.reader(io.StringIO((site / "scores.csv").read_text())))
    assert scores[1][5].startswith("'$") or scores[1][5].startswith("$")  # a name that is no formula stays
    assert all(not cell.startswith(("=", "+", "@")) for row in scores[1:] for cell in row)


def test_csv_and_markdown_exports_neutralise_what_a_name_could_inject():
    table = Table(id="t", title="t", columns=["=SUM(A1)", "<script>x</script>\nnext"],
                  rows=[Row(label="=cmd|' /C calc'!A0", values=[0.5, 0.25]), Row(label="-2+3", values=[0.1, 0.2]),
                        Row(label="plain", values=[-0.5, 0.3])])
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0][1] == "'=SUM(A1)" and rows[1][0] == "'=cmd|' /C calc'!A0" and rows[2][0] == "'-2+3"
    assert rows[3] == ["plain", "-0.5", "0.3", ""]  # numbers are written as numbers
    markdown = to_markdown(table)
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert len(markdown.splitlines()) == 2 + 3  # the newline in a header does not break the table


class _Returns(torch.nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((x.shape[0], 5, *x.shape[-2:]), dtype=self.dtype)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_logits_that_are_not_floating_point_are_refused(data_root: Path, dtype: torch.dtype):
    contract = rb.InputContract(3, rb.Normalization((0.0,) * 3, (1.0,) * 3))
    with pytest.raises(AdapterError, match="not floating-point scores"):
        rb.evaluate(_Returns(dtype), "demo/u2a", input_contract=contract, data_root=data_root, limit=1,
                    progress=False)


@pytest.mark.parametrize("mean, std", [(0.0, float("inf")), (0.0, float("nan")), (float("nan"), 1.0)])
def test_an_infinite_or_nan_normalization_is_refused(mean: float, std: float):
    with pytest.raises(AdapterError, match="finite"):
        rb.Normalization((mean,), (std,))


def test_a_model_arg_std_of_inf_stops_before_any_prediction(data_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture):
    code = main(["run", "--task", "demo/u2a", "--model", "smp", "--model-arg", "std=inf", "--random-init", "--quiet",
                 "--limit", "1", "--data-root", str(data_root), "--results", str(tmp_path)])
    assert code == 1 and "must be finite" in capsys.readouterr().out


EXITING = '''
import sys
import torch
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization


class Exiting(Adapter):
    kinds = frozenset({"segmentation"})

    def setup(self, task, band_names):
        self.module = torch.nn.Conv2d(len(band_names), task.class_schema.num_classes, 1)

    def input_contract(self):
        return InputContract(3, Normalization((0.0,) * 3, (1.0,) * 3))

    def predict(self, x):
        sys.exit(0)
'''


def test_an_adapter_that_exits_fails_run_and_check_instead_of_ending_them_with_0(data_root: Path, tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture):
    (tmp_path / "exiting.py").write_text(EXITING)
    spec = f"{tmp_path / 'exiting.py'}:Exiting"
    code = main(["run", "--task", "demo/u2a", "--adapter", spec, "--random-init", "--limit", "1", "--quiet",
                 "--data-root", str(data_root), "--results", str(tmp_path / "results")])
    assert code == 1 and "exited (SystemExit 0)" in capsys.readouterr().out
    assert not list((tmp_path / "results").rglob("records/**/*.json"))
    assert main(["adapter", "check", spec]) == 1
    assert "exited (SystemExit 0)" in capsys.readouterr().out


def test_a_site_build_that_fails_leaves_the_previous_site_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from rsdg_bench.leaderboards import render
    from rsdg_bench.leaderboards.aggregate import build_board

    board = build_board([(tmp_path / "r.json", record(key="r", matrix=GOOD))])
    site = tmp_path / "site"
    render.write_site(board, site)
    before = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}

    def broken(board):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(render, "render_per_class_csv", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        render.write_site(build_board([(tmp_path / "s.json", record(key="s", matrix=GOOD, model="other"))]), site)
    after = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["site"]

    elsewhere = tmp_path / "documents"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("years of work")
    with pytest.raises(RsdgError, match="not an rsdg-bench leaderboard site"):
        render.write_site(board, elsewhere)
    assert (elsewhere / "thesis.tex").read_text() == "years of work"


def test_a_publish_cut_between_its_renames_recovers_the_previous_dataset(data_root: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    from rsdg_bench.base import folder_swap
    from rsdg_bench.datasets.prepared import PreparedDataset

    root = tmp_path / "data"
    shutil.copytree(data_root / "toyearth", root / "toyearth")
    shutil.copytree(data_root / "toyearth", tmp_path / "new-toyearth")
    sha = PreparedDataset.open(root, "toyearth").manifest_sha256
    real_replace = folder_swap.os.replace
    calls = []

    def crash_on_second(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed between moving the old dataset aside and renaming the new one in
        real_replace(source, target)

    monkeypatch.setattr(folder_swap, "_exchange", lambda a, b: False)  # the two-rename path, as off Linux
    monkeypatch.setattr(folder_swap.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        folder_swap.swap_in(tmp_path / "new-toyearth", root / "toyearth")
    monkeypatch.setattr(folder_swap.os, "replace", real_replace)
    assert not (root / "toyearth").exists()  # the moment the old code left the dataset unreachable
    assert PreparedDataset.open(root, "toyearth").manifest_sha256 == sha  # ... now put back on the next read


@pytest.mark.parametrize("fault, workers", [("short", 1), ("enospc", 1), ("enospc", 3)])
def test_a_write_the_disk_cut_short_is_an_error_and_a_rerun_completes_the_same_dataset(
        fault: str, workers: int, toyearth_raw: Path, data_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    """The 5th raster's write goes wrong: the file system keeps a third of it without a word, or it reports a
    full disk. The prepare must stop with an error naming the file and the space left (not publish it, not
    journal it); a rerun resumes to the very dataset a clean prepare gives. With writer threads, the error
    comes back from the pool the same way and the rerun (with one thread) gives the same bytes."""
    import errno

    from rsdg_bench.base.errors import DataError
    from rsdg_bench.datasets import prepared
    from rsdg_bench.prep import get_preparer

    real_write, written = prepared.atomic_write_bytes, []

    def faulty(path, data):
        written.append(path)
        if len(written) != 5:
            return real_write(path, data)
        if fault == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data[: len(data) // 3])

    monkeypatch.setattr(prepared, "atomic_write_bytes", faulty)
    root = tmp_path / "data"
    expected = "shorter than the bytes written" if fault == "short" else "No space left on device"
    with pytest.raises(DataError, match=rf"cannot write .*{expected}.*MiB free there"):
        get_preparer("toyearth", workers=workers).prepare(toyearth_raw, root, progress=False)
    assert not (root / "toyearth").exists()
    monkeypatch.setattr(prepared, "atomic_write_bytes", real_write)
    get_preparer("toyearth").prepare(toyearth_raw, root, progress=False)
    clean = prepared.PreparedDataset.open(data_root, "toyearth")
    again = prepared.PreparedDataset.open(root, "toyearth")
    assert again.manifest_sha256 == clean.manifest_sha256 and again.verify_files() == []


@pytest.mark.parametrize("name, pattern", [("deepglobe_road", "*_mask.png"), ("fmow", "rgb_img_5.png"),
                                           ("muds", "*_2018_01.jpg"), ("whu_building", "*.tif")])
def test_a_raw_file_cut_short_is_named_not_decoded_as_zeros(name: str, pattern: str, tmp_path: Path, prepared_fakes):
    """GDAL decodes a truncated PNG or JPEG without complaint (missing rows become zeros): a prepare must
    stop at it, naming it."""
    from rsdg_bench.base.errors import DataError
    from rsdg_bench.prep import get_preparer

    shared = prepared_fakes.raw(name)  # the session's fake, copied: this test breaks a file of it
    raw = Path(shutil.copytree(shared, tmp_path / "raw" / shared.name))
    victim = sorted(Path(raw).rglob(pattern))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataError, match=victim.name):
        get_preparer(name).prepare(raw, tmp_path / "data", progress=False)


def test_a_raw_tile_of_another_dtype_than_the_card_declares_is_refused(tmp_path: Path):
    """A 16-bit tile where the release is 8-bit (another product) used to be stored as uint16 under a card
    saying uint8; every preparer's writer now checks each image against its domain's declared bands."""
    import rasterio

    from rsdg_bench.base.errors import DataError
    from rsdg_bench.datasets.prepared import quiet_georef
    from rsdg_bench.prep import get_preparer

    raw = get_preparer("whu_building").make_fake(tmp_path / "raw")
    victim = sorted(p for p in Path(raw).rglob("*.tif") if "image" in p.parts)[0]
    with quiet_georef(), rasterio.open(victim) as src:  # the fake has no georeference
        pixels, profile = src.read(), src.profile
    profile.update(dtype="uint16")
    with quiet_georef(), rasterio.open(victim, "w", **profile) as dst:
        dst.write(pixels.astype(np.uint16) * 257)
    with pytest.raises(DataError, match=r"3 bands of uint16 .* stores 3 bands of uint8"):
        get_preparer("whu_building").prepare(raw, tmp_path / "data", progress=False)


def test_a_board_row_never_mixes_data_versions_and_newer_records_win_whatever_their_names(tmp_path: Path):
    from rsdg_bench.leaderboards.aggregate import build_board
    from rsdg_bench.records.results import ProvenanceBlock

    def made(key: str, domain: str, manifest: str, date: str, matrix=GOOD):
        rec = record(key=key, matrix=matrix, domain=domain, date=date)
        rec.provenance = ProvenanceBlock.model_validate({**rec.provenance.model_dump(), "dataset_manifest_sha256": manifest})
        return tmp_path / f"{key}.json", rec

    board = build_board([made("z-old-arid", "arid", "old", "2026-01-01T00:00:00+00:00", POOR),
                         made("a-new-arid", "arid", "new", "2026-02-01T00:00:00+00:00"),
                         made("b-old-coarse", "coarse", "old", "2026-01-01T00:00:00+00:00"),
                         made("c-old-coarse-again", "coarse", "old", "2026-01-02T00:00:00+00:00", POOR)])
    [table] = board.tasks
    assert table.scores["unet"]["toyearth/arid/val"].record.endswith("a-new-arid.json")
    assert table.scores["unet"]["toyearth/coarse/val"].record.endswith("c-old-coarse-again.json")
    reasons = dict(board.excluded)
    assert "another version of toyearth/arid/val" in reasons[str(tmp_path / "z-old-arid.json")]
    assert "superseded by a newer record" in reasons[str(tmp_path / "b-old-coarse.json")]


def test_a_dataset_prepared_again_during_a_run_is_refused_not_mixed(trained: dict, data_root: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    from rsdg_bench.datasets.prepared import PreparedDataset
    from rsdg_bench.models.model_spec import ModelSpec
    from rsdg_bench.run import runner
    from rsdg_bench.run.runner import RunSettings, run_tasks

    real_open = PreparedDataset.open
    opened = []

    def re_prepared(data_root, name):  # the second look at the card sees another manifest
        dataset = real_open(data_root, name)
        opened.append(name)
        if len(opened) > 1:
            dataset.card = dataset.card.model_copy(update={"manifest_sha256": "0" * 64})
        return dataset

    monkeypatch.setattr(runner.PreparedDataset, "open", staticmethod(re_prepared))
    spec = ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}, checkpoint=trained["checkpoint"])
    [outcome] = run_tasks([rb.load_task("demo/u2a")], spec, RunSettings(data_root, tmp_path, progress=False, limit=1))
    assert "was prepared again since demo/u2a" in outcome.error and not outcome.written


@pytest.mark.parametrize("flags", [["--iterations", "0"], ["--iterations", "-3"], ["--batch-size", "0"],
                                   ["--lr", "-1"], ["--lr", "nan"]])
def test_training_flags_that_give_no_valid_protocol_are_an_error_not_a_traceback(
        flags: list[str], data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    code = main(["train", "--task", "demo/u2a", "--model", "smp", *flags, "--quiet",
                 "--data-root", str(data_root), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "do not give a valid protocol" in err and "fix:" in err
    assert not (tmp_path / "checkpoints").exists()


def _bomb_png(path: Path, side: int) -> Path:
    """A valid PNG of side² black pixels: a few hundred kilobytes that decode to side² bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(squeeze.compress(row))
    parts.append(squeeze.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_from_its_header_before_any_decoding(tmp_path: Path):
    import resource

    from rsdg_bench.base.errors import DataError
    from rsdg_bench.datasets.prepared import RAW_PIXEL_LIMIT, read_raw_raster

    bomb = _bomb_png(tmp_path / "label.png", 20_000)
    assert bomb.stat().st_size < 2 * 2 ** 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match=r"claims 20000×20000 pixels, more than the 67,108,864"):
        read_raw_raster(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100 * 1024  # KiB: nothing was decoded
    token = RAW_PIXEL_LIMIT.set(20_000 * 20_000)  # what `prepare --max-pixels 400000000` does
    try:
        assert read_raw_raster(_bomb_png(tmp_path / "small.png", 300)).shape == (1, 300, 300)
    finally:
        RAW_PIXEL_LIMIT.reset(token)


def test_each_dataset_caps_its_raw_image_size_and_the_option_raises_it(toyearth_raw: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture):
    args = ["prepare", "toyearth", "--raw", str(toyearth_raw), "--quiet", "--data-root", str(tmp_path)]
    assert main([*args, "--max-pixels", "1000"]) == 2
    err = capsys.readouterr().err
    assert "claims 256×256 pixels, more than the 1,000" in err and "--max-pixels" in err
    with pytest.raises(SystemExit):  # argparse: a limit of 0 is a usage error
        main([*args, "--max-pixels", "0"])
    assert "--max-pixels: 0 is not above 0" in capsys.readouterr().err
    assert main([*args, "--max-pixels", str(256 * 256)]) == 0


def test_an_archive_that_would_unpack_beyond_its_release_is_refused_before_extracting(tmp_path: Path,
                                                                                      capsys: pytest.CaptureFixture,
                                                                                      prepared_fakes):
    import zipfile

    shared = prepared_fakes.archive("toyearth")  # the session's download fake, copied: this test appends to it
    archive = tmp_path / "zip" / shared.name
    archive.parent.mkdir()
    shutil.copyfile(shared, archive)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("ToyEarth/zeros.bin", "w", force_zip64=True) as member:
            for _ in range(96):
                member.write(bytes(2 ** 20))  # 96 MiB of zeros, about 100 KiB packed
    assert archive.stat().st_size < 8 * 2 ** 20
    root = tmp_path / "data"
    args = ["prepare", "toyearth", "--raw", str(archive), "--no-checksum", "--quiet", "--data-root", str(root)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "would unpack to 0.10 GiB (largest member ToyEarth/zeros.bin" in err and "--max-raw-gib" in err
    assert not any(root.rglob("zeros.bin"))
    assert main([*args, "--max-raw-gib", "1"]) == 0  # the release really is that large: the option lets it through


@pytest.mark.parametrize("content", ["{not json", '{"files": 3}', '{"files": [{"path": "../../etc/passwd", '
                                     '"sha256": "00"}]}', '{"version": 1}'])
def test_a_malformed_release_manifest_is_an_error_naming_it(toyearth_raw: Path, tmp_path: Path, content: str,
                                                            capsys: pytest.CaptureFixture):
    raw = tmp_path / "raw"
    shutil.copytree(toyearth_raw, raw / toyearth_raw.name)
    manifest = raw / toyearth_raw.name / "toyearth.json"
    manifest.write_text(content)
    assert main(["prepare", "toyearth", "--raw", str(raw), "--quiet", "--data-root", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"{manifest} is not a valid ToyEarth release manifest" in err and "fix:" in err


@pytest.mark.parametrize("content, says", [(b"hello world\n", "a text file (it starts 'hello world"),
                                           (b"", "the file is empty")])
def test_a_checkpoint_that_is_not_one_says_what_it_is(tmp_path: Path, content: bytes, says: str):
    from rsdg_bench.models.checkpoints import read_state_dict

    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(AdapterError, match="cannot read checkpoint") as caught:
        read_state_dict(path)
    assert says in caught.value.problem and "101" not in caught.value.problem


def test_a_colour_mask_is_refused_not_read_by_its_first_band(tmp_path: Path):
    """LoveDA's masks are single-band indices; a 3-band file there used to be decoded from band 0 alone."""
    import rasterio

    from rsdg_bench.base.errors import DataError
    from rsdg_bench.datasets.prepared import quiet_georef
    from rsdg_bench.prep import get_preparer

    raw = get_preparer("loveda").make_fake(tmp_path / "raw")
    victim = sorted(p for p in Path(raw).rglob("*.png") if "masks_png" in p.parts)[0]
    with quiet_georef(), rasterio.open(victim) as src:
        mask, profile = src.read(), src.profile
    profile.update(count=3)
    with quiet_georef(), rasterio.open(victim, "w", **profile) as dst:
        dst.write(np.repeat(mask, 3, axis=0))
    with pytest.raises(DataError, match=rf"{victim} is uint8 with 3 bands; a mask of class indices is one band"):
        get_preparer("loveda").prepare(raw, tmp_path / "data", progress=False)


@pytest.mark.parametrize("collector_on", [True, False])
def test_parsing_a_record_leaves_the_cycle_collector_as_it_found_it(collector_on: bool):
    """Records are parsed with the collector paused (a third of a large leaderboard build went to it); a record
    that parses, one that is not JSON and one that is not a record must all give it back as it was."""
    import gc

    from rsdg_bench.base.errors import ResultsError
    from rsdg_bench.records.results import parse_record_json

    valid = record(key="x", matrix=GOOD).model_dump_json().encode()
    (gc.enable if collector_on else gc.disable)()
    try:
        parsed, _ = parse_record_json(valid, "valid.json")
        assert parsed.key == "x" and gc.isenabled() is collector_on
        for data in (b'{"key": [1, 2', b'{"schema_version": 1}'):
            with pytest.raises(ResultsError, match="bad.json is not a valid result record"):
                parse_record_json(data, "bad.json")
            assert gc.isenabled() is collector_on
    finally:
        gc.enable()


METRIC_EDITS = {  # a hand edit of what the digest leaves out (the recomputable metrics), in every shape
    "string": lambda block: block.update(miou="84.4"),
    "bool": lambda block: block.update(oa=True),
    "list": lambda block: block.update(aa=[0.5]),
    "nested": lambda block: block.update(mf1={"value": 0.5}),
    "huge": lambda block: block.update(miou=1e308 * 10),
    "missing": lambda block: block.pop("miou"),
    "per-class string": lambda block: block.update(per_class="everything"),
    "per-class entry": lambda block: block["per_class"].update(building=[1, 2]),
    "conventions string": lambda block: block.update(other_conventions="smp"),
    "conventions list": lambda block: block.update(other_conventions=[1]),
    "convention string": lambda block: block["other_conventions"].update(smp="0.9"),
    "convention value": lambda block: block["other_conventions"]["smp"].update(miou="high"),
    "convention name": lambda block: block.update(convention=["smp"]),
    "group string": lambda block: block.update(group_acc="all", domain_acc="x"),
    "group entry": lambda block: block.update(group_acc={"urban": "0.5"}),
}


@pytest.mark.parametrize("edit", sorted(METRIC_EDITS))
def test_a_hand_edited_metric_is_refused_by_name_and_never_a_traceback(edit: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture):
    """Metrics lie outside the digest (they are recomputed from the matrices), so an edit of them is caught by
    the check against the matrices, whatever shape it takes: `results show` lists the record as refused, the
    board builds from the rest, nothing ends in a traceback, and `results recompute` makes the record whole."""
    results = tmp_path / "results"
    store = ResultStore(results)
    store.write(record(key="good", matrix=GOOD))  # the record that stays
    edited = store.write(record(key="edited", matrix=POOR, task_id="demo/b"))
    data = json.loads(edited.read_text())
    written = copy.deepcopy(data["metrics"])
    METRIC_EDITS[edit](next(iter(data["metrics"].values())))
    edited.write_text(json.dumps(data))

    assert main(["results", "show", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert f"refused: {edited}" in out and "1 of 2 records refused" in out
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site"), "--quiet"]) == 0
    assert "1 records left out" in capsys.readouterr().out
    with pytest.raises(RsdgError, match="edited|stored"):
        store.load(edited)
    recompute(edited)  # the metrics rewritten from the matrices: the record is whole again
    assert store.load(edited).metrics == written
