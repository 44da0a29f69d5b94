"""Scene-level paired bootstrap: equal to a plain resampling loop, wider than an image bootstrap where windows
of one scene agree, near its nominal coverage in a seeded simulation, paired across models, and shown with its
scene count on the board of a prepared Potsdam fake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rsdg_bench.leaderboards.aggregate import build_board, with_suites
from rsdg_bench.leaderboards.uncertainty import (SplitEvidence, draw_counts, interval, metric_replicates,
                                                 paired_difference, paired_tie_groups, separated)
from rsdg_bench.metrics import scores_from_confusion
from rsdg_bench.results import encode_per_image

from conftest import pixel_linear


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
    from rsdg_bench.results import load_record
    from rsdg_bench.runner import RunSettings, run_tasks
    from rsdg_bench.task_schema import TaskCatalog

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
