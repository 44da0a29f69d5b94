"""End to end: the demo trains for real and its leaderboard shows the domain gap."""

from __future__ import annotations

from pathlib import Path

from conftest import TRAINED_ITERATIONS

from rsdg_bench.leaderboards.aggregate import build_board
from rsdg_bench.records.results import ResultStore


def test_demo_builds_a_leaderboard_where_unseen_domains_score_lower(demo_copy: Path, monkeypatch):
    """On a copy of the session's one demo run (`demo_run`: `run_demo` as `rsdg-bench demo` calls it, with a
    shorter training), so the records the walk-through below adds stay in this test."""
    workdir = demo_copy
    page = workdir / "results" / "site" / "index.html"
    assert page.exists() and "U-Net R18" in page.read_text()
    task_page = (page.parent / "tasks" / "demo-u2a.html").read_text()  # train's loss history, copied into the site
    assert "Training history" in task_page and (page.parent / "training" / "demo-u2a").is_dir()
    board = build_board(ResultStore(workdir / "results").load_all())
    assert len(board.tasks) == 3 and not board.excluded
    for table in board.tasks:
        [model] = table.scores
        assert table.source_score(model) > 0.6, table.name
        assert table.target_mean(model) < table.source_score(model), table.name
    # the commands the demo prints as the next steps work on what it left, as printed
    import shlex

    from rsdg_bench.cli import main
    from rsdg_bench.demo import next_commands

    for command in next_commands(workdir):
        assert main(shlex.split(command)[1:]) == 0, command
    records = ResultStore(workdir / "results").paths()
    assert len(records) == 6  # `run` found the demo's checkpoint and records: nothing evaluated twice
    training = ResultStore(workdir / "results").load_all()[0][1].model["training"]
    # the demo trains briefly: said so
    assert training["status"] == "off-protocol" and training["iterations"] == TRAINED_ITERATIONS

    # the Python API reads the same records
    from rsdg_bench import load_results

    frame = load_results(workdir / "results")
    assert len(frame) == 6 and set(frame.model) == {"U-Net R18 (source-only)"}
    assert set(frame.task_id) == {t.task_id for t in board.tasks}

    # docs/python-api.md's walk-through runs as written, where the demo left its folders
    here = workdir.parent / f"{workdir.name}-cwd"
    here.mkdir()
    (here / "rsdg-demo").symlink_to(workdir, target_is_directory=True)
    monkeypatch.chdir(here)
    exec(compile(python_blocks(Path(__file__).parents[1] / "docs" / "python-api.md")[0], "python-api.md", "exec"), {})
    after = load_results(workdir / "results")
    assert set(after.model) == {"U-Net R18 (source-only)", "my-unet"} and len(after) == 6 + 2


def python_blocks(markdown: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    import re

    return re.findall(r"```python\n(.*?)```", markdown.read_text(), flags=re.DOTALL)
