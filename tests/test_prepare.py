"""Preparing ToyEarth from its raw layout: format, checks, bad input, crash and resume."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from rsdg_bench.base.errors import DataError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.datasets.prepared import PreparedDataset, PreparedWriter, quiet_georef, read_raster
from rsdg_bench.prep import get_preparer

PREP = get_preparer("toyearth")


def test_prepared_layout_card_and_manifest(data_root: Path):
    ds = PreparedDataset.open(data_root, "toyearth")
    assert ds.card.split_counts == {d: {"train": 32, "val": 4} for d in ("arid", "coarse", "irrg", "urban")}
    assert ds.band_names("irrg") == ["nir", "red", "green"]
    assert ds.card.manifest_sha256 == sha256_file(data_root / "toyearth" / "manifest.parquet")
    frame = gpd.read_parquet(data_root / "toyearth" / "manifest.parquet")   # GeoParquet with footprints
    assert frame.crs.to_string() == "EPSG:32632" and frame.geometry.notna().all()
    assert ds.verify_files() == []
    assert not (data_root / ".toyearth.partial").exists()


def test_manifest_class_counts_and_hashes_match_the_files(data_root: Path):
    ds = PreparedDataset.open(data_root, "toyearth")
    for _, row in ds.manifest.sample(12, random_state=0).iterrows():
        label = ds.read_label(row)
        assert label.dtype == np.uint8 and label.shape == (row["height"], row["width"])
        counts = np.bincount(label.ravel(), minlength=256)
        assert list(row["class_counts"]) == counts[:5].tolist()
        assert counts[5:255].sum() == 0
        assert sha256_file(ds.root / row["image"]) == row["image_sha256"]


def test_train_tiles_reassemble_the_raw_scene_with_labels_mapped(data_root: Path, toyearth_raw: Path):
    ds = PreparedDataset.open(data_root, "toyearth")
    rows = ds.rows("urban", "train")
    rows = rows[rows["source_file"] == "urban/train/images/urban_train_003.tif"]
    raw_image = read_raster(toyearth_raw / "urban/train/images/urban_train_003.tif")
    raw_colours = read_raster(toyearth_raw / "urban/train/labels/urban_train_003.png").transpose(1, 2, 0)
    assert len(rows) == 4
    for _, row in rows.iterrows():
        x0, y0, x1, y1 = row["window"]
        np.testing.assert_array_equal(ds.read_image(row), raw_image[:, y0:y1, x0:x1])
        label = ds.read_label(row)
        colours = raw_colours[y0:y1, x0:x1]
        assert np.all(label[(colours == [220, 40, 40]).all(-1)] == 1)   # building colour → index 1
        assert np.all(label[(colours == [0, 0, 0]).all(-1)] == 255)     # no-data → ignore
    with rasterio.open(ds.root / rows.iloc[0]["image"]) as src:
        assert src.crs.to_string() == "EPSG:32632"


def test_prepare_from_the_zip_archive(prepared_fakes):
    archive = prepared_fakes.archive("toyearth")  # the download, made once per run
    assert archive.name == "ToyEarth-v1.zip"
    data = prepared_fakes.from_archive("toyearth")  # prepared from it once per run (test_contracts checks it too)
    card = json.loads((data / "toyearth" / "dataset.json").read_text())
    assert not (data / ".toyearth.raw").exists()      # the extraction is removed after success
    assert card["source_archives"][0]["name"] == "ToyEarth-v1.zip"
    assert card["source_archives"][0]["sha256"] == sha256_file(archive)


def test_truncated_archive_is_a_clear_error(prepared_fakes, tmp_path: Path):
    whole = prepared_fakes.archive("toyearth")
    archive = tmp_path / "dl" / whole.name
    archive.parent.mkdir()
    archive.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match="ToyEarth-v1.zip"):
        PREP.prepare(archive, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "toyearth").exists()


def test_wrong_folder_names_what_was_expected(tmp_path: Path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DataError, match="ToyEarth/.*ToyEarth-v1.zip"):
        PREP.prepare(tmp_path / "something", tmp_path / "data", progress=False)


@pytest.fixture
def raw_copy(tmp_path: Path, toyearth_raw: Path) -> Path:
    copy = tmp_path / "ToyEarth"
    shutil.copytree(toyearth_raw, copy)
    return copy


def test_missing_file_is_named(raw_copy: Path, tmp_path: Path):
    (raw_copy / "arid/val/labels/arid_val_002.png").unlink()
    with pytest.raises(DataError, match="arid_val_002.png"):
        PREP.prepare(raw_copy, tmp_path / "data", progress=False)


def test_modified_file_fails_its_checksum(raw_copy: Path, tmp_path: Path):
    path = raw_copy / "urban/val/images/urban_val_001.tif"
    with rasterio.open(path, "r+") as dst:
        band = dst.read(1)
        band[0, 0] ^= 1
        dst.write(band, 1)
    with pytest.raises(DataError, match="urban_val_001.tif does not match its sha256"):
        PREP.prepare(raw_copy, tmp_path / "data", progress=False)


def test_unknown_label_colour_is_reported_with_file_and_position(raw_copy: Path, tmp_path: Path):
    path = raw_copy / "coarse/val/labels/coarse_val_000.png"
    colours = read_raster(path)
    colours[:, 5, 7] = (1, 2, 3)
    with quiet_georef(), rasterio.open(path, "w", driver="PNG", height=colours.shape[1], width=colours.shape[2],
                                       count=3, dtype="uint8") as dst:
        dst.write(colours)
    release = json.loads((raw_copy / "toyearth.json").read_text())   # keep the checksum honest: test the colour check
    for entry in release["files"]:
        if entry["path"] == "coarse/val/labels/coarse_val_000.png":
            entry["sha256"] = sha256_file(path)
    (raw_copy / "toyearth.json").write_text(json.dumps(release))
    with pytest.raises(DataError, match=r"coarse_val_000.png: colour \(1, 2, 3\) at \(row 5, col 7\)"):
        PREP.prepare(raw_copy, tmp_path / "data", progress=False)


def test_crash_leaves_nothing_published_and_the_rerun_resumes(raw_copy: Path, tmp_path: Path, monkeypatch,
                                                                data_root: Path):
    calls = {"n": 0}
    original_add = PreparedWriter.add

    def crashing_add(self, sample):
        calls["n"] += 1
        if calls["n"] == 60:
            raise KeyboardInterrupt("simulated crash")
        return original_add(self, sample)

    monkeypatch.setattr(PreparedWriter, "add", crashing_add)
    out_root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        PREP.prepare(raw_copy, out_root, progress=False)
    assert not (out_root / "toyearth").exists() and (out_root / ".toyearth.partial").exists()
    with pytest.raises(DataError, match="interrupted"):
        PreparedDataset.open(out_root, "toyearth")

    monkeypatch.setattr(PreparedWriter, "add", original_add)
    resumed = []
    original_init = PreparedWriter.__init__

    def spy_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        resumed.append(self.resumed_count)

    monkeypatch.setattr(PreparedWriter, "__init__", spy_init)
    PREP.prepare(raw_copy, out_root, progress=False)
    assert resumed == [59]
    fresh = PreparedDataset.open(data_root, "toyearth").manifest
    again = PreparedDataset.open(out_root, "toyearth").manifest
    assert again["image_sha256"].tolist() == fresh["image_sha256"].tolist()
    assert again["label_sha256"].tolist() == fresh["label_sha256"].tolist()


def test_rerun_over_a_finished_dataset_replaces_it_cleanly(raw_copy: Path, tmp_path: Path):
    out_root = tmp_path / "data"
    PREP.prepare(raw_copy, out_root, progress=False)
    first = (out_root / "toyearth" / "dataset.json").read_text()
    PREP.prepare(raw_copy, out_root, progress=False)
    card = json.loads((out_root / "toyearth" / "dataset.json").read_text())
    assert json.loads(first)["manifest_sha256"] == card["manifest_sha256"]
    assert not any(p.name.endswith((".partial", ".old")) for p in out_root.iterdir())


def test_tampered_manifest_is_refused(tmp_path: Path, raw_copy: Path):
    out = PREP.prepare(raw_copy, tmp_path / "data", progress=False)
    with open(out / "manifest.parquet", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(DataError, match="does not match the sha256"):
        PreparedDataset.open(tmp_path / "data", "toyearth")


def test_opening_a_dataset_never_prepared_says_how(tmp_path: Path):
    with pytest.raises(DataError, match="rsdg-bench prepare toyearth --raw"):
        PreparedDataset.open(tmp_path, "toyearth")


def test_fake_is_deterministic_from_its_seed(toyearth_raw: Path, prepared_fakes, tmp_path: Path):
    # the session's fake (default seed 0) made a second time: the download fake, made by a call of its own
    again = json.loads(zipfile.ZipFile(prepared_fakes.archive("toyearth")).read("ToyEarth/toyearth.json"))["files"]
    other = PREP.make_fake(tmp_path / "c", seed=4)
    digest = lambda root: json.loads((root / "toyearth.json").read_text())["files"]  # noqa: E731
    assert digest(toyearth_raw) == again != digest(other)


def test_zip_with_path_traversal_is_refused(tmp_path: Path):
    bad = tmp_path / "ToyEarth-v1.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(DataError, match="unsafe path"):
        PREP.prepare(bad, tmp_path / "data", progress=False)


def test_a_failed_prepare_keeps_the_extraction_for_the_rerun(prepared_fakes, tmp_path: Path, monkeypatch):
    from rsdg_bench.prep import base as prep_base

    archive = prepared_fakes.archive("toyearth")  # read, never written: the extraction goes under the data root
    extractions = []
    real_extract = prep_base.extract_archive

    def counting_extract(*args):
        extractions.append(args[0])
        return real_extract(*args)

    monkeypatch.setattr(prep_base, "extract_archive", counting_extract)
    monkeypatch.setattr(PreparedWriter, "finish", lambda *a, **k: (_ for _ in ()).throw(DataError("boom")))
    with pytest.raises(DataError, match="boom"):
        PREP.prepare(archive, tmp_path / "data", progress=False)
    assert (tmp_path / "data" / ".toyearth.raw" / "ToyEarth-v1" / "ToyEarth").is_dir()
    monkeypatch.undo()
    monkeypatch.setattr(prep_base, "extract_archive", counting_extract)
    PREP.prepare(archive, tmp_path / "data", progress=False)
    assert len(extractions) == 1 and not (tmp_path / "data" / ".toyearth.raw").exists()


def test_a_sample_id_given_twice_in_a_dataset_is_an_error_not_a_lost_sample(tmp_path: Path):
    import numpy as np

    from rsdg_bench.datasets.classes import load_class_schema
    from rsdg_bench.datasets.prepared import SampleArrays

    writer = PreparedWriter(tmp_path, "twice", load_class_schema("toyearth5"), fingerprint={"v": 1})
    pixels = np.zeros((3, 4, 4), np.uint8)
    sample = SampleArrays(sample_id="urban_7", domain="urban", split="train", image=pixels,
                          label=np.zeros((4, 4), np.uint8), source_file="Train/Urban/7.png", window=(0, 0, 4, 4))
    writer.add(sample)
    writer.add(sample)  # the same sample again (a resumed preparer redoing a tile) replaces its row
    other = SampleArrays(sample_id="urban_7", domain="urban", split="val", image=pixels,
                         label=np.zeros((4, 4), np.uint8), source_file="Val/Urban/7.png", window=(0, 0, 4, 4))
    with pytest.raises(DataError, match="'urban_7' of urban/val .* was already given to urban/train"):
        writer.add(other)


def test_the_colour_table_decodes_as_a_colour_by_colour_lookup_and_counts_strays_exactly():
    from rsdg_bench.prep.labels import decode_colour_label

    rng = np.random.default_rng(3)
    palette = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 0, 0): 255, (7, 8, 9): 254}  # 254 and 255 are classes here
    colours = np.array([*palette, (1, 2, 3), (0, 0, 254)], dtype=np.uint8)  # the last two are off-palette
    rgb = colours[rng.choice(len(colours), (300, 700), p=[0.3, 0.3, 0.2, 0.19995, 0.00003, 0.00002])]
    indices, stray = decode_colour_label(rgb, palette, "x.tif", tolerance=1e-3)
    expected = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    for colour, index in palette.items():
        expected[(rgb == colour).all(-1)] = index
    off = ~np.isin(rgb.view([("c", np.uint8, 3)])[..., 0], np.array(list(palette), dtype=np.uint8).view(
        [("c", np.uint8, 3)])[:, 0])
    assert stray == int(off.sum()) > 0 and np.array_equal(indices, expected)
    with pytest.raises(DataError, match=r"x.tif: colour \(\d+, \d+, \d+\) at \(row \d+, col \d+\)"):
        decode_colour_label(rgb, palette, "x.tif", tolerance=0.0)


def test_writer_threads_write_the_very_bytes_one_thread_writes(ce_raw: dict[str, Path], ce_data: Path,
                                                                tmp_path: Path):
    root = tmp_path / "data"
    get_preparer("potsdam", workers=3).prepare(ce_raw["potsdam"], root, progress=False)
    serial, pooled = PreparedDataset.open(ce_data, "potsdam"), PreparedDataset.open(root, "potsdam")
    assert pooled.manifest_sha256 == serial.manifest_sha256 and pooled.verify_files() == []
    files = sorted(p.relative_to(serial.root) for p in serial.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(pooled.root) for p in pooled.root.rglob("*") if p.is_file())
    differ = [f for f in files if (serial.root / f).read_bytes() != (pooled.root / f).read_bytes()]
    assert differ == [Path("dataset.json")]  # its creation time, as between any two prepares



@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_raw_jpeg_is_decoded_as_the_papers_pipelines_decode_it(tmp_path: Path, mode: str):
    """libjpeg-turbo (Pillow; torchvision.io, which CoDEX reads with, and cv2, which mmseg reads with, give the
    same bits), not GDAL: on a 4:2:0 camera-like JPEG GDAL's chroma upsampling gives other pixel values."""
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    from rsdg_bench.datasets.prepared import read_raw_raster

    rng = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(rng.normal(0, 8, (64, 96, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    path = tmp_path / "camera.jpg"
    image = Image.fromarray(smooth)
    (image if mode == "RGB" else image.convert("L")).save(path, quality=90, subsampling=2)  # 4:2:0, as cameras
    decoded = read_raw_raster(path)
    reference = decode_jpeg(read_file(str(path))).numpy()
    assert decoded.dtype == np.uint8 and decoded.shape == reference.shape == ((3 if mode == "RGB" else 1), 64, 96)
    assert np.array_equal(decoded, reference)
    if mode == "RGB":
        with quiet_georef(), rasterio.open(path) as src:
            assert not np.array_equal(src.read(), reference)  # what this guards against: GDAL's decode differs
    path.write_bytes(b"\x89PNG" + path.read_bytes()[4:])  # named .jpg, not a JPEG: named, not decoded as one
    with pytest.raises(DataError, match="camera.jpg"):
        read_raw_raster(path)
