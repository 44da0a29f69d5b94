"""Scene-level paired bootstrap: equal to a plain resampling loop, wider than an image bootstrap where windows
of one scene agree, near its nominal coverage in a seeded simulation, paired across models, and shown with its
scene count on the board of a prepared Potsdam fake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pixel_linear

from rsdg_bench.leaderboards.aggregate import build_board, with_suites
from rsdg_bench.leaderboards.uncertainty import (
    SplitEvidence,
    draw_counts,
    interquartile_mean,
    interval,
    metric_replicates,
    normalized_score,
    paired_difference,
    paired_tie_groups,
    separated,
)
from rsdg_bench.records.results import encode_per_image
from rsdg_bench.scoring.metrics import scores_from_confusion, uniform_chance_matrix


def evidence(per_image: np.ndarray, scenes: list[str], unit: str = "source file") -> SplitEvidence:
    return SplitEvidence(encode_per_image(torch.as_tensor(per_image)), scenes, unit)


def test_scene_bootstrap_equals_a_plain_loop_over_the_metric_engine():
    rng = np.random.default_rng(5)
    per_image = rng.integers(0, 20, size=(9, 4, 4))
    per_image[:, 3, :] = 0  # class 3 absent from the ground truth of every image
    scenes = ["t2", "t0", "t1", "t0", "t2", "t2", "t1", "t0", "t1"]
    fast = metric_replicates("d/x/test", evidence(per_image, scenes), "miou", [0, 1, 2, 3], replicates=40)
    counts = draw_counts("d/x/test", scenes, 40)  # scenes sorted by name: t0, t1, t2
    slow = []
    for row in counts:
        matrix = sum(row[int(s[1])] * per_image[i] for i, s in enumerate(scenes))
        slow.append(scores_from_confusion(torch.as_tensor(matrix), [0, 1, 2, 3]).miou)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_draws_depend_on_the_split_and_its_scenes_never_on_the_model():
    scenes = [f"tile{i % 5}" for i in range(20)]
    assert np.array_equal(draw_counts("p/irrg/val", scenes), draw_counts("p/irrg/val", list(reversed(scenes))))
    assert not np.array_equal(draw_counts("p/irrg/val", scenes), draw_counts("v/irrg/val", scenes))
    assert (draw_counts("p/irrg/val", scenes).sum(axis=1) == 5).all()  # S scenes drawn per replicate


def _clustered_test_set(rng: np.random.Generator, scenes: int, windows: int, pixels: int = 400) -> np.ndarray:
    """Binary per-window matrices whose accuracy is shared within a scene (strong within-scene correlation):
    each scene's accuracy is drawn from Beta(6, 4) (mean 0.6), each window's pixels are right with it."""
    accuracy = rng.beta(6, 4, size=scenes)
    right = rng.binomial(pixels, np.repeat(accuracy, windows))
    per_image = np.zeros((scenes * windows, 2, 2), dtype=np.int64)
    per_image[:, 0, 0], per_image[:, 0, 1] = right, pixels - right
    return per_image


def test_scene_intervals_are_wider_than_image_intervals_and_cover_the_truth_at_about_the_nominal_rate():
    rng = np.random.default_rng(2026)
    scenes, windows, trials, truth = 30, 8, 150, 0.6
    names = [f"tile{i}" for i in range(scenes) for _ in range(windows)]
    own = [str(i) for i in range(scenes * windows)]
    covered = {"scene": 0, "image": 0}
    widths = {"scene": [], "image": []}
    for trial in range(trials):
        per_image = _clustered_test_set(rng, scenes, windows)
        for kind, labels in (("scene", names), ("image", own)):
            low, high = interval(metric_replicates(f"sim/{trial}", evidence(per_image, labels), "oa", [0, 1],
                                                   replicates=300))
            covered[kind] += low <= truth <= high
            widths[kind].append(high - low)
    assert np.median(widths["scene"]) > 2 * np.median(widths["image"])
    assert 0.88 <= covered["scene"] / trials <= 0.99  # nominal 0.95; percentile intervals run a little short
    assert covered["image"] / trials < 0.6            # windows treated as independent: far too narrow


def test_two_models_that_differ_on_one_tile_only_are_a_tie_and_a_model_worse_everywhere_is_not():
    rng = np.random.default_rng(7)
    scenes, windows = 14, 10
    names = [f"tile{i}" for i in range(scenes) for _ in range(windows)]
    base = _clustered_test_set(rng, scenes, windows)
    one_tile = base.copy()
    one_tile[:windows, 0, 0] //= 2  # much worse, but on tile0 only
    one_tile[:windows, 0, 1] = 400 - one_tile[:windows, 0, 0]
    everywhere = base.copy()
    everywhere[:, 0, 0] -= 40
    everywhere[:, 0, 1] += 40
    reps = {name: metric_replicates("p/irrg/test", evidence(m, names), "oa", [0, 1])
            for name, m in (("base", base), ("one_tile", one_tile), ("everywhere", everywhere))}
    low, high = paired_difference(reps["base"], reps["one_tile"])
    assert low <= 0 < high and not separated(reps["base"], reps["one_tile"])
    assert separated(reps["base"], reps["everywhere"])
    # unpaired, the same 10-point gap everywhere would not be resolved: the pairing is what separates them
    unpaired_low = np.percentile(reps["base"], 2.5)
    assert unpaired_low < np.percentile(reps["everywhere"], 97.5)
    estimates = {name: float(scores_from_confusion(torch.as_tensor(m.sum(0)), [0, 1]).oa)
                 for name, m in (("base", base), ("one_tile", one_tile), ("everywhere", everywhere))}
    assert paired_tie_groups(estimates, reps) == {"base": 1, "one_tile": 1, "everywhere": 2}


def test_smp_convention_with_counted_ignored_pixels_is_resampled_too():
    per_image = np.array([[[5, 1], [0, 4]], [[3, 0], [2, 5]]])
    ignored = torch.tensor([[2, 0], [0, 3]])
    block = encode_per_image(torch.as_tensor(per_image), ignored)
    reps = metric_replicates("x/y/z", SplitEvidence(block, ["a", "b"], "place"), "oa", [0, 1], "smp", replicates=200)
    whole = scores_from_confusion(per_image.sum(0), [0, 1], "smp", ignored.sum(0).numpy()).oa
    assert whole == pytest.approx(17 / 25)  # 17 right of 20 scored + 5 ignored pixels counted as errors
    assert reps.max() < 1 and np.isclose(reps, whole).any()


def test_the_board_of_a_potsdam_fake_reports_a_scene_level_interval_with_its_scene_count(ce_data: Path,
                                                                                            tmp_path: Path):
    from rsdg_bench.leaderboards.render import write_site
    from rsdg_bench.protocol.task_schema import TaskCatalog
    from rsdg_bench.records.results import load_record
    from rsdg_bench.run.runner import RunSettings, run_tasks

    torch.manual_seed(0)
    task = TaskCatalog().task("crossearth/pr2pi")
    model = pixel_linear(display_name="unet")  # random predictions are what this needs; a U-Net took 40 s
    [outcome] = run_tasks([task], model, RunSettings(data_root=ce_data, results_root=tmp_path, progress=False))
    assert outcome.error is None
    records = [(Path(p), load_record(Path(p))) for p in outcome.written]
    for _, rec in records:  # a fake is not the published split, and random weights never rank: let it through here
        rec.model["checkpoint"]["random_init"] = False
        rec.evaluated.published_samples = None
    [target] = [r for _, r in records if r.evaluated.role == "target"]
    samples = target.samples[target.evaluated.slug]
    assert samples.scene_unit == "source file" and samples.num_scenes == 14 and len(samples.ids) == 56
    board = build_board(records)
    [table] = board.tasks
    assert table.resampling_units() == [(target.evaluated.slug, 14, "source file")]
    low, high = table.interval("unet")
    assert low <= table.target_mean("unet") <= high and high > low
    streamed = build_board(iter(records))  # a one-shot stream: each record is scored as it comes, then let go
    assert streamed.tasks[0].interval("unet") == (low, high) and streamed.tasks[0].resampling_units() == \
        table.resampling_units()
    assert target.per_image_matrices and target.samples  # the caller's own records are left whole
    write_site(with_suites(board, TaskCatalog()), tmp_path / "site")
    page = next((tmp_path / "site" / "tasks").glob("*.html")).read_text()
    assert "14 scenes (unit: source file)" in page
    assert "Scenes resampled:" in (tmp_path / "site" / "suites" / "crossearth.html").read_text()
    exported = json.loads((tmp_path / "site" / "board.json").read_text())["tasks"][0]
    assert exported["resampled"] == [{"slug": target.evaluated.slug, "scenes": 14, "unit": "source file"}]
    assert exported["results"]["unet"]["interval_95"] == pytest.approx([low, high])
    assert exported["results"]["unet"]["tie_group"] == 1


def test_the_interquartile_mean_cuts_a_quarter_from_each_end_as_trim_mean_does():
    assert interquartile_mean(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(2.5)  # 1 and 4 cut
    assert interquartile_mean(np.array([9.0, 0.0, 5.0, 5.0, 6.0, 4.0, 100.0, -50.0])) == pytest.approx(5.0)  # 2 cut
    assert interquartile_mean(np.array([0.0, 1.0, 100.0, 1.0, 3.0])) == pytest.approx(5 / 3)  # int(5/4) = 1 cut
    assert interquartile_mean(np.array([1.0, 2.0, 9.0])) == pytest.approx(4.0)  # nothing cut below 4 values
    rows = np.array([[4.0, 1.0, 3.0, 2.0], [0.0, 10.0, 20.0, 30.0]])  # per replicate: along the last axis
    np.testing.assert_allclose(interquartile_mean(rows), [2.5, 15.0])
    with_nan = interquartile_mean(np.array([[.1, .2, .3, np.nan, .5, .6, .7, .8], [.1, .2, .3, .4, .5, .6, .7, .8]]))
    assert np.isnan(with_nan[0]) and with_nan[1] == pytest.approx(0.45)  # a NaN is not cut as the best value


def test_normalized_scores_put_chance_at_0_and_a_perfect_score_at_1():
    assert normalized_score(1.0, 0.2) == pytest.approx(1.0)
    assert normalized_score(0.2, 0.2) == pytest.approx(0.0)
    assert normalized_score(0.6, 0.2) == pytest.approx(0.5)
    assert normalized_score(0.1, 0.2) == pytest.approx(-0.125)  # below chance stays below 0, not clipped
    assert np.isnan(normalized_score(0.5, float("nan"))) and np.isnan(normalized_score(0.5, 1.0))
    np.testing.assert_allclose(normalized_score(np.array([0.2, 0.6]), 0.2), [0.0, 0.5])


def test_the_suite_iqm_pools_normalized_task_scores_and_needs_every_task():
    from test_leaderboard import GOOD, POOR, board_of, record

    from rsdg_bench.leaderboards.views import suite_iqm, suite_table
    from rsdg_bench.protocol.task_schema import TaskCatalog

    chance_like = uniform_chance_matrix(POOR).tolist()  # a model that scores exactly chance on these labels
    half = [[50, 10, 0, 0, 0], [0, 40, 5, 0, 0], [0, 0, 30, 5, 0], [0, 0, 0, 20, 0], [5, 0, 0, 0, 10]]
    matrices = {"demo/a": GOOD, "demo/b": POOR, "demo/c": chance_like, "demo/d": half}
    board = with_suites(board_of(*(record(key=t, matrix=m, task_id=t, gap="region") for t, m in matrices.items()),
                                 record(key="x", matrix=GOOD, task_id="demo/a", gap="region", model="partial")),
                        TaskCatalog())
    [suite] = board.suites
    tables = {t.task_id: t for t in suite.tasks}
    expected = {}
    for task_id, matrix in matrices.items():
        score = scores_from_confusion(np.array(matrix)).miou
        chance = scores_from_confusion(uniform_chance_matrix(matrix)).miou
        expected[task_id] = (score - chance) / (1 - chance)
        assert tables[task_id].normalized_target("unet") == pytest.approx(expected[task_id])
    assert expected["demo/a"] == pytest.approx(1.0) and expected["demo/c"] == pytest.approx(0.0)
    middle = sorted(expected.values())[1:3]  # 4 tasks: the lowest and the highest cut
    iqm, low, high = suite_iqm(suite.tasks, "unet")
    assert iqm == pytest.approx(sum(middle) / 2) and np.isnan(low) and np.isnan(high)  # no per-image matrices
    assert all(np.isnan(v) for v in suite_iqm(suite.tasks, "partial"))  # 1 of 4 tasks: no IQM
    table = suite_table(suite, board)
    column = table.columns.index("IQM, normalized")
    assert {row.label: row.values[column] for row in table.rows}["unet"] == pytest.approx(iqm)


def test_the_suite_iqm_interval_takes_the_iqm_of_each_joint_replicate(monkeypatch):
    from rsdg_bench.leaderboards.aggregate import TaskTable
    from rsdg_bench.leaderboards.views import suite_iqm

    rng = np.random.default_rng(0)
    tasks = [TaskTable(task_id=f"t{i}", name=f"t{i}", gap="region", version=1, task_hash="h", primary="miou",
                       class_names=[], scores={"m": {}}) for i in range(5)]
    replicates = {t.task_id: rng.uniform(0.3, 0.9, 1000) for t in tasks}
    monkeypatch.setattr(TaskTable, "target_mean", lambda self, model: float(replicates[self.task_id].mean()))
    monkeypatch.setattr(TaskTable, "chance_mean", lambda self, model: 0.2)
    monkeypatch.setattr(TaskTable, "replicates", lambda self, model: replicates[self.task_id])
    iqm, low, high = suite_iqm(tasks, "m")
    normalized = np.stack([(replicates[t.task_id] - 0.2) / 0.8 for t in tasks], axis=-1)  # 1000 × 5
    by_replicate = np.sort(normalized, axis=-1)[:, 1:4].mean(axis=-1)  # int(5/4) = 1 cut each end
    assert (low, high) == pytest.approx(tuple(np.percentile(by_replicate, [2.5, 97.5])))
    assert low < iqm < high
