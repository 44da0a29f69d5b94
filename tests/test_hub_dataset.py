"""A prepared dataset exported as a Hub dataset repo reads back to the same files and manifest sha256."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rsdg_bench.cli import main
from rsdg_bench.errors import DataError
from rsdg_bench.hub_dataset import export_prepared, import_prepared, redistributable
from rsdg_bench.prepared import PreparedDataset


def test_an_exported_prepared_dataset_round_trips_to_the_same_manifest(data_root: Path, tmp_path: Path, capsys):
    assert main(["export", "toyearth", "--format", "hf", "--out", str(tmp_path / "hub"),
                 "--data-root", str(data_root)]) == 0
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "license: cc0-1.0" in card and "config_name: urban" in card and "0 bare" in card
    assert main(["prepare", "toyearth", "--from-hf", str(tmp_path / "hub"), "--data-root", str(tmp_path / "data")]) == 0
    original, restored = PreparedDataset.open(data_root, "toyearth"), PreparedDataset.open(tmp_path / "data", "toyearth")
    assert restored.manifest_sha256 == original.manifest_sha256 and restored.verify_files() == []
    row = original.rows("arid", "val").iloc[0]
    assert (restored.read_image(row) == original.read_image(row)).all()
    assert "restored toyearth" in capsys.readouterr().out


def test_the_export_reads_with_datasets(data_root: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets", reason="install the [hub] extra")
    export_prepared(data_root, "toyearth", tmp_path / "hub")
    arid = datasets.load_dataset(str(tmp_path / "hub"), "arid", split="val",
                                 cache_dir=str(tmp_path / "hf-cache"))  # not the shared cache: see test_hub_export
    assert arid.num_rows == 4 and set(arid.column_names) >= {"sample_id", "image_bytes", "label_bytes", "image_sha256"}
    assert arid.features["target"].names == ["bare", "building", "road", "vegetation", "water"]  # a ClassLabel


def test_a_licence_that_does_not_allow_redistribution_is_refused_and_a_tampered_export_too(data_root: Path,
                                                                                           tmp_path: Path):
    assert redistributable("CC0-1.0") and redistributable("CC BY-NC-SA 4.0") and redistributable("MIT")
    for licence in ("CC BY-NC-ND 4.0", "CC BY 4.0 (UNVERIFIED)", "research use (CASID terms)",
                    "FMoW Challenge Public License"):
        assert not redistributable(licence), licence
    out = export_prepared(data_root, "toyearth", tmp_path / "hub")
    part = next((out / "data").glob("*.parquet"))
    table = pq.read_table(part).to_pylist()
    image = table[0]["image_bytes"]
    table[0]["image_bytes"] = image[:-1] + bytes([image[-1] ^ 0xFF])  # one byte changed (a TIFF may end in 0)
    pq.write_table(pa.Table.from_pylist(table), part)
    with pytest.raises(DataError, match="does not match its sha256 in the manifest"):
        import_prepared(out, tmp_path / "data", "toyearth")
    assert not (tmp_path / "data" / "toyearth").exists()
    with pytest.raises(DataError, match="holds 'toyearth', not 'loveda'"):
        import_prepared(out, tmp_path / "data", "loveda")
    assert main(["export", "nonexistent", "--out", str(tmp_path / "x"), "--data-root", str(data_root)]) == 2


def test_a_repeated_row_cannot_stand_in_for_a_missing_sample(data_root: Path, tmp_path: Path):
    """An export whose Parquet repeats one sample where another is missing holds as many rows as the manifest
    has samples; it is refused, naming the repeated sample, and nothing is published."""
    out = export_prepared(data_root, "toyearth", tmp_path / "hub")
    part = next((out / "data").glob("*.parquet"))
    table = pq.read_table(part).to_pylist()
    assert len(table) >= 2
    table[1] = dict(table[0])  # the second sample dropped, the first written twice
    pq.write_table(pa.Table.from_pylist(table), part)
    with pytest.raises(DataError, match=f"sample '{table[0]['sample_id']}' appears more than once"):
        import_prepared(out, tmp_path / "data", "toyearth")
    assert not (tmp_path / "data" / "toyearth").exists()
