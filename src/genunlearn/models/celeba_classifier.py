"""Multi-label CelebA attribute classifier for 64x64 faces: the monitor of feature unlearning and FID features.

A stride-2 4x4 convolution (64 -> 32 pixels), then three 3x3 convolution blocks with 2x2 max-pooling
(32 -> 16 -> 8 -> 4 pixels), each with BatchNorm and ReLU (``widths`` channels); then ``fc1`` (flattened
-> 256, ReLU) and ``fc2`` (256 -> one logit per attribute, 40 by default). Dropout sits between ``fc1`` and
``fc2`` (training only). :meth:`CelebAClassifier.features` is the 256-d ReLU(fc1) penultimate layer, the
features of face FID (:func:`genunlearn.eval.fid.face_fid`).

The UNO authors' classifier is a single-output (Male) CNN of 2.19M parameters without BatchNorm; this one
predicts all 40 attributes at once (1.2M parameters with the default widths) so that one model monitors
any forget attribute. It contains BatchNorm: use it in eval mode (:func:`genunlearn.models.load_model` does).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_WIDTHS: tuple[int, ...] = (24, 48, 96, 192)


class CelebAClassifier(nn.Module):
    """CNN with one logit per attribute for ``(B, 3, 64, 64)`` images in [0, 1].

    Args:
        num_attributes: number of outputs (40 CelebA attributes by default).
        widths: channels of the four convolution blocks.
        hidden: width of the penultimate (feature) layer.
        dropout: dropout probability before the last layer (training only).
        image_size: side of the square input images (a multiple of 16).
    """

    def __init__(
        self,
        num_attributes: int = 40,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        hidden: int = 256,
        dropout: float = 0.3,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if image_size % 2 ** len(widths):
            raise ValueError(f"image size {image_size} is not divisible by 2**{len(widths)}")
        self.num_attributes = num_attributes
        self.widths = widths
        self.hidden = hidden
        blocks = [
            nn.Sequential(
                nn.Conv2d(3, widths[0], 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
            )
        ]
        blocks += [
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
            for a, b in itertools.pairwise(widths)
        ]
        self.conv = nn.Sequential(*blocks)
        side = image_size // 2 ** len(widths)
        self.fc1 = nn.Linear(widths[-1] * side * side, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_attributes)

    @property
    def num_features(self) -> int:
        """Size of :meth:`features` (for FID)."""
        return self.hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ReLU(fc1(conv(x))), shape ``(B, hidden)``."""
        return torch.relu(self.fc1(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attribute logits ``(B, num_attributes)`` (sigmoid > 0.5, i.e. logit > 0, means present)."""
        return self.fc2(self.dropout(self.features(x)))
