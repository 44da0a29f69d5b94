"""BatchNorm whose batch statistics span every process of a distributed training, on any device.

Under `torchrun` each process sees B/N images of the global batch. A plain BatchNorm normalizes them by their
own mean and variance, so N processes train another model than one process with the whole batch. torch's
`nn.SyncBatchNorm` shares the statistics, but only on accelerators (its kernels, e.g. `batch_norm_stats`, have no
CPU implementation), and gloo training on the CPU is how this harness checks distributed training against one
process. `synchronize_batch_norm` therefore swaps every BatchNorm of a module for `SyncedBatchNorm`, which
shares per-channel sums with one all-reduce (through the run's `ProcessGroup`, gloo or NCCL) in the forward pass
and one in the backward pass:

- forward: the global count, Σx and Σx² per channel (summed in float64, where the order of the processes' sums
  moves the mean by far less than float32 can show) give the mean and the biased variance that normalize, and
  the unbiased variance that the running statistics take, as `F.batch_norm` does with the whole batch;
- backward: with x̂ the normalized input and g the output's gradient, dx = w·invstd·(g − mean(g) − x̂·mean(g·x̂)),
  the means over the global batch (all-reduced Σg and Σg·x̂): the gradient of the sum of every process's loss,
  which the trainer's average of the parameter gradients turns into the gradient of their mean.

The swapped module keeps the same parameters and buffers under the same names, so state dicts and checkpoints
are unchanged; in evaluation mode, or in one process, it is plain BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rsdg_bench.evaluator.distributed import ProcessGroup


class _SyncedNorm(torch.autograd.Function):
    """Batch normalization over the union of every process's batch (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running: tuple[torch.Tensor, torch.Tensor] | None, momentum: float, eps: float,
                group: ProcessGroup) -> torch.Tensor:
        axes = [0, *range(2, x.dim())]
        wide = x.detach().to(torch.float64)
        local = torch.cat([torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device),
                           wide.sum(axes), (wide * wide).sum(axes)])
        shared = group.sum(local)
        channels = x.shape[1]
        count, total, squares = shared[0], shared[1:1 + channels], shared[1 + channels:]
        mean = total / count
        variance = (squares / count - mean * mean).clamp_min(0)
        if running is not None:
            running_mean, running_var = running
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
                unbiased = variance * count / (count - 1).clamp_min(1)
                running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        shape = [1, channels] + [1] * (x.dim() - 2)
        invstd = (variance + eps).rsqrt().to(x.dtype).view(shape)
        normalized = (x - mean.to(x.dtype).view(shape)) * invstd
        ctx.save_for_backward(normalized, invstd, weight)
        ctx.group, ctx.count, ctx.axes, ctx.shape = group, count, axes, shape
        out = normalized.clone() if weight is None and bias is None else normalized  # never the saved tensor
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        normalized, invstd, weight = ctx.saved_tensors
        axes, shape = ctx.axes, ctx.shape
        local_sum = grad.sum(axes)
        local_dot = (grad * normalized).sum(axes)
        shared = ctx.group.sum(torch.cat([local_sum, local_dot]).to(torch.float64))
        channels = local_sum.numel()
        mean_grad = (shared[:channels] / ctx.count).to(grad.dtype).view(shape)
        mean_dot = (shared[channels:] / ctx.count).to(grad.dtype).view(shape)
        scale = invstd if weight is None else invstd * weight.view(shape)
        grad_x = scale * (grad - mean_grad - normalized * mean_dot)
        grad_weight = local_dot if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = local_sum if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None


class SyncedBatchNorm(_BatchNorm):
    """A BatchNorm (1-, 2- or 3-d) whose training-mode statistics span every process of `group`."""

    def __init__(self, source: _BatchNorm, group: ProcessGroup) -> None:
        super().__init__(source.num_features, source.eps, source.momentum, source.affine, source.track_running_stats)
        self.weight, self.bias = source.weight, source.bias
        self.running_mean, self.running_var = source.running_mean, source.running_var
        self.num_batches_tracked = source.num_batches_tracked
        self.training = source.training
        self.group = group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.group.world_size == 1:
            return super().forward(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        running = None
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average, as _BatchNorm's
                momentum = 1.0 / float(self.num_batches_tracked)
            running = (self.running_mean, self.running_var)
        return _SyncedNorm.apply(input, self.weight, self.bias, running, momentum, self.eps, self.group)


def synchronize_batch_norm(module: nn.Module, group: ProcessGroup) -> int:
    """Swap every BatchNorm inside `module` for a `SyncedBatchNorm` over `group`, in place; how many were swapped
    (none in one process). The parameters and buffers stay the same objects, under the same names."""
    if group.world_size == 1:
        return 0
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and not isinstance(child, SyncedBatchNorm):
            setattr(module, name, SyncedBatchNorm(child, group))
            swapped += 1
        else:
            swapped += synchronize_batch_norm(child, group)
    return swapped
