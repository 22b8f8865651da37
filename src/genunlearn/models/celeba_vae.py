"""Convolutional VAE for 64x64 RGB faces (UNO paper, section 4.3 and appendix A, eq. 13).

Architecture (the shape of the UNO authors' CelebA model; written here from its description):

- encoder: five stride-2 4x4 convolutions 3 -> 32 -> 64 -> 128 -> 256 -> 512 channels (64x64 -> 2x2), each
  followed by BatchNorm and LeakyReLU; two linear heads give ``mu`` and ``logvar`` in R^512;
- decoder: linear 512 -> 512x2x2, four stride-2 4x4 transposed convolutions 512 -> 256 -> 128 -> 64 -> 32
  (BatchNorm, LeakyReLU), a fifth 32 -> 32 up to 64x64 (BatchNorm, LeakyReLU) and a 3x3 convolution to
  3 channels.

With the default widths it has 8,742,659 trainable parameters, the paper's count. ``widths`` makes a
smaller variant (the first entries of the default list, e.g. ``(32, 64, 128, 256)``).

The model **contains BatchNorm** (in encoder and decoder): in train mode a batch's statistics are used,
also when generating from the prior, so the engine must choose a BN mode.

Likelihood: eq. 13 is ``||x - x_hat||^2 + KL`` — a Gaussian decoder with fixed variance 1/2, i.e. the squared
error *summed over the 3*64*64 pixel values* plus the KL divergence to N(0, I). The decoder's last layer
gives unbounded values (:meth:`CelebAVAE.decode_raw`); the image mean is ``sigmoid`` of them
(:meth:`CelebAVAE.decode`, in [0, 1]); the loss compares that mean with ``x`` in [0, 1]. (The authors' code
ends in ``tanh`` and feeds [0, 1] images, so its outputs could leave the data range; a sigmoid cannot.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

IMAGE_SIZE = 64
DEFAULT_WIDTHS: tuple[int, ...] = (32, 64, 128, 256, 512)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU())


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU())


class CelebAVAE(nn.Module):
    """Convolutional VAE for ``(B, 3, 64, 64)`` images in [0, 1] with a Gaussian (squared-error) decoder.

    Args:
        latent_dim: size of the latent space (paper: 512).
        widths: channel widths of the stride-2 encoder convolutions (the decoder mirrors them).
        image_size: side of the square input images (a multiple of ``2 ** len(widths)``).
    """

    def __init__(
        self, latent_dim: int = 512, widths: Sequence[int] = DEFAULT_WIDTHS, image_size: int = IMAGE_SIZE
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or image_size % 2 ** len(widths):
            raise ValueError(f"image size {image_size} is not divisible by 2**{len(widths)}")
        self.latent_dim = latent_dim
        self.widths = widths
        self.image_size = image_size
        self.base = image_size // 2 ** len(widths)
        chans = (3, *widths)
        self.encoder = nn.Sequential(*(_down(a, b) for a, b in itertools.pairwise(chans)))
        flat = widths[-1] * self.base * self.base
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_var = nn.Linear(flat, latent_dim)  # log-variance
        self.decoder_input = nn.Linear(latent_dim, flat)
        rev = widths[::-1]
        self.decoder = nn.Sequential(*(_up(a, b) for a, b in itertools.pairwise(rev)))
        self.final_layer = nn.Sequential(_up(rev[-1], rev[-1]), nn.Conv2d(rev[-1], 3, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z | x), each ``(B, latent_dim)``, for images ``(B, 3, H, W)`` in [0, 1]."""
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_var(h)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoder output ``(B, 3, H, W)``; the image mean is its sigmoid."""
        h = self.decoder_input(z).view(z.shape[0], self.widths[-1], self.base, self.base)
        return self.final_layer(self.decoder(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image means in [0, 1], shape ``(B, 3, H, W)`` (the Gaussian decoder's mean)."""
        return torch.sigmoid(self.decode_raw(z))

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, reparameterise (``noise`` fixes eps) and decode; returns ``(x_mean, mu, logvar)``."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if noise is None else noise
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images (means, in [0, 1]) from latents ``z`` of shape ``(B, latent_dim)``."""
        return self.decode(z)


def celeba_vae_loss(
    model: CelebAVAE,
    x: torch.Tensor,
    *,
    reduction: str = "mean",
    noise: torch.Tensor | None = None,
    kl_weight: float = 1.0,
) -> torch.Tensor:
    """Paper eq. 13: ``||x - x_hat||^2`` summed over pixels and channels + KL(q(z|x) || N(0, I)).

    Args:
        model: the VAE.
        x: images ``(B, 3, 64, 64)`` in [0, 1].
        reduction: ``"mean"`` over the batch (eq. 13; about 1e2 per image) or ``"sum"`` over the batch
            (the authors' code: ``mse_loss(reduction="sum") + kl_div`` summed over the batch).
        noise: optional fixed reparameterisation noise ``(B, latent_dim)``.
        kl_weight: weight of the KL term (1 in eq. 13).
    """
    x_mean, mu, logvar = model(x, noise)
    sq = (x_mean - x).pow(2).flatten(1).sum(dim=1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1)
    per_sample = sq + kl_weight * kl
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"unknown reduction {reduction!r}")
