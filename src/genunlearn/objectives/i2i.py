"""Objectives of image-to-image (I2I) models and the unlearning task of Li et al. (ICLR 2024).

An I2I model here follows a small contract (:class:`~genunlearn.models.mnist_i2i.MNISTI2I` does): images ``x`` in,
``model(x) = D(E(T(x)))`` out (the generated full image), ``model.transform(x) = T(x)`` (the masked input) and
``model.embed(T(x)) = E(T(x))`` (the encoder's embedding).

- :class:`I2IReconstruction`: ``loss(model, batch) = sum_pixels (model(x) - x)^2``, the I2I training loss and
  the retain / forget loss that the generic methods (S, UNO, GDiff ...) use on an I2I model.
- :class:`I2IEmbeddingTask`: the task of Li et al.: retain loss ``||E_theta(T(x_r)) - E_0(T(x_r))||^2`` (keep
  retain embeddings where the original encoder ``E_0`` put them) and forget loss
  ``||E_theta(T(x_f)) - E_0(T(n))||^2`` (move forget embeddings to where ``E_0`` puts a masked Gaussian-noise
  image ``n``). The method ``i2i`` descends ``L_r + alpha L_f`` (``alpha`` = the engine's ``forget_weight``);
  only the encoder trains (wrap the model in a :class:`~genunlearn.adapters.ModelAdapter` with
  ``frozen=["decoder"]``, as the ``mnist-i2i`` bundle does), so the decoder needs no gradients.

**Noise.** The paper draws ``n`` per pixel from a Gaussian in the models' *normalised* input space (ImageNet
mean/std normalisation, i.e. about ``N(0, 1)`` there). MNIST pixels here are not normalised (they lie in [0, 1]),
so the equivalent is ``n = mean + std * N(0, I)`` per pixel with the training images' pixel mean and standard
deviation (MNIST: 0.1307, 0.3081): noise with the data's first two moments, not clipped. A fresh ``n`` is drawn
for every forget image at every step, from the global torch generator (the loop seeds it; resumed runs replay it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genunlearn.errors import ConfigError, DataError
from genunlearn.objectives.tasks import batch_inputs

#: Pixel mean and standard deviation of the MNIST training images (in [0, 1]): the default noise distribution.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
REDUCTIONS = ("sum", "mean")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"loss reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_example.sum() if reduction == "sum" else per_example.mean()


def _images(model: nn.Module, batch: Any) -> torch.Tensor:
    x = batch_inputs(batch)
    if x.shape[0] == 0:
        raise DataError("an I2I batch holds no images")
    images = getattr(model, "images", None)
    return images(x) if callable(images) else x


@dataclass(frozen=True)
class I2IReconstruction:
    """``sum_pixels (model(x) - x)^2`` per image, reduced over the batch (``"mean"`` by default, or ``"sum"``).

    >>> from genunlearn.models.mnist_i2i import MNISTI2I
    >>> loss = I2IReconstruction()(MNISTI2I(), torch.rand(4, 1, 28, 28))
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """

    reduction: str = "mean"

    def __post_init__(self) -> None:
        _check_reduction(self.reduction)

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x = _images(model, batch)
        out = model(x)
        if out.shape != x.shape:
            raise DataError(f"the I2I model generates {tuple(out.shape[1:])} for images of {tuple(x.shape[1:])}")
        return _reduce((out - x).pow(2).flatten(1).sum(dim=1), self.reduction)


@dataclass(frozen=True)
class NoiseImages:
    """Gaussian noise images ``mean + std * N(0, I)`` per pixel (see the module docstring for the choice)."""

    mean: float = MNIST_MEAN
    std: float = MNIST_STD

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std)) or self.std <= 0:
            raise ConfigError(f"noise std must be > 0 and both moments finite, got mean={self.mean}, std={self.std}")

    def like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise of the shape, dtype and device of ``x``."""
        return self.mean + self.std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


@dataclass(frozen=True)
class I2IEmbeddingTask:
    """The encoder-embedding task of Li et al. (ICLR 2024) (module docstring).

    Attributes:
        original: a frozen copy of the original model (``E_0``); :meth:`from_model` makes one.
        noise: the distribution of the noise images ``n``.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch of the per-image squared distances (summed over
            every embedding element).
    """

    original: nn.Module
    noise: NoiseImages = field(default_factory=NoiseImages)
    reduction: str = "mean"

    def __post_init__(self) -> None:
        _check_reduction(self.reduction)
        for name in ("transform", "embed"):
            if not callable(getattr(self.original, name, None)):
                raise ConfigError(f"the I2I embedding task needs a model with {name}() (the I2I contract)")
        self.original.eval()
        for p in self.original.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> I2IEmbeddingTask:
        """The task with a frozen deep copy of ``model`` as the original encoder (call before unlearning)."""
        return cls(copy.deepcopy(model), **kwargs)

    def _distance(self, model: nn.Module, x: torch.Tensor, target_inputs: torch.Tensor) -> torch.Tensor:
        emb = model.embed(model.transform(x))  # type: ignore[operator]
        with torch.no_grad():
            target = self.original.embed(self.original.transform(target_inputs))  # type: ignore[operator]
        return _reduce((emb - target).pow(2).flatten(1).sum(dim=1), self.reduction)

    def retain_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """``||E_theta(T(x_r)) - E_0(T(x_r))||^2``: zero for the original model."""
        x = _images(model, batch)
        return self._distance(model, x, x)

    def forget_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """``||E_theta(T(x_f)) - E_0(T(n))||^2`` with fresh noise images ``n`` of the forget images' shape."""
        x = _images(model, batch)
        return self._distance(model, x, self.noise.like(x))


@torch.no_grad()
def reconstruction_quality(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Per-pixel squared error and PSNR of ``model(images)`` against ``images``, on the hidden region and the image.

    ``l2_*`` is the mean squared error per pixel (images in [0, 1]); ``psnr_*`` is ``10 log10(1 / l2_*)`` of
    that pooled error (dB). ``masked`` is the region ``T`` hides (the model's ``mask``), ``full`` every pixel.
    """
    was = model.training
    model.eval()
    x_all = model.images(images)  # type: ignore[operator]
    mask = model.mask.to(x_all)  # type: ignore[union-attr]
    se_full = se_masked = 0.0
    for start in range(0, x_all.shape[0], batch_size):
        x = x_all[start : start + batch_size]
        se = (model(x) - x).pow(2)
        se_full += float(se.sum())
        se_masked += float((se * mask).sum())
    model.train(was)
    n = x_all.shape[0]
    l2_full = se_full / (n * x_all[0].numel())
    l2_masked = se_masked / (n * float(mask.sum()))
    return {
        "l2_masked": l2_masked,
        "l2_full": l2_full,
        "psnr_masked": 10 * math.log10(1 / l2_masked),
        "psnr_full": 10 * math.log10(1 / l2_full),
    }
