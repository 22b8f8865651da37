"""FID from classifier features, computed by torchmetrics' FrechetInceptionDistance.

For MNIST the features are the MNIST classifier's 200-d ReLU(fc1) activations, as in the UNO paper
(not InceptionV3). For CelebA faces (:func:`face_fid`) they are the attribute classifier's 256-d
penultimate features, because InceptionV3 weights cannot be downloaded here: **these numbers are not
comparable with Inception FID** (the paper's CelebA FIDs of ~166-176), only with each other. Given a local
file of torchmetrics' Inception weights (``inception_weights=`` or ``$GENUNLEARN_INCEPTION_WEIGHTS``), the
standard 2048-d Inception FID is used instead (needs ``torch-fidelity``). torchmetrics accumulates means
and covariances in float64 and computes the trace of the matrix square root from eigenvalues; nothing here
hand-writes a matrix square root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from genunlearn.errors import CheckpointError, ConfigError

INCEPTION_ENV = "GENUNLEARN_INCEPTION_WEIGHTS"


class FeatureExtractor(nn.Module):
    """Wraps ``features(x)`` of a classifier (or any module) for torchmetrics; exposes ``num_features``."""

    def __init__(self, model: nn.Module, num_features: int) -> None:
        super().__init__()
        self.model = model
        self.num_features = num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = getattr(self.model, "features", self.model)
        return fn(x.float())


class _BatchUpdates:
    def update_batches(
        self, images: torch.Tensor | Iterable[torch.Tensor], *, real: bool, batch_size: int = 5000
    ) -> None:
        """Feed images (a tensor, split into batches, or an iterable of batches)."""
        if isinstance(images, torch.Tensor):
            images = images.split(batch_size)
        for b in images:
            self.update(b.to(self.device), real=real)  # type: ignore[attr-defined]


class ClassifierFID(_BatchUpdates, FrechetInceptionDistance):
    """``FrechetInceptionDistance`` on the features of a classifier; update with images in [0, 1].

    Keeps the real (reference) statistics across :meth:`reset` so that one reference set serves many
    generated sets.

    Example:
        >>> import torch
        >>> fid = ClassifierFID(torch.nn.Identity(), num_features=3)
        >>> x = torch.randn(500, 3)
        >>> fid.update(x, real=True); fid.update(x, real=False)
        >>> abs(float(fid.compute())) < 1e-6
        True
    """

    def __init__(self, classifier: nn.Module, num_features: int = 200) -> None:
        super().__init__(
            feature=FeatureExtractor(classifier.eval(), num_features), reset_real_features=False, normalize=False
        )


class InceptionFID(_BatchUpdates, FrechetInceptionDistance):
    """torchmetrics' 2048-d InceptionV3 FID from a local weights file; update with images in [0, 1]."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__(
            feature=2048, reset_real_features=False, normalize=True, feature_extractor_weights_path=str(weights)
        )


def face_fid(
    classifier: nn.Module | None = None, *, inception_weights: str | Path | None = None
) -> ClassifierFID | InceptionFID:
    """FID for 64x64 faces (images in [0, 1]): InceptionV3 if local weights are given, else classifier features.

    Args:
        classifier: the CelebA attribute classifier (its ``features`` and ``num_features`` are used).
        inception_weights: a local file of torchmetrics' FID Inception weights; default
            ``$GENUNLEARN_INCEPTION_WEIGHTS``. Nothing is ever downloaded.

    Raises:
        CheckpointError: the Inception weights file does not exist.
        ConfigError: neither weights nor a classifier, or torch-fidelity is missing.
    """
    path = inception_weights if inception_weights is not None else os.environ.get(INCEPTION_ENV) or None
    if path is not None:
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: Inception weights not found (from --inception-weights or ${INCEPTION_ENV})")
        try:
            return InceptionFID(path)
        except ModuleNotFoundError:
            raise ConfigError("Inception FID needs torch-fidelity (pip install torch-fidelity)") from None
    if classifier is None:
        raise ConfigError("face FID needs the attribute classifier or local Inception weights")
    num = getattr(classifier, "num_features", None)
    if not isinstance(num, int):
        raise ConfigError("the classifier must expose an integer num_features for FID")
    return ClassifierFID(classifier, num_features=num)
