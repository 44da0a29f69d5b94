"""The CoDEX adapter: upstream parity on the HeadSelector fixture, the released checkpoint's key manifest,
loading by shape, a run on prepared fakes, and the label-peeking Oracle kept off the leaderboard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from upstream_fixtures import load_fixture, manifest, synthetic_state

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.baselines.codex_adapter import BACKBONE, RELEASED_FILES, CodexAdapter
from rsdg_bench.baselines.codex_model import HeadSelector
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultStore
from rsdg_bench.run.runner import RunSettings, run_tasks

RELEASED = "codex_dynamicearthnet.json"


def test_head_selector_reproduces_the_upstream_fixture():
    fixture = load_fixture("fx_codex_headselector.json")
    args = fixture["config"]["head_selector_args"]
    net = HeadSelector(args["input_dim"], args["num_domains"], args["num_classes"], out_first=args["out_first"],
                       num_convs=args["num_convs"], n_head=args["n_head"], d_k=args["d_k"], T=args["T"],
                       offset=args["offset"])
    net.load_state_dict(fixture["state_dict"], strict=True)
    net.eval()
    with torch.no_grad():
        out = net(fixture["input"]["data"].float(), fixture["input"]["positions"])
    expected = fixture["output"]
    torch.testing.assert_close(out["logits"], expected["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["selector_logits"], expected["hs_logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["heads"].mean(dim=(-2, -1)), expected["logits_heads_mean_hw"], atol=1e-4, rtol=0)
    assert (out["heads"] >= 0).all()  # every expert head ends in a ReLU, as upstream


def test_the_full_model_matches_the_released_checkpoint_key_for_key():
    shapes = manifest(RELEASED)
    net = HeadSelector(4, 55, 6, out_first=32, **BACKBONE)
    mine = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(mine) == list(shapes)  # same keys, same order
    assert mine == shapes


@pytest.fixture(scope="module")
def den_data(prepared_fakes) -> Path:
    return prepared_fakes.data("dynamicearthnet")


@pytest.fixture(scope="module")
def released_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file with the released checkpoint's keys and shapes (random values), under its released name."""
    folder = tmp_path_factory.mktemp("codex_ckpt")
    path = folder / RELEASED_FILES["dynamicearthnet_source"]
    torch.save(synthetic_state(manifest(RELEASED), seed=3), path)
    return path


def test_a_checkpoint_with_the_released_keys_loads_and_runs(den_data: Path, released_like: Path, tmp_path: Path):
    from rsdg_bench.models.checkpoints import fit_report, read_state_dict

    task = TaskCatalog().task("codex/dynamicearthnet")
    adapter = CodexAdapter()
    adapter.setup(task, ["R", "G", "B", "NIR"])
    state, _ = read_state_dict(released_like)
    report = fit_report(adapter.module, state)
    assert report.clean, report.describe()
    # one series: the full 55-head model takes seconds per series on a CPU core, and one shows that it runs
    settings = RunSettings(den_data, tmp_path, progress=False, limit=1)
    [outcome] = run_tasks([task], ModelSpec("codex", checkpoint_dir=released_like.parent), settings)
    assert outcome.error is None, outcome.error
    (_, record), = ResultStore(tmp_path).load_all()
    assert record.model["checkpoint"]["path"].endswith(RELEASED_FILES["dynamicearthnet_source"])  # found by its name
    assert record.normalization["mean"][3] == pytest.approx(133.8648)  # CoDEX's published NIR mean
    assert sum(map(sum, record.confusion_matrices["dynamicearthnet/planet/test"])) > 0


def test_the_selector_width_and_domain_count_come_from_the_weights(tmp_path: Path):
    task = TaskCatalog().task("codex/dynamicearthnet")
    small = HeadSelector(4, 5, 6, out_first=8, **BACKBONE)
    torch.save(small.state_dict(), tmp_path / "five.pt")
    adapter = CodexAdapter()
    adapter.setup(task, ["R", "G", "B", "NIR"])
    adapter.load(tmp_path / "five.pt")
    assert adapter.module.linear2.weight.shape == (5, 64)
    wrong = HeadSelector(4, 5, 3, out_first=8, **BACKBONE)
    torch.save(wrong.state_dict(), tmp_path / "three.pt")
    with pytest.raises(AdapterError, match="predicts 3 classes"):
        adapter.load(tmp_path / "three.pt")


def test_the_oracle_picks_the_best_expert_and_never_reaches_the_board(den_data: Path, tmp_path: Path):
    task = TaskCatalog().task("codex/dynamicearthnet")
    adapter = CodexAdapter(selection="oracle")
    adapter.setup(task, ["R", "G", "B", "NIR"])
    heads = torch.zeros(3, 1, 2, 6, 4, 4)
    heads[0, :, :, 1] = 1  # predicts class 1 everywhere
    heads[1, :, :, 2] = 1  # class 2
    heads[2, :, :, 3] = 1  # class 3
    labels = torch.full((1, 2, 4, 4), 2)
    labels[..., :1] = 255  # ignored pixels do not count
    labels[0, 0, 1:, 1] = 1
    adapter.module.forward = lambda x, days: {"heads": heads}
    chosen = adapter.oracle_series(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2), labels)
    assert torch.equal(chosen, heads[1])  # head 2 is right on most labelled pixels
    with pytest.raises(AdapterError, match="needs the labels"):
        adapter.predict_series(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2))

    from rsdg_bench.leaderboards.aggregate import build_board

    # a 3-expert checkpoint (the adapter sizes itself from the weights): the oracle's run path and its records
    # are what this checks, not the released model's 55 experts (test_a_checkpoint_with_the_released_keys...)
    torch.manual_seed(0)
    torch.save(HeadSelector(4, 3, 6, out_first=8, **BACKBONE).state_dict(), tmp_path / "three_experts.pt")
    settings = RunSettings(den_data, tmp_path / "results", progress=False, limit=1)
    [outcome] = run_tasks([task], ModelSpec("codex", {"selection": "oracle"}, checkpoint=tmp_path / "three_experts.pt"),
                          settings)
    assert outcome.error is None, outcome.error
    records = ResultStore(tmp_path / "results").load_all()
    assert records and all(r.model["peeks_at_labels"] for _, r in records)
    board = build_board(records)
    assert not board.tasks and any("chooses with the labels" in why for _, why in board.excluded)


def test_skip_aggregation_equals_the_u_tae_formulation_with_and_without_padding():
    from rsdg_bench.base.references import utae_att_group_aggregation
    from rsdg_bench.baselines.multi_ltae import aggregate_skip

    generator = torch.Generator().manual_seed(4)
    attention = torch.rand(4, 2, 3, 3, 8, 8, generator=generator).softmax(dim=3)
    for size in (16, 8, 4):  # upsampled, same size, average-pooled
        x = torch.randn(2, 3, 8, size, size, generator=generator)
        for pad in (torch.zeros(2, 3, dtype=torch.bool), torch.tensor([[False, True, False], [False, False, False]])):
            torch.testing.assert_close(aggregate_skip(x, attention, pad), utae_att_group_aggregation(x, attention, pad),
                                       atol=1e-6, rtol=0)
