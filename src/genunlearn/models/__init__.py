"""Models (one file each) and the model registry."""

from genunlearn.models.celeba_classifier import CelebAClassifier
from genunlearn.models.celeba_vae import CelebAVAE, celeba_vae_loss
from genunlearn.models.mnist_classifier import MNISTClassifier
from genunlearn.models.mnist_vae import MNISTVAE, vae_loss
from genunlearn.models.registry import (
    MODELS,
    ModelSpec,
    count_parameters,
    get_spec,
    load_model,
    register_model,
)

__all__ = [
    "MNISTVAE",
    "MODELS",
    "CelebAClassifier",
    "CelebAVAE",
    "MNISTClassifier",
    "ModelSpec",
    "celeba_vae_loss",
    "count_parameters",
    "get_spec",
    "load_model",
    "register_model",
    "vae_loss",
]
