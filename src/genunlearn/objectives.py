"""Objectives: what the retain and forget losses are, and the classifier ("hat") term.

A *task* turns a batch into a retain loss and a forget loss for any model:

- :class:`StandardTask` — the same objective ``loss(model, batch)`` on retain and forget batches (the
  VAE ELBO of paper eq. 12 is one such objective, :func:`vae_objective`).
- :class:`ReplacementTask` — conditional replacement unlearning (paper section 3.4): the forget condition
  ``c_f`` is taught to generate target data ``x_t``: retain loss ``L^R = L(M(c_f), x_t) + L(M(c_t), x_t)``
  (eq. 4) on a target batch and forget loss ``L(M(c_f), x_f)`` (eq. 7) on a forget batch.

The hat term (:class:`HatTerm`) generates samples with gradients, classifies them and returns either
the paper's Bernoulli KL (eq. 9) or the reference code's categorical KL to a uniform distribution over
the retain classes.

The latent replacement term (:class:`LatentReplacement`, genunlearn) is the classifier-free analogue of
conditional replacement for generators driven by a latent code: the frozen original encoder says where in
latent space the forget examples live, and the generator is taught to produce *retained* examples (each
forget example's nearest retained neighbours in that latent space) there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn
from torch.nn import functional as F

from genunlearn.errors import ConfigError
from genunlearn.models.mnist_vae import MNISTVAE, vae_loss

Objective = Callable[[nn.Module, Any], torch.Tensor]


class Task(Protocol):
    """Turns batches into the two losses the methods work with."""

    def retain_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Loss on a retain (or target) batch."""
        ...

    def forget_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Loss on a forget batch."""
        ...


@dataclass(frozen=True)
class StandardTask:
    """Unconditional unlearning: one objective on both batches."""

    objective: Objective

    def retain_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.objective(model, batch)

    def forget_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.objective(model, batch)


@dataclass(frozen=True)
class ReplacementTask:
    """Conditional replacement unlearning (paper eqs. 4-8): condition ``forget_condition`` -> ``target_condition``.

    ``conditional_loss(model, x, c)`` is the model's training loss for data ``x`` under conditions ``c``
    (an int64 tensor of shape ``(B,)``). Retain batches are target data ``x_t``; forget batches are ``x_f``.
    """

    conditional_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    forget_condition: int
    target_condition: int

    def _cond(self, x: torch.Tensor, c: int) -> torch.Tensor:
        return torch.full((x.shape[0],), c, dtype=torch.int64, device=x.device)

    def retain_loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x_t = batch
        return self.conditional_loss(model, x_t, self._cond(x_t, self.forget_condition)) + self.conditional_loss(
            model, x_t, self._cond(x_t, self.target_condition)
        )

    def forget_loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return self.conditional_loss(model, batch, self._cond(batch, self.forget_condition))


def vae_objective(reduction: str = "sum") -> Objective:
    """The VAE negative ELBO (paper eq. 12) with ``reduction`` over the batch (``"sum"`` like the reference
    code, ``"mean"`` like the paper's equations)."""
    if reduction not in ("sum", "mean"):
        raise ConfigError(f"unknown loss reduction {reduction!r}; use 'sum' or 'mean'")

    def objective(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        if not isinstance(model, MNISTVAE):
            raise ConfigError("the VAE objective needs an MNISTVAE-like model with encode/decode")
        return vae_loss(model, batch, reduction=reduction)

    return objective


#: The classifier terms genunlearn implements (see :class:`HatTerm`).
HAT_KINDS = ("bernoulli", "reference", "uniform-kl")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Options of the model-side terms: applied where the task, the hat term and the replacement term are built.

    The engine (:func:`genunlearn.loop.unlearn`) receives those objects ready-made and never reads these
    options; the code that builds them (an experiment, a model adapter, the CLI) applies them and records them
    next to the engine's :class:`~genunlearn.loop.UnlearnConfig`.

    Attributes:
        loss_reduction: ``"sum"`` over batch and pixels (reference code) or ``"mean"`` over the batch (paper's
            equations); changes the weight of beta_o, beta_h and beta_r relative to the losses.
        hat_kind: the classifier term (:data:`HAT_KINDS`): ``"bernoulli"`` (paper eq. 9), ``"reference"``
            (the reference code's term), ``"uniform-kl"`` (KL(u || mean softmax), a genunlearn variant).
        alpha: threshold of eq. 9 (``bernoulli`` only).
        hat_samples: samples generated per step for the hat term (paper: N_g = B).
        replace_neighbors: ``rep``: retained neighbours per forget example (targets of ``L_rep``).
    """

    loss_reduction: str = "sum"
    hat_kind: str = "bernoulli"
    alpha: float = 1e-8
    hat_samples: int = 128
    replace_neighbors: int = 1

    def validate(self) -> ObjectiveConfig:
        """Check every field; raises :class:`ConfigError` with one line."""
        if self.loss_reduction not in ("sum", "mean"):
            raise ConfigError(f"loss reduction must be 'sum' or 'mean', got {self.loss_reduction!r}")
        _check_hat_kind(self.hat_kind)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.hat_samples < 1:
            raise ConfigError(f"hat samples must be >= 1, got {self.hat_samples}")
        if self.replace_neighbors < 1:
            raise ConfigError(f"replace_neighbors must be >= 1, got {self.replace_neighbors}")
        return self


def _check_hat_kind(kind: str) -> None:
    if kind == "categorical":
        raise ConfigError(
            "hat kind 'categorical' was split in two: use 'reference' (the reference code's term, used by the "
            "'as published' rows) or 'uniform-kl' (KL(u || mean softmax), what genunlearn called 'categorical')"
        )
    if kind not in HAT_KINDS:
        raise ConfigError(f"hat kind must be one of {', '.join(HAT_KINDS)}, got {kind!r}")


@dataclass
class HatTerm:
    """The classifier term ``d_KL`` of classifier-assisted unlearning (paper eq. 9, or the reference variant).

    With ``p`` the softmax of the classifier over the ``samples`` generated samples and ``p_bar`` its batch mean,
    ``F`` the forget classes and ``u`` uniform over the retained classes (zero on ``F``):

    - ``"bernoulli"`` (paper eq. 9): ``KL(Bern(p_r) || Bern(1 - alpha))`` with ``p_r = sum_{c not in F} p_bar_c``
      and ``q = 1 - p_r`` computed as ``sum_{c in F} p_bar_c`` in log space, so that the term and its gradient
      stay finite when the forget mass underflows (``q = 1 - p_r`` rounds to 0 in float32 below ~6e-8 and
      ``xlogy(0, 0)`` has a NaN gradient).
    - ``"reference"`` (the reference code's ``uniformity_loss_surgery``, MNIST ``vae_loss.py``):
      ``sum_c p_bar_c log((p_bar_c + 1e-8) / (u_c + 1e-8))`` — KL(p_bar || u), finite thanks to the 1e-8.
      Its gradient on the forget logits is much larger than ``uniform-kl``'s.
    - ``"uniform-kl"`` (genunlearn): ``KL(u || p_bar) = mean_{c not in F} (log u_c - log p_bar_c)``.

    The classifier is evaluated in eval mode (its BatchNorm/dropout never see the generated batch as training
    data) and left in the mode it was in; its parameters are frozen.

    Attributes:
        generate: ``generate(model, n) -> samples`` with gradients flowing to the model.
        classifier: maps samples to class logits.
        forget_classes: classes to forget.
        num_classes: number of classifier classes.
        kind: one of :data:`HAT_KINDS`.
        alpha: the small threshold of eq. 9.
        samples: number of samples generated per step (paper: N_g = B = 128).
    """

    generate: Callable[[nn.Module, int], torch.Tensor]
    classifier: nn.Module
    forget_classes: Sequence[int]
    num_classes: int = 10
    kind: str = "bernoulli"
    alpha: float = 1e-8
    samples: int = 128

    def __post_init__(self) -> None:
        _check_hat_kind(self.kind)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        self.classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            logits = self.classifier(self.generate(model, self.samples))
        finally:
            self.classifier.train(was_training)
        return hat_divergence(logits, self.forget_classes, kind=self.kind, alpha=self.alpha)


def hat_divergence(
    logits: torch.Tensor, forget_classes: Sequence[int], *, kind: str = "bernoulli", alpha: float = 1e-8
) -> torch.Tensor:
    """The classifier term of :class:`HatTerm` from a batch of classifier logits ``(N, C)``."""
    num_classes = logits.shape[1]
    forget = torch.zeros(num_classes, dtype=torch.bool, device=logits.device)
    forget[list(forget_classes)] = True
    n_keep = int((~forget).sum())
    if kind == "reference":
        probs = torch.softmax(logits, dim=1).mean(0)
        u = (~forget).to(probs.dtype) / n_keep
        return torch.sum(probs * torch.log((probs + 1e-8) / (u + 1e-8)))
    log_p_bar = torch.logsumexp(torch.log_softmax(logits, dim=1), dim=0) - math.log(logits.shape[0])
    if kind == "bernoulli":
        log_pr, log_q = torch.logsumexp(log_p_bar[~forget], 0), torch.logsumexp(log_p_bar[forget], 0)
        return log_pr.exp() * (log_pr - math.log1p(-alpha)) + log_q.exp() * (log_q - math.log(alpha))
    if kind == "uniform-kl":
        return (-math.log(n_keep) - log_p_bar[~forget]).sum() / n_keep
    _check_hat_kind(kind)
    raise AssertionError("unreachable")


PerSampleDecodeLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LatentReplacement:
    """Classifier-free replacement term ``L_rep`` for latent-variable generators (genunlearn, not in the paper).

    Each call draws ``samples`` forget examples, samples latents from their *frozen* (original-model)
    posteriors ``z ~ N(mu_f, std_f^2)``, and returns the generator's loss of producing, at those latents,
    one of the example's ``k`` nearest unambiguous retained neighbours (nearest by the frozen posterior
    means, see :meth:`for_vae`). Only the generator (decoder) receives gradients; no classifier and no
    knowledge of any monitor is used. The loss is computed with the model in eval mode, as it generates:
    a batch of latents from the forget region alone would otherwise drag BatchNorm's running statistics
    (measured: with train mode, 10 updates rearranged the whole latent map and FID rose by 7-17).

    Attributes:
        mu, std: frozen posterior means and standard deviations of the forget examples, ``(N, d)``.
        targets: retained examples, ``(M, ...)``.
        neighbours: indices into ``targets``, ``(N, k)``.
        decode_loss: ``decode_loss(model, z, x_target) -> (B,)`` per-sample reconstruction loss.
        samples: examples per call.
        reduction: ``"sum"`` or ``"mean"`` over the samples (match the retain loss's reduction).
    """

    mu: torch.Tensor
    std: torch.Tensor
    targets: torch.Tensor
    neighbours: torch.Tensor
    decode_loss: PerSampleDecodeLoss
    samples: int = 128
    reduction: str = "sum"

    def __post_init__(self) -> None:
        if self.mu.shape[0] == 0:
            raise ConfigError("latent replacement needs at least one forget example")
        if self.targets.shape[0] == 0:
            raise ConfigError("latent replacement needs at least one retained example")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"unknown loss reduction {self.reduction!r}; use 'sum' or 'mean'")
        if self.samples < 1:
            raise ConfigError(f"replacement samples must be >= 1, got {self.samples}")

    def __call__(self, model: nn.Module) -> torch.Tensor:
        n, k = self.neighbours.shape
        dev = self.mu.device
        i = torch.randint(0, n, (self.samples,), device=dev)
        j = torch.randint(0, k, (self.samples,), device=dev)
        was_training = model.training
        model.eval()  # generation's mode: a batch of forget-region latents must not move BatchNorm statistics
        try:
            z = self.mu[i] + self.std[i] * torch.randn_like(self.mu[i])
            per_sample = self.decode_loss(model, z, self.targets[self.neighbours[i, j]])
        finally:
            model.train(was_training)
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()

    @classmethod
    @torch.no_grad()
    def for_vae(
        cls,
        original: MNISTVAE,
        retain: torch.Tensor,
        forget: torch.Tensor,
        *,
        neighbours: int = 1,
        samples: int = 128,
        reduction: str = "sum",
        max_forget_share: float = 0.0,
        purity_neighbours: int = 16,
        chunk: int = 4096,
    ) -> LatentReplacement:
        """Build the term from the original VAE (used frozen, in eval mode) and the retain/forget images.

        Targets are the ``neighbours`` nearest retained examples (by frozen posterior mean) among the
        *unambiguous* ones: a retained example whose ``purity_neighbours`` nearest training examples in
        latent space include more than ``max_forget_share`` forget examples sits inside the forget data's
        region (a 7 written like a 1) and would teach the forgotten class back; it is not used as a target.
        """
        if neighbours < 1:
            raise ConfigError(f"replacement neighbours must be >= 1, got {neighbours}")
        if len(forget) == 0:
            raise ConfigError("latent replacement needs at least one forget example")
        if len(retain) < neighbours:
            raise ConfigError(f"latent replacement needs at least {neighbours} retained examples, got {len(retain)}")
        was_training = original.training
        original.eval()
        try:
            mu_r = torch.cat([original.encode(retain[s : s + chunk])[0] for s in range(0, len(retain), chunk)])
            enc_f = [original.encode(forget[s : s + chunk]) for s in range(0, len(forget), chunk)]
        finally:
            original.train(was_training)
        mu_f = torch.cat([m for m, _ in enc_f])
        std_f = torch.cat([lv for _, lv in enc_f]).mul(0.5).exp()
        mu_r_np, mu_f_np = mu_r.cpu().numpy(), mu_f.cpu().numpy()
        keep = _unambiguous(mu_r_np, mu_f_np, purity_neighbours, max_forget_share)
        if int(keep.sum()) < neighbours:
            raise ConfigError(
                f"only {int(keep.sum())} retained examples lie away from the forget data in latent space; "
                "raise max_forget_share"
            )
        kept = np.flatnonzero(keep)
        _, nearest = cKDTree(mu_r_np[kept]).query(mu_f_np, k=neighbours)
        nn_idx = torch.as_tensor(kept[np.asarray(nearest).reshape(len(mu_f_np), neighbours)], device=retain.device)

        def decode_loss(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            logits = model.decode_logits(z)  # type: ignore[operator]
            return F.binary_cross_entropy_with_logits(logits, x.reshape(x.shape[0], -1), reduction="none").sum(dim=1)

        return cls(
            mu=mu_f,
            std=std_f,
            targets=retain,
            neighbours=nn_idx,
            decode_loss=decode_loss,
            samples=samples,
            reduction=reduction,
        )


def _unambiguous(mu_r: np.ndarray, mu_f: np.ndarray, m: int, max_share: float) -> np.ndarray:
    """Mask of retained points whose ``m`` nearest neighbours (retained and forget points, self excluded)
    contain at most ``max_share`` forget points."""
    everything = np.concatenate([mu_r, mu_f])
    m = min(m, len(everything) - 1)
    _, idx = cKDTree(everything).query(mu_r, k=m + 1)
    share = (np.asarray(idx).reshape(len(mu_r), m + 1)[:, 1:] >= len(mu_r)).mean(axis=1)
    return share <= max_share
