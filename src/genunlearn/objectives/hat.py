"""The classifier ("hat") term of classifier-assisted unlearning (paper section 3.5, eq. 9, and variants)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genunlearn.adapters import eval_mode
from genunlearn.errors import ConfigError

#: The classifier terms genunlearn implements (see :class:`HatTerm`).
HAT_KINDS = ("bernoulli", "reference", "uniform-kl")


def check_hat_kind(kind: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``kind`` is one of :data:`HAT_KINDS`."""
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
        check_hat_kind(self.kind)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        self.classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        with eval_mode(self.classifier):
            logits = self.classifier(self.generate(model, self.samples))
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
    check_hat_kind(kind)
    raise AssertionError("unreachable")
