"""The VAE negative ELBO for any encoder/decoder shapes and two likelihoods.

Contract of the model: ``encode(x) -> (mu, logvar)`` with ``mu, logvar`` of shape ``(B, d)`` (any latent
dimension ``d``; ``logvar`` is the log-variance), and

- ``likelihood="bernoulli"`` (paper eq. 12, MNIST): ``decode_logits(z)`` returns Bernoulli logits with as many
  elements per example as ``x``; the reconstruction term is the binary cross-entropy summed over pixels;
- ``likelihood="mse"`` (paper eq. 13, CelebA): ``decode(z)`` returns the reconstruction ``x_bar``; the term
  is ``||x - x_bar||^2`` summed over pixels.

Images may be flat ``(B, H*W)`` or image-shaped ``(B, C, H, W)``: per-example terms sum over every non-batch
element. The KL term is ``1/2 sum (mu^2 + sigma^2 - log sigma^2 - 1)``; ``reduction`` is ``"sum"`` over the
batch (the reference code) or ``"mean"`` (the paper's equations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from genunlearn.distributed import per_example_randn_like
from genunlearn.errors import ConfigError, DataError
from genunlearn.objectives.tasks import batch_inputs

LIKELIHOODS = ("bernoulli", "mse")


def reconstruction_loss(model: nn.Module, z: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Per-example reconstruction term ``(B,)`` of decoding ``z`` towards ``x`` (summed over every pixel)."""
    b = x.shape[0]
    if likelihood == "bernoulli":
        out = model.decode_logits(z)  # type: ignore[operator]
        _check_numel(out, x)
        return F.binary_cross_entropy_with_logits(out.reshape(b, -1), x.reshape(b, -1), reduction="none").sum(dim=1)
    if likelihood == "mse":
        out = model.decode(z)  # type: ignore[operator]
        _check_numel(out, x)
        return (out.reshape(b, -1) - x.reshape(b, -1)).pow(2).sum(dim=1)
    raise ConfigError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")


def _check_numel(out: torch.Tensor, x: torch.Tensor) -> None:
    if out.shape[0] != x.shape[0] or out[0].numel() != x[0].numel():
        raise DataError(
            f"the model decodes examples of shape {tuple(out.shape[1:])} but the data has shape {tuple(x.shape[1:])}"
        )


@dataclass(frozen=True)
class VAEObjective:
    """Negative ELBO ``loss(model, batch)`` of a VAE (see the module docstring for the model's contract).

    Attributes:
        likelihood: ``"bernoulli"`` (eq. 12) or ``"mse"`` (eq. 13).
        reduction: ``"sum"`` or ``"mean"`` over the batch.
        kl_weight: weight of the KL term (1 in both of the paper's losses).

    Example:
        >>> import torch
        >>> from genunlearn.models import MNISTVAE
        >>> loss = VAEObjective("bernoulli", "mean")(MNISTVAE(), torch.rand(4, 784))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    likelihood: str = "bernoulli"
    reduction: str = "sum"
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {self.likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"unknown loss reduction {self.reduction!r}; use 'sum' or 'mean'")

    def per_example(self, model: nn.Module, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` negative ELBO of each example (reparameterisation noise drawn unless given)."""
        if not hasattr(model, "encode"):
            raise ConfigError(f"the VAE objective needs a model with encode(x) -> (mu, logvar); {type(model).__name__}")
        mu, logvar = model.encode(x)  # type: ignore[operator]
        eps = per_example_randn_like(mu) if noise is None else noise  # torch.randn_like, data-parallel aware
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = reconstruction_loss(model, z, x, self.likelihood)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1)
        return rec + self.kl_weight * kl

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        per = self.per_example(model, batch_inputs(batch))
        return per.sum() if self.reduction == "sum" else per.mean()


def vae_objective(reduction: str = "sum") -> VAEObjective:
    """The MNIST VAE's negative ELBO (paper eq. 12): Bernoulli likelihood, ``reduction`` over the batch."""
    return VAEObjective("bernoulli", reduction)
