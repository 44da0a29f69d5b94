"""End to end: the demo trains for real and its leaderboard shows the domain gap."""

from __future__ import annotations

from pathlib import Path

from rsdg_bench.demo import run_demo
from rsdg_bench.leaderboards.aggregate import build_board
from rsdg_bench.results import ResultStore


def test_demo_builds_a_leaderboard_where_unseen_domains_score_lower(tmp_path: Path):
    page = run_demo(tmp_path, iterations=120, progress=False)
    assert page.exists() and "U-Net R18" in page.read_text()
    board = build_board(ResultStore(tmp_path / "results").load_all())
    assert len(board.tasks) == 3 and not board.excluded
    for table in board.tasks:
        [model] = table.scores
        assert table.source_score(model) > 0.6, table.name
        assert table.target_mean(model) < table.source_score(model), table.name
