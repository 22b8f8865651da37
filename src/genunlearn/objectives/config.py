"""Options of the model-side terms (loss reduction, classifier term, replacement targets)."""

from __future__ import annotations

from dataclasses import dataclass

from genunlearn.errors import ConfigError
from genunlearn.objectives.hat import check_hat_kind


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
        fisher_samples: ``amnesia``: samples of the original model the EWC Fisher is estimated from (a diffusion
            model: they are also the replay pool, generated once, balanced over the labels).
        guidance: ``esd``: the negative guidance scale (ESD: 1).
        siss_mixture: ``siss``: probability of noising the forget example of a pair (SISS: 0.5).
        siss_forget_scale: ``siss``: weight of the subtracted forget term (1: the exact retain loss).
        preserve_weight: conditional replacement (``--replace-with``): weight of a retain term over the other
            classes (neither forgotten nor targets), their plain loss on their own data, one batch per step as
            large as the retain batch (genunlearn); 0: the paper's L^R, which sees the forget and target classes only.
        preserve_target: what that term asks of the other classes: ``"data"`` (their plain loss on their own
            data) or ``"original"`` (the model's predictions on their noised data held to the frozen original's:
            a distillation, diffusion models only).
    """

    loss_reduction: str = "sum"
    hat_kind: str = "bernoulli"
    alpha: float = 1e-8
    hat_samples: int = 128
    replace_neighbors: int = 1
    fisher_samples: int = 500
    guidance: float = 1.0
    siss_mixture: float = 0.5
    siss_forget_scale: float = 1.0
    preserve_weight: float = 0.0
    preserve_target: str = "data"

    def validate(self) -> ObjectiveConfig:
        """Check every field; raises :class:`ConfigError` with one line."""
        if self.loss_reduction not in ("sum", "mean"):
            raise ConfigError(f"loss reduction must be 'sum' or 'mean', got {self.loss_reduction!r}")
        check_hat_kind(self.hat_kind)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.hat_samples < 1:
            raise ConfigError(f"hat samples must be >= 1, got {self.hat_samples}")
        if self.replace_neighbors < 1:
            raise ConfigError(f"replace_neighbors must be >= 1, got {self.replace_neighbors}")
        if self.fisher_samples < 1:
            raise ConfigError(f"fisher_samples must be >= 1, got {self.fisher_samples}")
        if not 0 < self.siss_mixture < 1:
            raise ConfigError(f"siss_mixture must lie in (0, 1), got {self.siss_mixture}")
        if self.guidance < 0 or self.siss_forget_scale < 0:
            raise ConfigError("guidance and siss_forget_scale must be >= 0")
        if self.preserve_weight < 0:
            raise ConfigError(f"preserve_weight must be >= 0, got {self.preserve_weight}")
        if self.preserve_target not in ("data", "original"):
            raise ConfigError(f"preserve_target must be 'data' or 'original', got {self.preserve_target!r}")
        if self.preserve_target != "data" and self.preserve_weight == 0:
            raise ConfigError("preserve_target 'original' needs a preserve_weight > 0 (the term it changes)")
        return self
