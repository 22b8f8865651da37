"""A small convolutional image-to-image (I2I) model for MNIST: inpainting and outpainting.

The setting of Li et al. (ICLR 2024, "Machine Unlearning for Image-to-Image Generative Models") at MNIST scale:
the input is a transformed image ``T(x)`` — the centre square masked (``task="inpaint"``) or everything outside
the centre square masked (``task="outpaint"``) — and the model generates the full image ``D(E(T(x)))``.

- :meth:`MNISTI2I.transform` is ``T``: masked pixels are set to 0 and the mask is appended as a second channel
  (so the model can tell "masked" from "black"), shape ``(B, 2, 28, 28)``.
- ``encoder`` (``E``): 2 -> 32 (28x28) -> 32 (14x14) -> 64 (7x7) -> ``embed_channels`` (7x7); its output is the
  embedding the unlearning objective works on (a spatial 7x7 map, like the patch tokens of the paper's MAE).
- ``decoder`` (``D``): 7x7 -> 14x14 -> 28x28 -> 1 channel, sigmoid: pixel intensities in [0, 1].

Images are ``(B, 1, 28, 28)`` floats in [0, 1] (flat ``(B, 784)`` is accepted and reshaped).

>>> m = MNISTI2I("inpaint")
>>> x = torch.rand(3, 1, 28, 28)
>>> tuple(m(x).shape), tuple(m.encode(x).shape)
((3, 1, 28, 28), (3, 32, 7, 7))
"""

from __future__ import annotations

import torch
from torch import nn

from genunlearn.errors import ConfigError, DataError

#: The I2I tasks: what ``T`` masks.
TASKS = ("inpaint", "outpaint")
IMAGE_SIDE = 28


def check_task(task: str) -> str:
    """``task`` itself, or a one-line error naming the tasks."""
    if task not in TASKS:
        raise ConfigError(f"unknown I2I task {task!r}; use one of {', '.join(TASKS)}")
    return task


def centre_mask(task: str, mask_size: int, side: int = IMAGE_SIDE) -> torch.Tensor:
    """The ``(1, 1, side, side)`` mask of ``task``: 1 where pixels are hidden from the model, 0 where kept.

    ``inpaint`` hides the centre ``mask_size`` x ``mask_size`` square; ``outpaint`` hides everything but it.

    >>> int(centre_mask("inpaint", 14).sum()), int(centre_mask("outpaint", 14).sum())
    (196, 588)
    """
    check_task(task)
    if not 0 < mask_size < side:
        raise ConfigError(f"mask size must lie in [1, {side - 1}], got {mask_size}")
    lo = (side - mask_size) // 2
    square = torch.zeros(1, 1, side, side)
    square[..., lo : lo + mask_size, lo : lo + mask_size] = 1.0
    return square if task == "inpaint" else 1.0 - square


def _block(c_in: int, c_out: int, **kw: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, **kw), nn.GroupNorm(8, c_out), nn.ReLU())


def _up(c_in: int, c_out: int) -> nn.Sequential:
    conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
    return nn.Sequential(conv, nn.GroupNorm(8, c_out), nn.ReLU())


class MNISTI2I(nn.Module):
    """Convolutional encoder-decoder for inpainting / outpainting 28x28 grey images (module docstring).

    Args:
        task: ``"inpaint"`` or ``"outpaint"``.
        mask_size: side of the centre square (hidden for inpainting, the only part kept for outpainting).
        width: channels of the first layers (the others scale with it).
        embed_channels: channels of the encoder's 7x7 output (the embedding).
    """

    def __init__(self, task: str = "inpaint", mask_size: int = 14, width: int = 32, embed_channels: int = 32) -> None:
        super().__init__()
        self.task = check_task(task)
        self.mask_size = int(mask_size)
        self.width = int(width)
        self.embed_channels = int(embed_channels)
        self.register_buffer("mask", centre_mask(task, mask_size), persistent=False)
        w = self.width
        self.encoder = nn.Sequential(
            _block(2, w, kernel_size=3, padding=1),
            _block(w, w, kernel_size=4, stride=2, padding=1),
            _block(w, 2 * w, kernel_size=4, stride=2, padding=1),
            nn.Conv2d(2 * w, self.embed_channels, kernel_size=3, padding=1),
        )
        self.decoder = nn.Sequential(
            _block(self.embed_channels, 2 * w, kernel_size=3, padding=1),
            _up(2 * w, w),
            _up(w, w),
            nn.Conv2d(w, 1, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def build_options(self) -> dict[str, int | str]:
        """Constructor arguments (stored in checkpoints' metadata, so a checkpoint rebuilds its own model)."""
        return {
            "task": self.task,
            "mask_size": self.mask_size,
            "width": self.width,
            "embed_channels": self.embed_channels,
        }

    @staticmethod
    def images(x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(B, 1, 28, 28)`` (flat ``(B, 784)`` images are reshaped); one-line error otherwise."""
        if x.dim() == 2 and x.shape[1] == IMAGE_SIDE * IMAGE_SIDE:
            return x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
        if x.dim() == 4 and tuple(x.shape[1:]) == (1, IMAGE_SIDE, IMAGE_SIDE):
            return x
        raise DataError(f"MNIST I2I takes images of shape (B, 1, 28, 28) or (B, 784), got {tuple(x.shape)}")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``T(x)``: hidden pixels set to 0, the mask appended as a second channel, ``(B, 2, 28, 28)``."""
        x = self.images(x)
        mask = self.mask.to(dtype=x.dtype).expand(x.shape[0], -1, -1, -1)
        return torch.cat([x * (1.0 - mask), mask], dim=1)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """``E`` on already transformed inputs ``T(x)`` (``(B, 2, 28, 28)``)."""
        return self.encoder(inputs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``E(T(x))`` for images ``x``: the embedding the unlearning objective works on."""
        return self.encoder(self.transform(x))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """``D(h)``: images in [0, 1], ``(B, 1, 28, 28)``."""
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The generated full image ``D(E(T(x)))`` for images ``x`` (the model masks them itself)."""
        return self.decode(self.encode(x))
