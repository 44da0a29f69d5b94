"""A prepared dataset as a Hugging Face Hub dataset repo, and back (`export NAME --format hf`,
`prepare NAME --from-hf DIR`).

Only a dataset whose card licence clearly allows redistribution is exported (`redistributable`): CC0, MIT,
or a Creative Commons BY licence without NoDerivatives (the prepared data is a derivative: tiled, relabelled),
and never one marked UNVERIFIED. The repo holds

- `data/<domain>-<split>.parquet`: one row per sample with `sample_id`, `domain`, `split`, the stored paths,
  `image` and `label` as the prepared files' bytes (GeoTIFF or PNG, exactly as stored), their sha256, size,
  group and image-level target; and two `datasets` Image features the Hub's viewer shows and
  `datasets.load_dataset(DIR, "<domain>")` decodes to PIL images: `image_preview` (a display PNG of the
  first three bands, stretched; for the eye, not for numbers) and `label_mask` (a PNG of the per-pixel class
  indices, 255 = ignore, exactly as stored; the first date of a time series; none for image-level labels);
- `rsdg/dataset.json` and `rsdg/manifest.parquet`: the card and the manifest, byte for byte;
- `README.md`: the card for the Hub (licence, citation, class names, splits, `configs:`, and `dataset_info`
  features, the image-level `target` as a `ClassLabel` of the domain's class names).

`--from-hf` writes every file back to its manifest path, checks each against the manifest's sha256, and
publishes the folder atomically: the same bytes, so the same manifest sha256 (the data version records name).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from rsdg_bench.base.errors import DataError, RsdgError
from rsdg_bench.base.io import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file
from rsdg_bench.datasets.prepared import CARD_FILE, MANIFEST_FILE, DatasetCard, PreparedDataset
from rsdg_bench.datasets.quicklook import png_bytes, preview

META_DIR = "rsdg"
_OPEN_LICENCE = re.compile(r"^(CC0(-1\.0)?|MIT|CC BY(-NC)?(-SA)? \d\.\d)$")
_COLUMNS = ("sample_id", "domain", "split", "image", "label", "image_sha256", "label_sha256", "height", "width",
            "group", "target")
_FEATURES = (("sample_id", "string"), ("domain", "string"), ("split", "string"), ("image", "string"),
             ("label", "string"), ("image_sha256", "string"), ("label_sha256", "string"), ("height", "int64"),
             ("width", "int64"), ("group", "string"), ("image_bytes", "binary"), ("label_bytes", "binary"),
             ("image_preview", "image"), ("label_mask", "image"))
# `datasets`' Image feature as Parquet stores it: the encoded file's bytes, and a path (none here)
_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def redistributable(licence: str) -> bool:
    """Whether a card's licence clearly allows publishing the prepared data (see the module docstring)."""
    return bool(_OPEN_LICENCE.match(licence.strip()))


def export_prepared(data_root: Path, name: str, out: Path) -> Path:
    """Write the prepared dataset `name` as a Hub dataset repo folder `out`; return it."""
    dataset = PreparedDataset.open(data_root, name)
    card = dataset.card
    if not redistributable(card.licence):
        raise RsdgError(f"{name}'s licence is {card.licence!r}, which does not clearly allow publishing prepared "
                        "(derived) data", "share the download instructions instead; rsdg-bench exports only CC0, MIT "
                        "and CC BY licences without NoDerivatives, and none marked UNVERIFIED")
    changed = dataset.verify_files()
    if changed:
        raise DataError(f"{len(changed)} prepared files of {name} differ from its manifest (e.g. {changed[0]})",
                        f"re-run `rsdg-bench prepare {name}` before exporting")
    out = Path(out)
    manifest = dataset.manifest
    for (domain, split), rows in manifest.groupby(["domain", "split"], sort=True):
        columns = {c: rows[c].tolist() if c in rows.columns else [None] * len(rows) for c in _COLUMNS}
        columns["target"] = [None if t is None or t != t else int(t) for t in columns["target"]]  # NaN → null
        columns["group"] = [g if isinstance(g, str) else None for g in columns["group"]]
        columns["image_bytes"] = [(dataset.root / rel).read_bytes() for rel in rows["image"]]
        columns["label_bytes"] = [(dataset.root / rel).read_bytes() if isinstance(rel, str) else None
                                  for rel in rows["label"]]
        columns["image_preview"], columns["label_mask"] = _viewable(dataset, rows)
        types = {"height": pa.int64(), "width": pa.int64(), "target": pa.int64(), "image_bytes": pa.binary(),
                 "label_bytes": pa.binary(), "image_preview": _IMAGE, "label_mask": _IMAGE}
        table = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in columns.items()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(out / "data" / f"{domain}-{split}.parquet", sink.getvalue().to_pybytes())
    for meta in (CARD_FILE, MANIFEST_FILE):
        atomic_write_bytes(out / META_DIR / meta, (dataset.root / meta).read_bytes())
    atomic_write_text(out / "README.md", _card(card))
    return out


def _viewable(dataset: PreparedDataset, rows: pd.DataFrame
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
    """Each sample's `image_preview` and `label_mask` PNGs (as `datasets` Image cells), read through the
    manifest's sha256 check like every read."""
    previews: list[dict[str, Any]] = []
    masks: list[dict[str, Any] | None] = []
    for _, row in rows.iterrows():
        previews.append({"bytes": png_bytes(preview(dataset.read_image(row))), "path": None})
        if dataset.card.label_level == "image" or not isinstance(row["label"], str):
            masks.append(None)
            continue
        label = dataset.read_label(row)
        masks.append({"bytes": png_bytes(label[0] if label.ndim == 3 else label), "path": None})
    return previews, masks


def _card(card: DatasetCard) -> str:
    domains = sorted(card.split_counts)
    configs = []
    for domain in domains:
        configs += [f"- config_name: {domain}", "  data_files:"]
        configs += [f"  - split: {split}\n    path: data/{domain}-{split}.parquet" for split in sorted(card.split_counts[domain])]
    licence = {"CC0-1.0": "cc0-1.0", "MIT": "mit"}.get(card.licence, card.licence.lower().replace(" ", "-"))
    classes = ", ".join(f"{i} {c.name}" for i, c in enumerate(card.classes.classes))
    info = ["dataset_info:"]
    for domain in domains:  # the features, with an image-level target as a ClassLabel of the domain's classes
        names = [c.name for c in card.classes_of(domain).classes]
        info += [f"- config_name: {domain}", "  features:"]
        info += [f"  - name: {column}\n    dtype: {dtype}" for column, dtype in _FEATURES]
        info += ["  - name: target", "    dtype:", "      class_label:", "        names:"]
        info += [f"          '{i}': {name}" for i, name in enumerate(names)]
    return "\n".join([
        "---", f"license: {licence}", "configs:", *configs, *info, "tags:", "- remote-sensing", "- rsdg-bench", "---", "",
        f"# {card.name} (prepared by rsdg-bench)", "",
        f"The `{card.name}` dataset as `rsdg-bench prepare` stores it (prep version {card.prep_version}, manifest "
        f"sha256 `{card.manifest_sha256}`). Each row holds a sample's image and label files exactly as stored "
        "(`image_bytes`, `label_bytes`: GeoTIFF or PNG; labels are uint8 class indices, 255 = ignore) with their "
        "sha256, and two images to look at: `image_preview` (the first three bands, stretched for display) and "
        "`label_mask` (the class indices as a PNG, exactly). `rsdg-bench prepare NAME --from-hf DIR` restores the "
        "prepared folder byte for byte.", "",
        f"- Licence: {card.licence}", f"- Citation: {card.citation}", f"- Classes: {classes}",
        "- Splits: " + "; ".join(f"{d}/{s}: {n}" for d in domains for s, n in sorted(card.split_counts[d].items())),
        "",
    ])


def import_prepared(hf_dir: Path, data_root: Path, name: str) -> Path:
    """Restore a prepared dataset from an export (`export_prepared`) into `data_root/name`; return it.

    An export is data from elsewhere: every file is parsed with its errors named (a card that is no card, a
    Parquet file that does not read, a row without its bytes), every sample's bytes are checked against the
    manifest's sha256, each sample must come exactly once, and the dataset is staged beside its place and
    published whole, or not at all (a failed import leaves nothing behind)."""
    hf_dir = Path(hf_dir)
    card_path, manifest_path = hf_dir / META_DIR / CARD_FILE, hf_dir / META_DIR / MANIFEST_FILE
    if not card_path.is_file() or not manifest_path.is_file():
        raise DataError(f"{hf_dir} is not an rsdg-bench dataset export (no {META_DIR}/{CARD_FILE} and "
                        f"{META_DIR}/{MANIFEST_FILE})", "pass the folder `rsdg-bench export NAME --format hf` wrote")
    card = _read_card(card_path)
    if card.name != name:
        raise DataError(f"{hf_dir} holds {card.name!r}, not {name!r}", f"run `rsdg-bench prepare {card.name} --from-hf`")
    if sha256_file(manifest_path) != card.manifest_sha256:
        raise DataError(f"{manifest_path} does not match the sha256 in its card", "download the export again")
    expected = _manifest_rows(manifest_path)
    final = Path(data_root) / name
    if final.exists():
        raise DataError(f"{final} exists already", f"remove it (or use another --data-root) to restore {name} from {hf_dir}")
    staging = Path(data_root) / f".{name}.from-hf"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        written: set[str] = set()
        for part in sorted((hf_dir / "data").glob("*.parquet")):
            for row in _parquet_rows(part):
                _restore_row(row, expected, written, staging, part.name)
        if len(written) != len(expected):
            raise DataError(f"{hf_dir} holds {len(written)} of the manifest's {len(expected)} samples",
                            "download every data/*.parquet file of the export")
        shutil.copyfile(manifest_path, staging / MANIFEST_FILE)
        shutil.copyfile(card_path, staging / CARD_FILE)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


_FIX = "download the export again"


def _read_card(path: Path) -> DatasetCard:
    try:
        return DatasetCard.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        raise DataError(f"{path} is not a dataset card: {str(exc).splitlines()[0]}", _FIX) from exc


def _manifest_rows(path: Path) -> dict[str, dict]:
    """The manifest's rows by sample id, after checking it reads and names each sample's files and hashes."""
    try:
        manifest = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path} is not a readable Parquet manifest: {exc}", _FIX) from exc
    missing = {"sample_id", "image", "label", "image_sha256", "label_sha256"} - set(manifest.columns)
    if missing:
        raise DataError(f"{path} has no column {', '.join(sorted(missing))}", _FIX)
    rows = {str(row["sample_id"]): row for row in manifest.to_dict("records")}
    if len(rows) != len(manifest):
        raise DataError(f"{path} lists a sample id more than once", _FIX)
    return rows


def _parquet_rows(part: Path) -> list[dict]:
    try:
        return pq.read_table(part).to_pylist()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{part} is not a readable Parquet file: {exc}", _FIX) from exc


def _restore_row(row: dict, expected: dict[str, dict], written: set[str], staging: Path, part: str) -> None:
    """Write one exported sample's files into the staging folder, after checking them against the manifest."""
    sample_id = row.get("sample_id")
    wanted = expected.get(sample_id) if isinstance(sample_id, str) else None
    if wanted is None or not isinstance(sample_id, str):  # (a sample id not a str has no manifest row)
        raise DataError(f"{part}: sample {sample_id!r} is not in the manifest", _FIX)
    if sample_id in written:  # counted twice, a repeat would hide a missing sample
        raise DataError(f"{part}: sample {sample_id!r} appears more than once in the export", _FIX)
    for kind in ("image", "label"):
        rel, data = wanted[kind], row.get(f"{kind}_bytes")
        if kind == "label" and (rel is None or rel != rel):  # an unlabelled sample (None, or NaN from Parquet)
            continue
        if not isinstance(rel, str):
            raise DataError(f"the manifest names the {kind} of {sample_id} as {rel!r}, not a file", _FIX)
        if not isinstance(data, bytes) or sha256_bytes(data) != wanted[f"{kind}_sha256"]:
            raise DataError(f"{part}: the {kind} of {sample_id} does not match its sha256 in the manifest", _FIX)
        target = (staging / rel).resolve()
        if target == staging.resolve() or not target.is_relative_to(staging.resolve()):
            raise DataError(f"manifest path {rel!r} is not a file inside the dataset folder",
                            "the export is not trustworthy")
        atomic_write_bytes(target, data)
    written.add(sample_id)
