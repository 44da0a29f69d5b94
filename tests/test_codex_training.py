"""CoDEX's two training stages: the losses on hand-made experts, both stages end to end on the DynamicEarthNet
fake (random weights, the real module structure) with the selector's checkpoint evaluated through `run`, and
each CoDEX protocol's resolved values pinned against CoDEX's configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.baselines.codex_adapter import CodexAdapter, experts_path
from rsdg_bench.baselines.codex_losses import accuracy_loss, affinity, expert_accuracy, expert_losses, focal_loss
from rsdg_bench.models.checkpoints import read_state_dict
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import Task, TaskCatalog
from rsdg_bench.records.results import ResultStore
from rsdg_bench.run.runner import RunSettings, run_tasks
from rsdg_bench.train.training import TrainOverrides, build_trainable, train_adapter

LN3 = math.log(3)


def _scores(*pixels: tuple[float, float]) -> torch.Tensor:
    """Two-class scores of a one-date series of len(pixels) pixels in a row: 1×1×2×1×N."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, 1, 2, 1, len(pixels))


def test_the_focal_loss_is_cross_entropy_at_codex_gamma_and_skips_ignored_pixels():
    scores = _scores((0.0, 0.0), (5.0, -5.0))
    labels = torch.tensor([0, 255]).reshape(1, 1, 1, 2)
    assert focal_loss(scores, labels).item() == pytest.approx(math.log(2))  # p_y = 1/2; the ignored pixel left out
    # γ = 2 on p_y = 3/4: (1/4)² · −ln(3/4)
    assert focal_loss(_scores((LN3, 0.0)), torch.zeros(1, 1, 1, 1, dtype=torch.long), gamma=2).item() == \
        pytest.approx(0.0625 * -math.log(0.75))
    nothing = focal_loss(scores.requires_grad_(), torch.full((1, 1, 1, 2), 255))
    assert nothing.item() == 0 and nothing.requires_grad  # no labelled pixel: 0, not NaN


def test_the_affinity_is_a_row_softmax_that_leaves_out_the_own_domain():
    weights = torch.tensor([[9.0, LN3, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]])
    a = affinity(weights, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(a, torch.tensor([[0, 0.75, 0.25], [0.5, 0, 0.5], [0.5, 0.5, 0]]))


def test_domain_and_consistency_losses_on_hand_made_experts():
    # three experts, two one-pixel samples of class 0: expert 0 gives p0 = 3/4, expert 1 p0 = 1/2, expert 2 p0 = 1/4
    heads = torch.cat([_scores((LN3, 0.0)), _scores((0.0, 0.0)), _scores((0.0, LN3))]).unsqueeze(1).expand(3, 2, 1, 2, 1, 1)
    heads = heads.clone().requires_grad_()
    weights = torch.zeros(3, 3, requires_grad=True)
    labels = torch.zeros(2, 1, 1, 1, dtype=torch.long)
    domain, consistency = expert_losses(heads, weights, labels, torch.tensor([0, 2]))
    assert domain.item() == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2)  # each sample's own expert
    # sample 0 (domain 0): ½ expert 1 + ½ expert 2 = (0, ln3/2); sample 1 (domain 2): ½ expert 0 + ½ expert 1
    assert consistency.item() == pytest.approx((math.log(1 + math.sqrt(3)) + math.log((1 + math.sqrt(3)) / math.sqrt(3))) / 2)
    (own_grad,) = torch.autograd.grad(domain, heads, retain_graph=True)
    assert own_grad[0, 0].abs().sum() > 0 and own_grad[2, 1].abs().sum() > 0
    assert own_grad[1].abs().sum() == 0 and own_grad[2, 0].abs().sum() == 0  # L_domain: the own expert only
    con_heads, con_weights = torch.autograd.grad(consistency, [heads, weights])
    assert con_heads[0, 0].abs().sum() == 0 and con_heads[2, 1].abs().sum() == 0  # L_con: every other expert,
    assert con_heads[1].abs().sum(dim=(1, 2, 3, 4)).gt(0).all() and con_heads[2, 0].abs().sum() > 0  # not its own
    assert con_weights[0, 1] != 0 and con_weights[2, 0] != 0 and con_weights[1].abs().sum() == 0  # rows of d only


def test_expert_accuracy_and_the_accuracy_loss():
    heads = torch.zeros(2, 2, 1, 2, 1, 4)
    heads[0, :, :, 0] = 1  # expert 0 says class 0 everywhere, expert 1 class 1
    heads[1, :, :, 1] = 1
    labels = torch.tensor([[0, 0, 1, 255], [255, 255, 255, 255]]).reshape(2, 1, 1, 4)
    accuracy = expert_accuracy(heads, labels)
    torch.testing.assert_close(accuracy[0], torch.tensor([2 / 3, 1 / 3]))
    assert accuracy[1].isnan().all()  # no labelled pixel: no target
    selector = torch.tensor([[1.0, 0.0], [5.0, 5.0]], requires_grad=True)
    loss = accuracy_loss(selector, accuracy)
    assert loss.item() == pytest.approx(1 / 3 + 1 / 3)  # Σ_d |φ_d − acc_d| of the one sample with labels
    loss.backward()
    assert selector.grad is not None and selector.grad[1].abs().sum() == 0


def test_stage_one_checkpoint_is_found_beside_stage_two_by_name():
    task = TaskCatalog().task("codex/dynamicearthnet")
    folder = Path("/ckpt")
    assert experts_path(task, folder / "dynamicearthnet_source.pt") == folder / "dynamicearthnet_source-experts.pt"
    assert experts_path(task, folder / "dynamicearthnet_source.seed3.pt") == \
        folder / "dynamicearthnet_source-experts.seed3.pt"
    assert experts_path(task, folder / "mine.pt") == folder / "mine-experts.pt"
    assert CodexAdapter(stage="experts").checkpoint_names(task) == ["dynamicearthnet_source-experts.pt"]
    assert CodexAdapter().checkpoint_names(task)[-1] == "dynamicearthnet_source.pt"
    with pytest.raises(AdapterError, match="stage=experts"):
        CodexAdapter(stage="both")


def _small(task: Task) -> Task:
    """The task at a CPU test's scale: 32-px crops, no selection split (scoring it runs 128² series)."""
    assert task.training is not None
    return task.model_copy(update={"select": None, "training": task.training.model_copy(update={"crop": 32})})


@pytest.fixture(scope="module")
def den_data(prepared_fakes) -> Path:
    return prepared_fakes.data("dynamicearthnet")


def test_the_selector_stage_without_experts_says_which_file_and_command(den_data: Path, tmp_path: Path):
    task = _small(TaskCatalog().task("codex/dynamicearthnet"))
    adapter = build_trainable(ModelSpec("codex"), task, den_data)
    with pytest.raises(AdapterError, match="dynamicearthnet_source-experts.pt does not exist") as raised:
        train_adapter(adapter, task, den_data, tmp_path / "dynamicearthnet_source.pt",
                      overrides=TrainOverrides(iterations=1, batch_size=1), progress=False)
    assert "--model codex --model-arg stage=experts" in str(raised.value)
    with pytest.raises(AdapterError, match="not trained"):
        train_adapter(build_trainable(ModelSpec("codex", {"selection": "oracle"}), task, den_data), task, den_data,
                      tmp_path / "oracle.pt", overrides=TrainOverrides(iterations=1, batch_size=1), progress=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for both stages' checkpoints, under the names `train` gives them."""
    return tmp_path_factory.mktemp("codex_training")


@pytest.fixture(scope="module")
def experts(den_data: Path, checkpoints: Path) -> Path:
    """Stage 1 trained for one step of two draws (the losses of both, the consistency loss's affinity included)."""
    task = _small(TaskCatalog().task("codex/dynamicearthnet"))
    adapter = build_trainable(ModelSpec("codex", {"stage": "experts"}), task, den_data)
    path = checkpoints / "dynamicearthnet_source-experts.pt"
    train_adapter(adapter, task, den_data, path, overrides=TrainOverrides(iterations=1, batch_size=2), progress=False)
    return path


@pytest.fixture(scope="module")
def selector(den_data: Path, checkpoints: Path, experts: Path) -> Path:
    """Stage 2 trained for two steps of two draws on the frozen experts of `experts`."""
    task = _small(TaskCatalog().task("codex/dynamicearthnet"))
    adapter = build_trainable(ModelSpec("codex"), task, den_data)
    path = checkpoints / "dynamicearthnet_source.pt"
    train_adapter(adapter, task, den_data, path, overrides=TrainOverrides(iterations=2, batch_size=2), progress=False)
    return path


def test_stage_one_trains_one_expert_per_source_place_and_the_affinity(den_data: Path, experts: Path):
    state, _ = read_state_dict(experts)
    assert sum(k.startswith("pretrained.out_convs.") and k.endswith(".conv.conv.0.weight") for k in state) == 3
    assert state["pretrained.all_coord_weights"].shape == (3, 3)  # the fake's three training places
    task = _small(TaskCatalog().task("codex/dynamicearthnet"))
    untrained = build_trainable(ModelSpec("codex", {"stage": "experts"}), task, den_data)  # the same seeded init
    untrained.prepare_training(task, ["a", "b", "c"], experts)
    trained = {k: not torch.equal(v, state[k]) for k, v in untrained.module.state_dict().items()}
    assert trained["pretrained.all_coord_weights"] and trained["pretrained.in_conv.conv.conv.0.weight"]
    assert not any(changed for k, changed in trained.items() if k.startswith(("linear2", "conv_block_")))


def test_stage_two_freezes_the_experts_and_trains_the_selector(den_data: Path, experts: Path, selector: Path):
    stage1, _ = read_state_dict(experts)
    stage2, _ = read_state_dict(selector)
    assert all(torch.equal(stage2[k], v) for k, v in stage1.items() if k.startswith("pretrained."))  # frozen
    task = _small(TaskCatalog().task("codex/dynamicearthnet"))
    untrained = build_trainable(ModelSpec("codex"), task, den_data)  # the same seeded init, not trained
    untrained.prepare_training(task, ["a", "b", "c"], selector)
    assert not torch.equal(stage2["linear2.weight"], untrained.module.linear2.weight)


def test_the_selector_checkpoint_evaluates_through_run(den_data: Path, checkpoints: Path, selector: Path,
                                                      tmp_path: Path):
    settings = RunSettings(den_data, tmp_path, progress=False, limit=1)  # one 128² series: seconds on a CPU core
    [outcome] = run_tasks([TaskCatalog().task("codex/dynamicearthnet")], ModelSpec("codex", checkpoint_dir=checkpoints),
                          settings)
    assert outcome.error is None, outcome.error
    records = ResultStore(tmp_path).load_all()
    assert records and all(r.model["checkpoint"]["path"] == str(selector) for _, r in records)


def test_both_stages_train_on_the_muds_fake_with_its_missing_months(prepared_fakes, tmp_path: Path):
    """MUDS: RGB, two places (each expert's consistency partner is the other), all-ignore missing months."""
    data = prepared_fakes.data("muds")
    task = _small(TaskCatalog().task("codex/muds"))
    for options, name in (({"stage": "experts"}, "muds_source-experts.pt"), ({}, "muds_source.pt")):
        adapter = build_trainable(ModelSpec("codex", options), task, data)
        train_adapter(adapter, task, data, tmp_path / name, overrides=TrainOverrides(iterations=1, batch_size=2),
                      progress=False)
    state, _ = read_state_dict(tmp_path / "muds_source.pt")
    assert state["linear2.weight"].shape[0] == 2 and state["pretrained.in_conv.conv.conv.0.weight"].shape[1] == 3


def test_stage_one_predicts_the_experts_plain_mean():
    task = TaskCatalog().task("codex/dynamicearthnet")
    adapter = CodexAdapter(stage="experts")
    adapter.setup(task, ["R", "G", "B", "NIR"])
    adapter.prepare_training(task, ["a", "b", "c"], Path("unused.pt"))  # stage 1 reads no file
    adapter.eval()
    x, days = torch.randn(1, 2, 4, 16, 16), torch.tensor([[0, 31]])
    with torch.no_grad():
        torch.testing.assert_close(adapter.predict_series(x, days), adapter.module.pretrained(x, days)[0].mean(dim=0))


# CoDEX's stage-1 configs (Abhishek19009/CoDEx@4ce296e): `configs/model/optimizer/adamw.yaml` (AdamW, lr 1e-4,
# weight decay 0.01, betas (0.9, 0.999)), chosen by `configs/model/baseline.yaml`; `global_batch_size` and
# `trainer.max_epochs` of `configs/experiment/multihead_multiutae_affinity.yaml` (DynamicEarthNet, 55 experts)
# and `configs/experiment/multihead_multiutae_muds.yaml` (MUDS, 40: the repository has no affinity config for it).
UPSTREAM_OPTIMIZER = {"optimizer": "adamw", "lr": 1.0e-4, "weight_decay": 0.01}
UPSTREAM_RUN = {"codex/dynamicearthnet": {"batch_size": 8, "epochs": 200},
                "codex/muds": {"batch_size": 8, "epochs": 100}}


@pytest.mark.parametrize("task_id", sorted(UPSTREAM_RUN))
def test_each_codex_protocol_resolves_to_codex_config_values(task_id: str):
    training = TaskCatalog().task(task_id).training
    assert training is not None
    resolved = training.model_dump()
    assert {k: resolved[k] for k in UPSTREAM_OPTIMIZER} == UPSTREAM_OPTIMIZER
    assert {k: resolved[k] for k in UPSTREAM_RUN[task_id]} == UPSTREAM_RUN[task_id]
    assert resolved["crop"] == 128 and resolved["iterations"] is None  # CoDEX's 128² patches, epochs not steps
