"""Models (one file each) and the model registry."""

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
    "MNISTClassifier",
    "ModelSpec",
    "count_parameters",
    "get_spec",
    "load_model",
    "register_model",
    "vae_loss",
]
