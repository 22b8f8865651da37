"""FID from classifier features, computed by torchmetrics' FrechetInceptionDistance.

For MNIST the features are the MNIST classifier's 200-d ReLU(fc1) activations, as in the UNO paper
(not InceptionV3). torchmetrics accumulates means and covariances in float64 and computes the trace of
the matrix square root from eigenvalues; nothing here hand-writes a matrix square root.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


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


class ClassifierFID(FrechetInceptionDistance):
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

    def update_batches(
        self, images: torch.Tensor | Iterable[torch.Tensor], *, real: bool, batch_size: int = 5000
    ) -> None:
        """Feed images (a tensor, split into batches, or an iterable of batches)."""
        if isinstance(images, torch.Tensor):
            images = images.split(batch_size)
        for b in images:
            self.update(b.to(self.device), real=real)
