"""Training a source-only model under a task's `training:` protocol.

The trainer reaches data only through `TaskData(phase="train")`, so it can read the source split and
the selection split and nothing else. Model selection uses the selection split's headline mIoU; the
best state is saved with the task hash, the normalization and the splits that were read.
Augmentation is the protocol's `augment` (`augment.py`): an optional resize, a random crop (class-capped where the
protocol says so, padded with the ignore label when the sample is smaller), optional photometric distortion, then
flips and rotations, drawn from a generator seeded by (seed, draw index), so runs are repeatable with any number
of DataLoader workers, and a resumed run continues exactly where the crashed one stopped. A model may train under
its own values over the task's protocol (`Adapter.training_protocol`: a backbone preset's protocol) and keep only
what trains (`Adapter.trained_state`: a frozen encoder is not saved). A frozen protocol's feature cache computes
some features in smaller batches than an uncached run would, so there (and after a resume, whose cache starts
empty) runs agree up to the rounding of those matrix products.

Under torchrun (`torchrun --nproc_per_node N -m rsdg_bench.cli train ...`) N processes share each step: the
global batch stays the protocol's, process r takes draws r·B/N … (r+1)·B/N − 1 of it (`rank_draws`: exact,
deterministic shards of the same draws one process would make), each process's cross-entropy is its pixels'
sum over the labelled pixels of all shards (`shard_cross_entropy`), so that after each backward the gradients,
averaged across processes in one all-reduce, are those of one process's loss over the whole batch; the
BatchNorm layers normalize by the statistics of the whole global batch (`synced_batchnorm`: torch's
SyncBatchNorm has no CPU kernels), the buffers are taken from process 0, as DistributedDataParallel does with
its defaults, and selection scores the selection split in exact shards. Process 0 alone writes the state and
the checkpoint; every process resumes from the same state, or the run stops. An error on one process stops
all: with a shared message when it comes outside the model's collectives; inside a forward pass with synced
BatchNorm the others are waiting in its all-reduce and stop when the failed process leaves the group (a
connection error, not the message; not tested). A resumed run restores the CPU generator and process 0's CUDA
generators on every process: with several GPUs and dropout it is not the uninterrupted run. The Dice losses
and adapters' own objectives, computed over the whole batch, are refused over several processes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from rsdg_bench import __version__
from rsdg_bench.base.errors import AdapterError, RsdgError, TaskError
from rsdg_bench.base.io import atomic_write_bytes
from rsdg_bench.datasets.classes import IGNORE_INDEX
from rsdg_bench.datasets.data_lock import reading_all
from rsdg_bench.evaluator.distributed import ProcessGroup
from rsdg_bench.evaluator.evaluation import evaluate_split_counts
from rsdg_bench.models.adapters import Adapter, checkpoint_bytes
from rsdg_bench.models.model_spec import ModelSpec, build_for_task
from rsdg_bench.models.registry import require_adapter_kind, resolve_adapter
from rsdg_bench.protocol.kind import get_kind
from rsdg_bench.protocol.task_data import SegmentationSplit, TaskData
from rsdg_bench.protocol.task_schema import AugmentSpec, Task, TrainingSpec, without_later_defaults
from rsdg_bench.scoring.split_counts import task_scores
from rsdg_bench.train.augment import crop_draw
from rsdg_bench.train.synced_batchnorm import synchronize_batch_norm
from rsdg_bench.train.training_history import TrainingHistory, write_history

log = logging.getLogger(__name__)


class RandomCrops(Dataset):
    """Draw i → a random crop of a random sample, resized, class-capped, distorted, flipped and rotated as
    `augment` asks (`augment.crop_draw`), determined by (seed, i) alone.

    The resize, crop, flips and rotations act on the last two axes, so a time series (T×C×H×W with T×H×W labels)
    is cut the same way on every date; an image-level label (0-d) is kept as it is. Draws are dicts with
    `image`, `label`, `domain` (the sample's place as an index into `domains`, the split's sorted places: what
    an adapter with per-domain parts, such as CoDEX's experts, trains on) and, for a time series, `days`.
    """

    def __init__(self, split: SegmentationSplit, crop: int, draws: int, seed: int,
                 augment: AugmentSpec = AugmentSpec()) -> None:
        self.split, self.crop, self.draws, self.seed, self.augment = split, crop, draws, seed, augment
        places = split.groups()
        self.domains = sorted(set(places))
        index = {place: i for i, place in enumerate(self.domains)}
        self.sample_domain = [index[place] for place in places]

    def __len__(self) -> int:
        return self.draws

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, draw])
        index = int(rng.integers(len(self.split)))
        sample = self.split[index]
        image, label = crop_draw(sample["image"], sample["label"].long(), self.crop, self.augment, rng)
        draw_out = {"image": image, "label": label, "domain": torch.tensor(self.sample_domain[index])}
        if "days" in sample:
            draw_out["days"] = sample["days"]
        return draw_out


@dataclass(frozen=True)
class TrainOverrides:
    """CLI flags that scale the paper's protocol down (smoke runs, the demo), or repeat it under another seed
    (`--seed`: the same protocol, one more draw of its training); recorded in the checkpoint."""

    iterations: int | None = None
    batch_size: int | None = None
    val_interval: int | None = None
    lr: float | None = None
    seed: int | None = None

    def apply(self, spec: TrainingSpec) -> TrainingSpec:
        """The protocol with these flags, validated like the YAML's (positive counts and rates, finite); an
        iteration count replaces an epoch count."""
        changes = {k: v for k, v in vars(self).items() if v is not None}
        if "iterations" in changes:
            changes["epochs"] = None
        try:
            return TrainingSpec.model_validate({**spec.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))} {e['msg'].lower()}" for e in exc.errors())
            raise TaskError(f"training flags {changes} do not give a valid protocol: {problems}",
                            "--iterations, --batch-size and --val-interval take whole numbers above 0, --lr a "
                            "number above 0, --seed a whole number") from exc


@dataclass(frozen=True)
class TrainReport:
    checkpoint: Path
    best_iteration: int
    best_selection_value: float | None  # of `selection_metric` on the selection split
    opened_splits: list[str]
    resumed_from: int = 0
    selection_metric: str = "miou"


def require_trainable(adapter: Adapter | type[Adapter], task: Task) -> None:
    """Refuse an adapter the harness cannot train: its class sets `trainable = False` (released weights
    only), or, once set up, it has no module to optimise."""
    if not adapter.trainable or (isinstance(adapter, Adapter) and adapter.module is None):
        raise AdapterError(f"adapter {adapter.name!r} cannot be trained by the harness (its class sets "
                           "`trainable = False`: it evaluates released weights)",
                           f"evaluate its released checkpoint with `rsdg-bench run --task {task.id} --model "
                           f"{adapter.name} --checkpoint FILE`, or train a trainable adapter (`rsdg-bench adapter "
                           "list` marks them)")


def build_trainable(model: ModelSpec, task: Task, data_root: Path, seed: int | None = None) -> Adapter:
    """An adapter set up for `task`, its random init seeded by `seed`, else the protocol's seed (repeatable
    training); an adapter that cannot be trained is refused before anything is built or read."""
    require_trainable(resolve_adapter(model.adapter), task)
    torch.manual_seed(seed if seed is not None else task.training.seed if task.training else 0)
    return build_for_task(model, task, TaskData(data_root, task, phase="train"))


def _optimizer(spec: TrainingSpec, adapter: Adapter, module: torch.nn.Module) -> torch.optim.Optimizer:
    """The protocol's optimizer over the adapter's parameter groups where it has its own (per-parameter weight
    decay, as a paper's optimizer constructor makes them), else over every parameter of the module."""
    params = adapter.parameter_groups(spec.weight_decay) or module.parameters()
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 − 2 Σ z·q / Σ (z + q), summed over every labelled pixel and class (CromSS's eq. 4; z one-hot
    labels, q softmax probabilities); ignored pixels take no part."""
    valid = labels != IGNORE_INDEX
    probabilities = logits.softmax(dim=1).permute(0, 2, 3, 1)[valid]  # N × K
    one_hot = F.one_hot(labels[valid].long(), logits.shape[1]).to(probabilities.dtype)
    return 1 - 2 * (one_hot * probabilities).sum() / (one_hot.sum() + probabilities.sum()).clamp_min(1e-6)


def smp_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """segmentation_models_pytorch's multiclass DiceLoss, as CromSS's fine-tuning scripts build it (from
    logits, the ignore label left out): 1 − Dice per class over the batch, a class absent from the batch's
    labels counting 0, averaged over all classes."""
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE_INDEX)(logits, labels)


def shard_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor,
                        world_size: int) -> torch.Tensor:
    """This process's share of the global batch's mean cross-entropy, scaled so that averaging the processes'
    gradients gives the gradient of one process's loss over the whole batch: the sum over this shard's
    labelled pixels, divided by the labelled pixels of every shard (`labelled`, all-reduced), times the number
    of processes. A shard without a labelled pixel contributes 0, not NaN."""
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / labelled.clamp_min(1).to(total.dtype) * world_size


def has_own_loss(adapter: Adapter) -> bool:
    """Whether the adapter trains with its own objective (`Adapter.training_loss`) instead of the protocol's."""
    return type(adapter).training_loss is not Adapter.training_loss


def batch_loss(adapter: Adapter, task: Task, batch: dict[str, torch.Tensor], band_names: list[str],
               device: torch.device, loss_kind: str) -> torch.Tensor:
    """One batch's training loss in one process: the adapter's own objective where it has one, else the
    protocol's loss (`loss_kind`) on the kind's logits."""
    kind = get_kind(task.kind)
    inputs = kind.training_inputs(adapter, task, batch, band_names, device)
    targets = {k: v.to(device) for k, v in batch.items() if k in ("label", "domain")}
    own = adapter.training_loss(inputs, targets)
    if own is not None:
        return own
    logits, labels = kind.loss_view(getattr(adapter, kind.entry_point)(*inputs), targets["label"])
    return segmentation_loss(loss_kind, logits, labels)


def segmentation_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The protocol's loss (`TrainingSpec.loss`) of one batch."""
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    if kind == "ce+dice":
        return loss + dice_loss(logits, labels)
    if kind == "ce+smp_dice":
        return loss + smp_dice_loss(logits, labels)
    return loss


def training_logits(adapter: Adapter, task: Task, batch: dict[str, torch.Tensor], band_names: list[str],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of one training batch, shaped for the loss by the task's kind."""
    return get_kind(task.kind).training_logits(adapter, task, batch, band_names, device)


def selection_metric(task: Task) -> str:
    """What model selection maximizes (the task kind's choice: accuracy for classification, else mIoU)."""
    return get_kind(task.kind).selection_metric


def lr_factor(spec: TrainingSpec, iteration: int, per_epoch: int) -> float:
    """The learning rate before step `iteration` (0-based) as a multiple of `spec.lr`, for a spec whose
    `iterations` are resolved. With `schedule_step: epoch` it changes only at the start of each pass of
    `per_epoch` iterations (as a Lightning LambdaLR stepped per epoch). Cosine: from lr to `final_lr` over the
    first `decay_fraction` of the run, then `final_lr` (CromSS's scheduler with T = decay_fraction × epochs). Poly:
    (1 − t/T)^0.9 with T the run's iterations, or `schedule_iterations` where the paper's scheduler outlasts its
    run (CrossEarth's)."""
    if spec.schedule == "constant":
        return 1.0
    assert spec.iterations is not None  # resolved (above)
    step = iteration if spec.schedule_step == "iteration" else iteration // per_epoch * per_epoch
    if spec.schedule == "poly":  # held at 0 past its horizon, as mmengine's PolyLR after `end`
        return max(0.0, 1 - step / (spec.schedule_iterations or spec.iterations)) ** 0.9
    assert spec.final_lr is not None  # the cosine schedule's (TrainingSpec)
    floor = spec.final_lr / spec.lr
    progress = step / spec.iterations
    if progress >= spec.decay_fraction:
        return floor
    return floor + (1 + math.cos(math.pi * progress / spec.decay_fraction)) * (1 - floor) / 2


def train_state_path(checkpoint_path: Path) -> Path:
    """Where training keeps its resumable state, next to the checkpoint it will write."""
    return checkpoint_path.with_name(checkpoint_path.name + ".train-state")


def rank_draws(iterations: range, batch_size: int, group: ProcessGroup) -> list[int]:
    """The draw indices this process trains on over `iterations`: its B/N consecutive draws of each global
    batch of B (draws it·B … it·B + B − 1), so the N processes together take exactly one process's draws."""
    local = batch_size // group.world_size
    return [it * batch_size + group.rank * local + j for it in iterations for j in range(local)]


def _average_gradients(module: torch.nn.Module, group: ProcessGroup) -> None:
    """Each gradient replaced by its mean over the processes (one all-reduce of them all, flattened)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if group.world_size == 1 or not grads:
        return
    flat = group.sum(torch.cat([g.reshape(-1) for g in grads])) / group.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _buffers_from_main(module: torch.nn.Module, group: ProcessGroup) -> None:
    """Every process takes process 0's buffers (BatchNorm's running statistics), as DDP's default does."""
    if group.world_size == 1:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        shared = buffer.to(group.collective_device)
        dist.broadcast(shared, src=0)
        buffer.copy_(shared.to(buffer.device))


def train_adapter(adapter: Adapter, task: Task, data_root: Path, checkpoint_path: Path, *,
                  overrides: TrainOverrides = TrainOverrides(), device: torch.device = torch.device("cpu"),
                  num_workers: int = 0, progress: bool = True, group: ProcessGroup = ProcessGroup()) -> TrainReport:
    """Train `adapter` (already set up) on the task's source split and save the selected checkpoint.

    At every selection point the full training state (weights, optimizer, schedule, best so far) is saved
    next to the checkpoint; a rerun with the same task, adapter and protocol resumes from it and ends with
    the same weights as an uninterrupted run. The datasets it reads are held (`data_lock.reading_all`) for
    the whole run, so no prepare publishes a new version of them in between.
    """
    datasets = {ref.dataset for ref in (task.source, task.select) if ref is not None}
    with reading_all(data_root, datasets):
        return _train(adapter, task, data_root, checkpoint_path, overrides, device, num_workers, progress, group)


def _train(adapter: Adapter, task: Task, data_root: Path, checkpoint_path: Path, overrides: TrainOverrides,
           device: torch.device, num_workers: int, progress: bool, group: ProcessGroup) -> TrainReport:
    require_adapter_kind(task, adapter)
    if task.training is None:
        raise TaskError(f"task {task.id} has no `training:` protocol", "add one to the task YAML to train on it")
    require_trainable(adapter, task)
    spec = overrides.apply(adapter.training_protocol(task.training))
    access = TaskData(data_root, task, phase="train")
    source = access.open(task.source)  # a label-efficiency protocol's subset only (`TaskData.label_subset`)
    adapter.prepare_training(task, sorted(set(source.groups())), checkpoint_path)  # the places `domain` indexes
    module = adapter.module  # after prepare_training, which may rebuild it
    assert module is not None  # require_trainable refuses an adapter without one
    label_subset = access.label_subset
    if label_subset is not None:
        log.info("%s: training on %d of its %d samples (label fraction %g)", task.source.slug,
                 label_subset["samples"], label_subset["of"], label_subset["fraction"])
    select = access.open(task.select) if task.select is not None else None
    per_epoch = spec.iterations_per_epoch(len(source))
    spec = spec.model_copy(update={"iterations": spec.total_iterations(len(source))})  # epochs → iterations
    assert spec.iterations is not None
    if group.world_size > 1 and spec.loss != "ce":
        raise TaskError(f"the {spec.loss} loss is computed over the whole batch; training it in {group.world_size} "
                        "processes, each with its share, would optimise another loss",
                        "train this task in one process (without torchrun); multi-process training takes the "
                        "cross-entropy loss")
    if group.world_size > 1 and has_own_loss(adapter):
        raise TaskError(f"{adapter.name} trains with its own objective, computed over the whole batch; training it "
                        f"in {group.world_size} processes, each with its share, would optimise another loss",
                        f"train {adapter.name} in one process (without torchrun)")
    if spec.batch_size % group.world_size:
        raise TaskError(f"the protocol's batch of {spec.batch_size} does not split evenly over {group.world_size} "
                        "processes", "start as many processes as divide the batch (torchrun --nproc_per_node), or "
                        "set --batch-size to a multiple of them (then the run is off-protocol)")
    contract = adapter.input_contract()
    torch.manual_seed(spec.seed)
    module.to(device)
    synchronize_batch_norm(module, group)  # batch statistics over the global batch, as one process has them
    optimizer = _optimizer(spec, adapter, module)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(spec, it, per_epoch))
    fingerprint = {"task_hash": task.hash, "adapter": adapter.identity(),  # a state saved before a field was
                   "training": without_later_defaults("training", spec.model_dump(mode="json"))}  # added resumes
    if label_subset is not None:  # data prepared again may give another subset: its state is not resumed
        fingerprint["label_subset"] = label_subset["sha256"]
    state_path = train_state_path(checkpoint_path)
    metric = selection_metric(task)
    done, best, saved_history = _resume(state_path, fingerprint, adapter, optimizer, scheduler)
    if not group.agree(done):
        raise TaskError(f"the processes of this training found different saved states ({state_path})",
                        "give every process the same results folder (a shared file system), or remove the "
                        "`.train-state` file to start over")
    history = (TrainingHistory.from_state(saved_history, done) if saved_history else
               TrainingHistory(task_id=task.id, metric=metric))
    if done:
        log.info("%s: resuming an interrupted run at iteration %d of %d", task.id, done, spec.iterations)
    draws = RandomCrops(source, spec.crop, spec.iterations * spec.batch_size, spec.seed, spec.augment)
    # The loader draws its workers' seed from a generator of its own as it starts, not from the global one, whose
    # state a resumed run restores for the model's own draws (dropout, sampled points).
    loader = DataLoader(Subset(draws, rank_draws(range(done, spec.iterations), spec.batch_size, group)),
                        batch_size=spec.batch_size // group.world_size, shuffle=False, num_workers=num_workers,
                        drop_last=True, generator=torch.Generator().manual_seed(spec.seed))
    interval = spec.val_interval or spec.iterations
    bar = tqdm(total=spec.iterations, initial=done, desc=f"train {task.checkpoint_key}", unit="it",
               disable=not (progress and group.is_main))
    for iteration, batch in enumerate(loader, start=done + 1):
        module.train()
        loss, mean_loss = _step_loss(adapter, task, batch, source.band_names, device, spec.loss, group, iteration)
        if not math.isfinite(mean_loss):
            raise AdapterError(f"training loss became {mean_loss} at iteration {iteration}",
                               "lower the learning rate or check the normalization")
        history.loss.append(mean_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(module, group)
        optimizer.step()
        _buffers_from_main(module, group)
        scheduler.step()
        bar.update()
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        if iteration % interval == 0 or iteration == spec.iterations:
            if select is not None:
                counts = evaluate_split_counts(adapter, select, task, device, progress=False, group=group)
                value = getattr(task_scores(task, counts), metric)  # under the task's convention, as records
                history.selection.append({"iteration": iteration, "value": value})
                log.info("%s: iteration %d, loss %.4f, selection %s %.4f", task.id, iteration, mean_loss, metric,
                         value)
                bar.set_postfix({"loss": f"{mean_loss:.3f}", f"select_{metric}": f"{value:.3f}"})
                if best is None or value > best["value"]:
                    best = {"value": value, "iteration": iteration, "state": _cpu_copy(adapter.trained_state())}
            if group.is_main:
                atomic_write_bytes(state_path, checkpoint_bytes({
                    "fingerprint": fingerprint, "iteration": iteration, "module": _cpu_copy(adapter.trained_state()),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
                    "history": history.to_state(), "rng": _rng_state()}))
    bar.close()
    if best is None:
        best = {"value": math.nan, "iteration": spec.iterations, "state": _cpu_copy(adapter.trained_state())}
    selected = None if math.isnan(best["value"]) else best["value"]
    payload = {
        "state_dict": best["state"],
        "rsdg": {
            "task_id": task.id, "task_hash": task.hash, "checkpoint_key": task.checkpoint_key,
            "adapter": adapter.identity(), "normalization": contract.record(), "band_names": source.band_names,
            "training": spec.model_dump(mode="json"), "resumed_from": done or None, "selection": {
                "split": task.select.slug if task.select else None, "metric": metric,
                "value": selected, "iteration": best["iteration"]},
            # what was minimised: the protocol's loss, or the adapter's own objective (its options say which terms)
            "objective": f"{adapter.name}.training_loss" if has_own_loss(adapter) else spec.loss,
            "opened_splits": access.opened, "label_subset": label_subset, "harness_version": __version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "processes": group.world_size,
        },
    }
    if group.is_main:
        atomic_write_bytes(checkpoint_path, checkpoint_bytes(payload, checkpoint_path))
        history.selected_iteration = best["iteration"]
        write_history(history, checkpoint_path)
        state_path.unlink(missing_ok=True)
    return TrainReport(checkpoint_path, best["iteration"], selected, access.opened, resumed_from=done,
                       selection_metric=metric)


def _step_loss(adapter: Adapter, task: Task, batch: dict[str, torch.Tensor], band_names: list[str],
               device: torch.device, kind: str, group: ProcessGroup, iteration: int) -> tuple[torch.Tensor, float]:
    """(this process's loss to backpropagate, the global batch's mean loss) of one step. Over several processes
    the collectives come in the same order on every process whatever fails: the labelled pixels of all shards,
    then the loss with a failure flag, so an error on one process stops every process instead of leaving the
    others waiting in a collective it never reaches."""
    if group.world_size == 1:
        loss = batch_loss(adapter, task, batch, band_names, device, kind)
        return loss, loss.item()
    labelled = group.sum((batch["label"] != IGNORE_INDEX).sum().reshape(1).to(torch.float64))
    failure: Exception | None = None
    try:
        logits, labels = training_logits(adapter, task, batch, band_names, device)
        loss = shard_cross_entropy(logits, labels, labelled.to(logits.device), group.world_size)
        value = loss.detach().to("cpu", torch.float64).reshape(1)
    except Exception as exc:  # shared below, then raised on every process
        failure, value = exc, torch.zeros(1, dtype=torch.float64)
    shared = group.sum(torch.cat([value, torch.tensor([float(failure is not None)], dtype=torch.float64)]))
    if failure is not None:
        raise failure
    if shared[1] > 0:
        raise RsdgError(f"another process of this distributed training failed at iteration {iteration}",
                        "see that process's output above")
    return loss, shared[0].item() / group.world_size


def _rng_state() -> dict[str, Any]:
    """torch's generators (the CPU's and each CUDA device's): what a model that draws during training (dropout,
    Mask2Former's sampled points) needs restored for a resumed run to equal an uninterrupted one."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _restore_rng(state: dict[str, Any] | None) -> None:
    """Put back `_rng_state()`'s generators (a state saved before they were kept has none: left as seeded)."""
    if not state:
        return
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _resume(state_path: Path, fingerprint: dict[str, Any], adapter: Adapter,
            optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, dict[str, Any] | None, dict | None]:
    """Load a saved training state made under the same fingerprint; (iterations done, best so far, history)."""
    if not state_path.exists():
        return 0, None, None
    try:
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception:  # a state cut short by a crash mid-write cannot exist (atomic writes); anything else: start over
        return 0, None, None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return 0, None, None
    adapter.load_trained_state(saved["module"], str(state_path))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _restore_rng(saved.get("rng"))
    return int(saved["iteration"]), saved["best"], saved.get("history")
