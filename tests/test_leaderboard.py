"""Leaderboard: recomputes from matrices, leaves out smoke/random/stale records, escapes text, exports CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from rsdg_bench.leaderboards.aggregate import build_board
from rsdg_bench.leaderboards.render import render_html, render_scores_csv, write_site
from rsdg_bench.results import ResultRecord, ResultStore, metrics_block

NAMES = ["bare", "building", "road", "vegetation", "water"]
GOOD = [[50, 0, 0, 0, 0], [0, 40, 0, 0, 0], [0, 0, 30, 0, 0], [0, 0, 0, 20, 0], [0, 0, 0, 0, 10]]
POOR = [[25, 25, 0, 0, 0], [0, 20, 20, 0, 0], [0, 0, 30, 0, 0], [0, 0, 10, 10, 0], [0, 0, 0, 0, 0]]


def record(*, key: str, matrix, role="target", model="unet", domain="arid", task_hash="h1", version=1,
           smoke=None, random_init=False, date="2026-01-01T00:00:00+00:00", sha="c" * 64, task_id="demo/u2a",
           gap="region+climate") -> ResultRecord:
    slug = f"toyearth/{domain}/val"
    return ResultRecord(
        schema_version=1, key=key,
        task={"id": task_id, "name": task_id, "version": version, "hash": task_hash, "suite": "demo",
              "gap": gap, "kind": "segmentation", "classes": "toyearth5", "class_names": NAMES,
              "headline_classes": list(range(5)), "primary": "miou", "resolved": {}},
        model={"adapter": "smp", "options": {}, "display_name": model,
               "checkpoint": {"path": None, "sha256": None if random_init else sha, "random_init": random_init}},
        evaluated={"role": role, "dataset": "toyearth", "domain": domain, "split": "val", "num_samples": 4},
        metrics={slug: metrics_block(matrix, NAMES, list(range(5)))}, confusion_matrices={slug: matrix},
        inference={}, normalization={}, smoke=smoke,
        provenance={"date": date, "task_hash": task_hash})


def board_of(*records: ResultRecord):
    return build_board([(Path(f"{r.key}.json"), r) for r in records])


def test_source_and_target_scores_and_the_drop():
    board = board_of(record(key="s", matrix=GOOD, role="source", domain="urban"), record(key="t", matrix=POOR))
    [table] = board.tasks
    assert table.splits == [("source", "toyearth/urban/val"), ("target", "toyearth/arid/val")]
    poor = metrics_block(POOR, NAMES, list(range(5)))["miou"]
    assert table.source_score("unet") == pytest.approx(1.0)
    assert table.target_mean("unet") == pytest.approx(poor)
    assert table.drop("unet") == pytest.approx(1.0 - poor)


def test_means_are_also_grouped_by_domain_gap():
    board = board_of(record(key="a", matrix=GOOD, task_id="demo/a", gap="region"),
                     record(key="b", matrix=POOR, task_id="demo/b", gap="region"),
                     record(key="c", matrix=POOR, task_id="demo/c", gap="spectral-band"))
    poor = metrics_block(POOR, NAMES, list(range(5)))["miou"]
    assert board.gaps == ["region", "spectral-band"]
    assert board.model_mean("unet", "region") == pytest.approx((1.0 + poor) / 2)
    assert board.model_mean("unet", "spectral-band") == pytest.approx(poor)
    assert board.model_mean("unet") == pytest.approx((1.0 + 2 * poor) / 3)
    assert "By domain gap" in render_html(board)


def test_numbers_come_from_the_matrix_not_the_stored_metrics():
    doctored = record(key="t", matrix=POOR)
    doctored.metrics["toyearth/arid/val"]["miou"] = 0.99
    assert board_of(doctored).tasks[0].target_mean("unet") == pytest.approx(
        metrics_block(POOR, NAMES, list(range(5)))["miou"])


def test_smoke_random_and_stale_records_are_left_out_with_reasons():
    board = board_of(
        record(key="ok", matrix=GOOD, task_hash="new", version=2),
        record(key="smoke", matrix=GOOD, smoke={"limit": 2}, model="other"),
        record(key="rand", matrix=GOOD, random_init=True, model="rand"),
        record(key="stale", matrix=POOR, task_hash="old", version=1, model="old"),
    )
    reasons = dict(board.excluded)
    assert "smoke" in reasons["smoke.json"] and "random" in reasons["rand.json"]
    assert "older definition" in reasons["stale.json"]
    assert board.models == ["unet"]


def test_two_checkpoints_with_one_name_are_told_apart():
    board = board_of(record(key="a", matrix=GOOD, sha="a" * 64), record(key="b", matrix=POOR, sha="b" * 64))
    assert sorted(board.models) == ["unet @aaaaaaaa", "unet @bbbbbbbb"]


def test_text_from_records_is_escaped():
    html = render_html(board_of(record(key="x", matrix=GOOD, model="<script>alert(1)</script>")))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_html_shows_per_class_tables_and_needs_no_network():
    html = render_html(board_of(record(key="s", matrix=GOOD, role="source", domain="urban"),
                                record(key="t", matrix=POOR)))
    for name in NAMES:
        assert f"<th>{name}</th>" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_csv_export_has_one_row_per_model_and_split(tmp_path: Path):
    board = board_of(record(key="s", matrix=GOOD, role="source", domain="urban"), record(key="t", matrix=POOR))
    rows = list(csv.DictReader(io.StringIO(render_scores_csv(board))))
    assert [(r["role"], r["split"]) for r in rows] == [("source", "toyearth/urban/val"), ("target", "toyearth/arid/val")]
    assert float(rows[0]["miou"]) == pytest.approx(1.0)
    assert rows[1]["aa"] != "" and float(rows[1]["miou"]) < 1


def test_site_files_are_written(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write(record(key="t", matrix=POOR))
    page = write_site(build_board(store.load_all()), tmp_path / "site")
    assert page.read_text().startswith("<!doctype html>")
    assert (tmp_path / "site" / "scores.csv").exists() and (tmp_path / "site" / "per_class.csv").exists()
