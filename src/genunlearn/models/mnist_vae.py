"""The MNIST VAE of the UNO paper (Mandal & Gottwald, 2025), with the authors' module names.

784 -> Linear(400) -> BatchNorm -> ReLU -> (mu, log-variance) in R^2; decoder 2 -> 400 -> BN -> ReLU ->
784 -> Sigmoid. 632,788 trainable parameters. The head ``enc_log_sigma`` outputs the log-VARIANCE
despite its name (sigma = exp(0.5 * out)), exactly as in the authors' code, so that their weights load
with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MNISTVAE(nn.Module):
    """Fully connected VAE with a 2-D latent space (paper appendix A)."""

    def __init__(self, latent_dim: int = 2, hidden: int = 400, image_size: int = 784) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.encoder = nn.Sequential(nn.Linear(image_size, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.enc_mu = nn.Linear(hidden, latent_dim)
        self.enc_log_sigma = nn.Linear(hidden, latent_dim)  # log-variance, see module docstring
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, image_size),
            nn.Sigmoid(),
        )

    def build_options(self) -> dict[str, int]:
        """Constructor arguments that differ from the defaults (stored in checkpoints' metadata)."""
        d = {"latent_dim": self.latent_dim, "hidden": self.encoder[0].out_features, "image_size": self.image_size}
        return {k: v for k, v in d.items() if v != {"latent_dim": 2, "hidden": 400, "image_size": 784}[k]}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)`` of the approximate posterior for images ``x`` (any shape ``(B, ...)``)."""
        h = self.encoder(x.reshape(x.shape[0], -1))
        return self.enc_mu(h), self.enc_log_sigma(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of the pixels (the decoder without its final sigmoid)."""
        h = z
        for layer in list(self.decoder)[:-1]:
            h = layer(h)
        return h

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means in [0, 1], shape ``(B, 784)``."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, reparameterise and decode; returns ``(logits, mu, logvar)``."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if noise is None else noise
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode_logits(z), mu, logvar

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images (pixel means) from latents ``z`` of shape ``(B, latent_dim)``."""
        return self.decode(z)


def vae_loss(
    model: MNISTVAE,
    x: torch.Tensor,
    *,
    reduction: str = "mean",
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative ELBO of paper eq. (12): Bernoulli BCE summed over pixels + KL(q(z|x) || N(0, I)).

    Args:
        model: the VAE.
        x: images in [0, 1], shape ``(B, 784)`` or ``(B, 28, 28)``.
        reduction: ``"mean"`` over the batch (the paper's equations) or ``"sum"`` (the reference code).
        noise: optional fixed reparameterisation noise of shape ``(B, latent_dim)``.
    """
    x = x.reshape(x.shape[0], -1)
    logits, mu, logvar = model(x, noise)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1)
    per_sample = bce + kl
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise ValueError(f"unknown reduction {reduction!r}")
