"""A prepared dataset exported as a Hub dataset repo reads back to the same files and manifest sha256."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rsdg_bench.base.errors import DataError
from rsdg_bench.cli import main
from rsdg_bench.datasets.prepared import CARD_FILE, MANIFEST_FILE, PreparedDataset
from rsdg_bench.hub.hub_dataset import META_DIR, export_prepared, import_prepared, redistributable


@pytest.fixture(scope="module")
def exported(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ToyEarth exported once for this module's tests (an export takes about 1.5 s): read it; a test that
    changes it takes `export_copy`. The CLI's own export is the round-trip test's."""
    return export_prepared(data_root, "toyearth", tmp_path_factory.mktemp("exported") / "hub")


@pytest.fixture
def export_copy(exported: Path, tmp_path: Path) -> Path:
    """A private copy of `exported`, for a test that tampers with it."""
    return Path(shutil.copytree(exported, tmp_path / "hub"))


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


def test_the_export_reads_with_datasets(exported: Path, data_root: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets", reason="install the [hub] extra")
    arid = datasets.load_dataset(str(exported), "arid", split="val",
                                 cache_dir=str(tmp_path / "hf-cache"))  # not the shared cache: see test_hub_export
    assert arid.num_rows == 4 and set(arid.column_names) >= {"sample_id", "image_bytes", "label_bytes", "image_sha256"}
    assert arid.features["target"].names == ["bare", "building", "road", "vegetation", "water"]  # a ClassLabel
    # what the Hub's viewer shows: decoded Image features, the label mask with the stored class indices exactly
    assert isinstance(arid.features["image_preview"], datasets.Image) and isinstance(arid.features["label_mask"],
                                                                                      datasets.Image)
    prepared = PreparedDataset.open(data_root, "toyearth")
    rows = prepared.rows("arid", "val").set_index("sample_id")
    for item in arid:
        row = rows.loc[item["sample_id"]]
        label = prepared.read_label(row)
        assert item["image_preview"].mode == "RGB" and item["image_preview"].size == (label.shape[1], label.shape[0])
        assert np.array_equal(np.asarray(item["label_mask"]), label)


def test_a_licence_that_does_not_allow_redistribution_is_refused_and_a_tampered_export_too(
        export_copy: Path, data_root: Path, tmp_path: Path):
    assert redistributable("CC0-1.0") and redistributable("CC BY-NC-SA 4.0") and redistributable("MIT")
    for licence in ("CC BY-NC-ND 4.0", "CC BY 4.0 (UNVERIFIED)", "research use (CASID terms)",
                    "FMoW Challenge Public License"):
        assert not redistributable(licence), licence
    out = export_copy
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


def test_a_repeated_row_cannot_stand_in_for_a_missing_sample(export_copy: Path, tmp_path: Path):
    """An export whose Parquet repeats one sample where another is missing holds as many rows as the manifest
    has samples; it is refused, naming the repeated sample, and nothing is published."""
    out = export_copy
    part = next((out / "data").glob("*.parquet"))
    table = pq.read_table(part).to_pylist()
    assert len(table) >= 2
    table[1] = dict(table[0])  # the second sample dropped, the first written twice
    pq.write_table(pa.Table.from_pylist(table), part)
    with pytest.raises(DataError, match=f"sample '{table[0]['sample_id']}' appears more than once"):
        import_prepared(out, tmp_path / "data", "toyearth")
    assert not (tmp_path / "data" / "toyearth").exists()


def _recard(out: Path) -> None:
    """List the manifest's new sha256 in the card, as a hostile export would (the card is not signed)."""
    import json

    from rsdg_bench.base.io import sha256_file

    card = out / META_DIR / CARD_FILE
    data = json.loads(card.read_text())
    data["manifest_sha256"] = sha256_file(out / META_DIR / MANIFEST_FILE)
    card.write_text(json.dumps(data))


def _rewrite_part(out: Path, change) -> None:
    part = next((out / "data").glob("*.parquet"))
    rows = pq.read_table(part).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), part)


HOSTILE_EXPORTS = {
    "card not JSON": (lambda out: (out / META_DIR / CARD_FILE).write_text("{"), "is not a dataset card"),
    "card of another shape": (lambda out: (out / META_DIR / CARD_FILE).write_text('{"name": 5}'),
                              "is not a dataset card"),
    "manifest not Parquet": (lambda out: ((out / META_DIR / MANIFEST_FILE).write_bytes(b"PAR1 not really"),
                                          _recard(out)), "is not a readable Parquet manifest"),
    "manifest without its hashes": (lambda out: (pq.write_table(pa.table({"sample_id": ["a"]}),
                                                                out / META_DIR / MANIFEST_FILE), _recard(out)),
                                    "has no column image, image_sha256, label, label_sha256"),
    "data part not Parquet": (lambda out: next((out / "data").glob("*.parquet")).write_bytes(b"garbage"),
                              "is not a readable Parquet file"),
    "image bytes missing": (lambda out: _rewrite_part(out, lambda rows: [row.pop("image_bytes") for row in rows]),
                            "does not match its sha256"),
    "sample id unknown": (lambda out: _rewrite_part(out, lambda rows: rows[0].update(sample_id="../x")),
                          "sample '../x' is not in the manifest"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EXPORTS))
def test_a_malformed_export_is_an_error_naming_it_and_leaves_nothing(case: str, export_copy: Path, tmp_path: Path,
                                                                     capsys):
    """A Hub export is data from elsewhere: a card, manifest or Parquet part of any shape ends in one `error:`
    line through the CLI, never a traceback, and neither the dataset nor its staging folder is left."""
    out = export_copy
    change, says = HOSTILE_EXPORTS[case]
    change(out)
    with pytest.raises(DataError, match=None) as caught:
        import_prepared(out, tmp_path / "data", "toyearth")
    assert says in str(caught.value), str(caught.value)
    left = sorted(p.name for p in (tmp_path / "data").iterdir()) if (tmp_path / "data").exists() else []
    assert left == [], left
    capsys.readouterr()
    assert main(["prepare", "toyearth", "--from-hf", str(out), "--data-root", str(tmp_path / "data")]) == 2
    assert "Traceback" not in capsys.readouterr().err
