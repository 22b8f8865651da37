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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

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


@dataclass
class HatTerm:
    """The classifier term ``d_KL`` of classifier-assisted unlearning (paper eq. 9 or the reference variant).

    Attributes:
        generate: ``generate(model, n) -> samples`` with gradients flowing to the model.
        classifier: maps samples to class logits (its parameters are frozen).
        forget_classes: classes to forget.
        num_classes: number of classifier classes.
        kind: ``"bernoulli"`` (paper eq. 9: KL(Bern(p_r) || Bern(1 - alpha))) or ``"categorical"``
            (reference code: KL(u || mean softmax), u uniform over the retain classes and 0 on the
            forget classes; the direction KL(mean softmax || u) would be infinite since u is 0 there).
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
        if self.kind not in ("bernoulli", "categorical"):
            raise ConfigError(f"unknown hat term {self.kind!r}; use 'bernoulli' or 'categorical'")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        probs = torch.softmax(self.classifier(self.generate(model, self.samples)), dim=1).mean(0)
        forget = torch.zeros(self.num_classes, dtype=torch.bool, device=probs.device)
        forget[list(self.forget_classes)] = True
        if self.kind == "bernoulli":
            p_r = probs[~forget].sum().clamp(0.0, 1.0)
            q = 1.0 - p_r
            return (
                torch.xlogy(p_r, p_r) - p_r * math.log(1.0 - self.alpha) + torch.xlogy(q, q) - q * math.log(self.alpha)
            )
        n_keep = int((~forget).sum())
        log_u = -math.log(n_keep)
        return (log_u - torch.log(probs[~forget].clamp_min(1e-30))).sum() / n_keep
