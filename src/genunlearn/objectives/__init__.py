"""Objectives: what the retain and forget losses are, and the extra terms some methods use.

- Tasks (:mod:`~genunlearn.objectives.tasks`): :class:`StandardTask` (one objective on both batches) and
  :class:`ReplacementTask` (conditional replacement, paper eqs. 4-8).
- Objectives for any model: :class:`VAEObjective` (ELBO, Bernoulli or squared-error likelihood, any shapes),
  :class:`DiffusionObjective` (denoising loss over a diffusers scheduler, conditional or not).
- Terms: :class:`HatTerm` (classifier term, paper eq. 9 and the reference variant), :class:`LatentReplacement`
  (genunlearn's classifier-free ``rep`` term).
- :class:`ObjectiveConfig`: the options of these terms, applied where they are built.
"""

from genunlearn.objectives.config import ObjectiveConfig
from genunlearn.objectives.diffusion import DiffusionObjective, model_prediction
from genunlearn.objectives.hat import HAT_KINDS, HatTerm, check_hat_kind, hat_divergence
from genunlearn.objectives.replacement import LatentReplacement, encode_all, nearest_unambiguous
from genunlearn.objectives.tasks import (
    ConditionalLoss,
    Objective,
    ReplacementTask,
    StandardTask,
    Task,
    batch_inputs,
    batch_labels,
    labelled_draws,
)
from genunlearn.objectives.vae import LIKELIHOODS, VAEObjective, reconstruction_loss, vae_objective

__all__ = [
    "HAT_KINDS",
    "LIKELIHOODS",
    "ConditionalLoss",
    "DiffusionObjective",
    "HatTerm",
    "LatentReplacement",
    "Objective",
    "ObjectiveConfig",
    "ReplacementTask",
    "StandardTask",
    "Task",
    "VAEObjective",
    "batch_inputs",
    "batch_labels",
    "check_hat_kind",
    "encode_all",
    "hat_divergence",
    "labelled_draws",
    "model_prediction",
    "nearest_unambiguous",
    "reconstruction_loss",
    "vae_objective",
]
