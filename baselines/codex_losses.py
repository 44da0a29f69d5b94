"""CoDEX's training objectives (Abhishek et al., CVPR-W 2025, §3.1–3.3), our implementation of the paper's
equations on the shapes of `codex_model.py`: expert scores D×B×T×K×H×W, labels B×T×H×W (255 ignored).

- Stage 1 (experts on the shared backbone): `expert_losses` gives L_domain (Eq. 1: each sample's own expert)
  and L_con (Eq. 2: the affinity-weighted mixture of the other experts, a = the row-wise softmax of the learned
  D×D matrix with the diagonal left out, so the gradient reaches every other expert and the affinity).
- Stage 2 (frozen experts, the selector trained): `accuracy_loss` is L_acc (Eq. 3: Σ_d |selector_d − acc_d|
  with acc the pixel accuracy of expert d on the sample), and `focal_loss` on the selector's softmax mixture
  (τ = 1, the mixture the model predicts with) is L_mix (Eq. 4).

ℓ is the focal loss, pixel-wise, averaged over every labelled pixel of the batch. Its γ is 0, as CoDEX's
repository constructs it (`models/losses.py` and `headselector/losses/focalloss.py`: no config sets γ, whose
default is 0), which makes it the cross-entropy of the experts' scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rsdg_bench.datasets.classes import IGNORE_INDEX

FOCAL_GAMMA = 0.0  # CoDEX's FocalLoss default; no CoDEX config or script passes another


def focal_loss(scores: torch.Tensor, labels: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """−(1 − p_y)^γ · log p_y, p = softmax over the class axis (third from last: B×T×K×H×W or B×K×H×W against
    labels without it), averaged over the labelled pixels; 0 (still differentiable) when none is labelled,
    where a mean would be NaN. As upstream, the weight (1 − p_y)^γ carries no gradient."""
    valid = labels != IGNORE_INDEX
    if not valid.any():
        return scores.sum() * 0
    log_p = F.log_softmax(scores.movedim(-3, -1)[valid], dim=-1)  # N × K
    log_py = log_p.gather(1, labels[valid].long()[:, None]).squeeze(1)
    weight = (1 - log_py.detach().exp()) ** gamma
    return -(weight * log_py).mean()


def affinity(weights: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """Row `domains[b]` of a = the row-wise softmax of the learned D×D `weights` over e ≠ d (a_{d,d} = 0): B×D."""
    rows = weights[domains]
    own = F.one_hot(domains, weights.shape[0]).bool()
    return rows.masked_fill(own, float("-inf")).softmax(dim=-1)


def expert_losses(heads: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
                  domains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_domain, L_con) of a batch: the focal loss of each sample's own expert (`domains`, B indices into the D
    experts of `heads`), and of Σ_{e≠d} a_{d,e} φ_e, the other experts mixed by the learned affinity."""
    if heads.shape[0] < 2:
        raise ValueError("the consistency loss mixes the other domains' experts: it needs at least two domains")
    samples = torch.arange(heads.shape[1], device=heads.device)
    own = heads[domains, samples]  # B×T×K×H×W
    a = affinity(weights, domains)  # B×D
    others = torch.einsum("bd,db...->b...", a, heads)
    return focal_loss(own, labels), focal_loss(others, labels)


def expert_accuracy(heads: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """acc(φ_d(x), y): each expert's pixel accuracy (argmax over classes) on each sample's labelled pixels of
    every date, B×D in [0, 1]; NaN for a sample without a labelled pixel. No gradient: it is L_acc's target."""
    with torch.no_grad():
        valid = (labels != IGNORE_INDEX).flatten(1)  # B×N
        correct = ((heads.argmax(dim=3) == labels[None]).flatten(2) & valid[None]).sum(dim=2)  # D×B
        return (correct / valid.sum(dim=1)).transpose(0, 1).float()  # 0/0 → NaN


def accuracy_loss(selector: torch.Tensor, accuracy: torch.Tensor) -> torch.Tensor:
    """L_acc: Σ_d |φ_select(x)[d] − acc(φ_d(x), y)| (Eq. 3), averaged over the samples that have labelled pixels
    (`accuracy` NaN elsewhere); 0 when none has."""
    known = ~accuracy.isnan().any(dim=1)
    if not known.any():
        return selector.sum() * 0
    return (selector[known] - accuracy[known]).abs().sum(dim=1).mean()
