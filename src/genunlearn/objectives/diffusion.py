"""The diffusion denoising loss over a diffusers noise scheduler (unconditional and class-conditional).

Contract of the model: ``model(x_t, timesteps)`` (unconditional) or ``model(x_t, timesteps, labels)``
(class-conditional) returns the prediction — a tensor shaped like ``x_t``, or an object with a ``.sample``
tensor (diffusers models); a prediction with twice ``x_t``'s channels (DiT's learned variance) is cut to its
first half. The scheduler is any diffusers scheduler with ``add_noise`` and ``config.num_train_timesteps``
(``DDPMScheduler``); for ``v_prediction`` it also needs ``get_velocity``.

Random draws (timesteps, noise, label dropout) use the global random state, so that a method that replays
the random state (``uno-fd``) replays them; they are drawn per example through :mod:`genunlearn.distributed`'s
helpers (the same draws as ``torch.randint``/``randn_like``/``rand``), so a data-parallel run gives every
example the draws of the single-process run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genunlearn.distributed import per_example_rand, per_example_randint, per_example_randn_like
from genunlearn.errors import ConfigError
from genunlearn.objectives.tasks import batch_inputs, batch_labels

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def model_prediction(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Call a denoiser and return its prediction shaped like ``x_t``."""
    out = model(x_t, t) if labels is None else model(x_t, t, labels)
    pred = getattr(out, "sample", out)
    if isinstance(pred, (tuple, list)):
        pred = pred[0]
    if pred.shape[1] == 2 * x_t.shape[1] and pred.shape[2:] == x_t.shape[2:]:
        pred = pred[:, : x_t.shape[1]]  # learned-variance models (DiT): the first half is the mean prediction
    return pred


@dataclass
class DiffusionObjective:
    """Denoising loss ``loss(model, batch)``; ``conditional(model, x, c)`` for replacement unlearning.

    Attributes:
        scheduler: a diffusers noise scheduler (``DDPMScheduler``).
        prediction: what the model predicts (``"epsilon"``, ``"v_prediction"``, ``"sample"``); default: the
            scheduler's ``config.prediction_type``.
        reduction: ``"mean"`` (over every element, as DiT trains) or ``"sum"`` over the batch of per-example means.
        conditional_model: call the model with labels (batches must carry them) or without.
        null_label: the label of the unconditional embedding (classifier-free guidance), used by label dropout.
        label_dropout: probability of replacing a label by ``null_label`` (0 while unlearning; training only).
        preprocess: applied to the batch's inputs first (e.g. ``lambda x: 2 * x - 1`` for pixel models trained
            on [-1, 1], or a frozen autoencoder's encoder for latent diffusion).
    """

    scheduler: Any
    prediction: str | None = None
    reduction: str = "mean"
    conditional_model: bool = True
    null_label: int | None = None
    label_dropout: float = 0.0
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.prediction is None:
            self.prediction = getattr(getattr(self.scheduler, "config", None), "prediction_type", "epsilon")
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction type {self.prediction!r}; use one of {', '.join(PREDICTIONS)}")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"unknown loss reduction {self.reduction!r}; use 'sum' or 'mean'")
        if self.label_dropout and self.null_label is None:
            raise ConfigError("label dropout needs a null label")
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocess(x) if self.preprocess is not None else x

    def loss(self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The denoising loss of clean data ``x0`` (already preprocessed) under ``labels`` (or none)."""
        b = x0.shape[0]
        t = per_example_randint(0, self.num_train_timesteps, b, device=x0.device)
        noise = per_example_randn_like(x0)
        if labels is not None and self.label_dropout > 0:
            drop = per_example_rand(b, device=x0.device) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, int(self.null_label)), labels)  # type: ignore[arg-type]
        per = self.per_example(model, x0, labels, t, noise)
        return per.mean() if self.reduction == "mean" else per.sum()

    def per_example(
        self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Per-example denoising losses ``(B,)`` (mean over elements) of clean ``x0`` at timesteps ``t``, ``noise``."""
        x_t = self.scheduler.add_noise(x0, noise, t)
        pred = model_prediction(model, x_t, t, labels)
        if self.prediction == "epsilon":
            target = noise
        elif self.prediction == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = x0
        return (pred.float() - target.float()).pow(2).reshape(x0.shape[0], -1).mean(dim=1)

    def distillation(
        self, model: nn.Module, frozen: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The model's prediction held to ``frozen``'s on noised clean data ``x0`` (already preprocessed).

        The same draws of timesteps and noise as :meth:`loss`, but the target is what ``frozen`` predicts at the
        same noisy input and labels (no gradient), not the true noise: 0, with a zero gradient, while the model is
        ``frozen``'s copy. Used to keep the other classes where the original put them (``--preserve-target
        original``; genunlearn, not in the paper).
        """
        b = x0.shape[0]
        t = per_example_randint(0, self.num_train_timesteps, b, device=x0.device)
        x_t = self.scheduler.add_noise(x0, per_example_randn_like(x0), t)
        with torch.no_grad():
            target = model_prediction(frozen, x_t, t, labels)
        pred = model_prediction(model, x_t, t, labels)
        per = (pred.float() - target.float()).pow(2).reshape(b, -1).mean(dim=1)
        return per.mean() if self.reduction == "mean" else per.sum()

    def conditional_distillation(
        self, frozen: nn.Module
    ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(model, x, c) -> loss``: :meth:`distillation` against ``frozen`` as a conditional loss (eq. 4's shape)."""

        def loss(model: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return self.distillation(model, frozen, self._prepare(x), c.long())

        return loss

    def conditional(self, model: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``L(M(c), x)``: the loss of data ``x`` generated under conditions ``c`` (eqs. 4 and 7)."""
        return self.loss(model, self._prepare(x), c.long())

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x = self._prepare(batch_inputs(batch))
        labels = batch_labels(batch) if self.conditional_model else None
        if self.conditional_model and labels is None:
            raise ConfigError("a class-conditional diffusion objective needs labelled batches (x, y)")
        return self.loss(model, x, None if labels is None else torch.as_tensor(labels, device=x.device).long())
