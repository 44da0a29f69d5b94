"""`results export`: the records as a Hub dataset repo that `datasets.load_dataset` reads, and the upload call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMALL_MODEL

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.hub.hub_export import export_results, push_to_hub
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore
from rsdg_bench.run.runner import RunSettings, run_tasks


@pytest.fixture(scope="module")
def results(trained: dict, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rsdg_bench.models.model_spec import ModelSpec

    root = tmp_path_factory.mktemp("export_results")
    model = ModelSpec(SMALL_MODEL.adapter, SMALL_MODEL.options, checkpoint=trained["checkpoint"], display_name="unet")
    run_tasks([TaskCatalog().task("demo/u2a")], model, RunSettings(data_root=data_root, results_root=root,
                                                                    progress=False))
    return root


def test_export_loads_with_datasets_and_carries_every_record(results: Path, tmp_path: Path, capsys):
    datasets = pytest.importorskip("datasets", reason="install the [hub] extra")
    out, rows, refused = export_results(results, tmp_path / "hub", progress=True)
    assert rows == 2 and refused == []
    assert "exporting records" in capsys.readouterr().err  # a bar over the records (a real board's take minutes)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n- config_name: default") and "demo/u2a" in card
    # A cache of its own: `datasets` caches a local folder by its path, and pytest reuses tmp paths across runs,
    # so the shared cache could hand back an earlier run's table.
    table = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert table.num_rows == 2
    records = {r.evaluated.slug: r for _, r in ResultStore(results).load_all()}
    for row in table:
        record = records[f"{row['dataset']}/{row['domain']}/{row['split']}"]
        assert row["confusion_matrix"] == record.confusion_matrices[record.evaluated.slug]
        assert row["miou"] == pytest.approx(record.metrics[record.evaluated.slug]["miou"])
        assert row["task_hash"] == record.task["hash"] and row["code_sha256"] == record.model["code"]["sha256"]
        assert row["training_status"] == "off-protocol" and json.loads(row["provenance"])["date"]
        assert row["class_names"] == record.class_names and len(row["iou"]) == len(row["class_names"])


def test_a_tampered_record_is_not_exported_and_the_card_says_so(results: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    path = ResultStore(copy).paths()[0]
    data = json.loads(path.read_text())
    slug = next(iter(data["metrics"]))
    data["metrics"][slug]["miou"] = 0.99
    path.write_text(json.dumps(data))
    _, rows, refused = export_results(copy, tmp_path / "hub")
    assert rows == 1 and len(refused) == 1 and "edited" in refused[0][1]
    assert "Records refused" in (tmp_path / "hub" / "README.md").read_text()
    with pytest.raises(RsdgError, match="no valid result records"):
        export_results(tmp_path / "empty", tmp_path / "hub2")


def test_push_to_hub_creates_the_dataset_repo_and_uploads_the_folder(results: Path, tmp_path: Path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    class FakeApi:  # offline here: everything up to the network call is real
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs["repo_id"], kwargs))

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    out, _, _ = export_results(results, tmp_path / "hub")
    url = push_to_hub(out, "org/rsdg-results")
    assert url.endswith("datasets/org/rsdg-results")
    assert calls[0][2]["repo_type"] == "dataset" and calls[1][2]["folder_path"] == str(out)


def test_the_cli_exports_and_names_a_missing_out(results: Path, tmp_path: Path, capsys):
    from rsdg_bench.cli import main

    assert main(["results", "export", "--results", str(results), "--out", str(tmp_path / "hub")]) == 0
    assert "2 records ->" in capsys.readouterr().out and (tmp_path / "hub" / "data").is_dir()
    assert main(["results", "export", "--results", str(results)]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
