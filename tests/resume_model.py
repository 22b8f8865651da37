"""A tiny model bundle for the SIGKILL test: a small noisy VAE-like generator on three synthetic classes.

With ``RESUME_MODEL_SLEEP`` set, every loss evaluation sleeps that many seconds (slowing a subprocess down so it
can be killed mid-run; the sleep changes no number).
"""

from __future__ import annotations

import os
import time

import torch

import genunlearn as gu


class TinyVAE(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(6, 4)
        self.dec = torch.nn.Sequential(
            torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 6)
        )

    def encode(self, x):
        h = self.enc(x)
        return h[:, :2], h[:, 2:]

    def decode(self, z):
        return self.dec(z)


def objective(model, batch):
    delay = float(os.environ.get("RESUME_MODEL_SLEEP", "0") or 0)
    if delay:
        time.sleep(delay)
    mu, logvar = model.encode(batch)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # the global random state matters
    return ((model.decode(z) - batch) ** 2).sum() + 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum()


def factory() -> gu.ModelBundle:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    x = torch.randn(90, 6, generator=g) * 0.3 + labels[:, None].float()
    torch.manual_seed(1)
    model = TinyVAE()
    classifier = torch.nn.Linear(6, 3)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(3, 6, generator=g))
    return gu.ModelBundle(
        model=model,
        objective=objective,
        sampler=gu.LatentSampler((2,)),
        classifier=classifier,
        num_classes=3,
        data=gu.TrainingData(x, labels, name="tiny"),
    )
