"""Sample-level unlearning measures: likelihood gaps, membership inference, memorisation, nearest neighbours.

A model that has forgotten specific training images should treat them like images it never saw. Measured here:

- :func:`vae_nll`: per-example negative ELBO (an upper bound of ``-log p(x)``) averaged over fixed
  reparameterisation draws, model in eval mode;
- :func:`roc_auc`, :func:`tpr_at_fpr`: how well a score separates members (the forget images) from non-members
  (held-out test images); AUC 0.5 = indistinguishable;
- the **loss-threshold attack** (Yeom et al. 2018): score = ``-nll`` (members fit better);
- the **likelihood-ratio attack**, offline variant (Carlini et al. 2022, "LiRA"): reference ("shadow") models
  trained on random halves of the training data give, for each candidate, the distribution of its loss under
  models that did *not* train on it (mean per candidate, one pooled standard deviation: the fixed-variance
  version for few shadow models); score = how far below that distribution the target model's loss lies;
- :func:`memorisation_scores`: counterfactual memorisation (Feldman & Zhang 2020; for generative models van den
  Burg & Williams 2021): a candidate's mean loss under shadow models that did not train on it minus under those
  that did (nats);
- :func:`nearest_similarity`: for generated samples, the largest cosine similarity to any forget image (pixels),
  and :func:`share_at_least` = ``P(sim(x, D_f) >= delta)`` (the UNO paper's section 2 criterion).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from genunlearn.adapters import eval_mode
from genunlearn.errors import ConfigError


@torch.no_grad()
def vae_nll(
    model: nn.Module,
    x: torch.Tensor,
    per_example: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    latent_dim: int,
    draws: int = 4,
    seed: int = 0,
    chunk: int = 5000,
) -> torch.Tensor:
    """Per-example negative ELBO ``(N,)`` averaged over ``draws`` fixed noise draws (eval mode, seeded).

    ``per_example(model, x, noise)`` is the objective's per-example loss with given reparameterisation noise
    (:meth:`genunlearn.objectives.VAEObjective.per_example`).
    """
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(x), dtype=torch.float64)
    device = next(model.parameters()).device
    with eval_mode(model):
        for _ in range(draws):
            noise = torch.randn(len(x), latent_dim, generator=g)
            for s in range(0, len(x), chunk):
                xb = x[s : s + chunk].to(device)
                out[s : s + chunk] += per_example(model, xb, noise[s : s + chunk].to(device)).double().cpu()
    return out / draws


def _as_np(v: Sequence[float] | torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).reshape(-1)


def roc_auc(positive: Sequence[float] | torch.Tensor, negative: Sequence[float] | torch.Tensor) -> float:
    """Area under the ROC curve of scores (higher = positive): P(a positive outscores a negative), ties count half.

    >>> roc_auc([3, 4], [1, 2]), roc_auc([1], [1])
    (1.0, 0.5)
    """
    pos, neg = _as_np(positive), _as_np(negative)
    if not len(pos) or not len(neg):
        raise ConfigError("the AUC needs at least one positive and one negative score")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    i = 0
    while i < len(both):  # average ranks of ties
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def tpr_at_fpr(
    positive: Sequence[float] | torch.Tensor, negative: Sequence[float] | torch.Tensor, fpr: float = 0.01
) -> float:
    """True-positive rate at the strictest threshold whose false-positive rate on the negatives is <= ``fpr``.

    The threshold is the smallest value ``t`` with ``P(negative > t) <= fpr``; a positive counts when it is above
    it. With fewer than ``1 / fpr`` negatives the rate is taken at FPR 0.
    """
    pos, neg = np.sort(_as_np(positive)), np.sort(_as_np(negative))
    allowed = int(np.floor(fpr * len(neg)))
    threshold = neg[len(neg) - 1 - allowed] if allowed < len(neg) else -np.inf
    return float((pos > threshold).mean())


def attack_summary(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> dict[str, float]:
    """AUC and TPR at 1% FPR of a membership score (higher = member)."""
    return {
        "auc": roc_auc(member_scores, nonmember_scores),
        "tpr_at_1pct_fpr": tpr_at_fpr(member_scores, nonmember_scores, 0.01),
    }


def loss_threshold_scores(nll: torch.Tensor) -> torch.Tensor:
    """The loss-threshold attack's membership score: lower loss = more likely a member."""
    return -nll


def lira_offline_scores(
    target_nll: torch.Tensor, reference_nll: torch.Tensor, reference_out: torch.Tensor
) -> torch.Tensor:
    """Offline likelihood-ratio scores ``(mu_out - nll_target) / sigma`` per candidate (higher = member).

    Args:
        target_nll: ``(N,)`` the attacked model's loss of each candidate.
        reference_nll: ``(S, N)`` each reference model's loss of each candidate.
        reference_out: ``(S, N)`` boolean, True where reference model ``s`` did *not* train on candidate ``n``.

    ``mu_out`` is the candidate's mean loss over its OUT references, ``sigma`` the pooled standard deviation of
    all OUT losses around their candidate's mean. A candidate without OUT references gets NaN.
    """
    ref, mask = reference_nll.double(), reference_out.bool()
    count = mask.sum(0)
    mu = torch.where(
        count > 0, (ref * mask).sum(0) / count.clamp_min(1), torch.full_like(count, float("nan"), dtype=ref.dtype)
    )
    resid = torch.where(mask, ref - mu, torch.zeros_like(ref))
    dof = int((count - 1).clamp_min(0).sum())
    sigma = float(resid.pow(2).sum() / max(dof, 1)) ** 0.5
    return (mu - target_nll.double()) / max(sigma, 1e-12)


def memorisation_scores(reference_nll: torch.Tensor, reference_in: torch.Tensor) -> torch.Tensor:
    """Counterfactual memorisation per candidate: mean OUT loss minus mean IN loss (nats; NaN without both)."""
    ref, inside = reference_nll.double(), reference_in.bool()
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    mean_in = (ref * inside).sum(0) / n_in.clamp_min(1)
    mean_out = (ref * ~inside).sum(0) / n_out.clamp_min(1)
    score = mean_out - mean_in
    return torch.where((n_in > 0) & (n_out > 0), score, torch.full_like(score, float("nan")))


@torch.no_grad()
def nearest_similarity(samples: torch.Tensor, references: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """For each sample, the largest cosine similarity (flattened pixels) to any reference image ``(N,)``."""
    r = references.reshape(len(references), -1).double()
    r = r / r.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = []
    for s in range(0, len(samples), chunk):
        x = samples[s : s + chunk].reshape(-1, r.shape[1]).double().to(r.device)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out.append((x @ r.T).max(1).values.cpu())
    return torch.cat(out)


def share_at_least(similarities: torch.Tensor, delta: float) -> float:
    """``P(sim >= delta)``: the share of samples at least ``delta``-similar to a forget image."""
    return float((similarities >= delta).double().mean())
