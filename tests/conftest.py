"""Shared fixtures: the UNO authors' weights (skipped when absent) and small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genunlearn.paths import authors_weights


@pytest.fixture(autouse=True)
def _threads_and_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def authors_vae() -> Path:
    p = authors_weights("vae.safetensors")
    if p is None:
        pytest.skip("UNO authors' weights not found (set GENUNLEARN_SHARED or put shared/ beside the checkout)")
    return p


@pytest.fixture
def authors_classifier() -> Path:
    p = authors_weights("classifier.safetensors")
    if p is None:
        pytest.skip("UNO authors' weights not found (set GENUNLEARN_SHARED or put shared/ beside the checkout)")
    return p


class TinyNet(torch.nn.Module):
    """A small smooth MLP (tanh) whose Hessians are non-trivial."""

    def __init__(self, d_in: int = 4, hidden: int = 5, d_out: int = 3) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(d_in, hidden)
        self.l2 = torch.nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


def mse_objective(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


@pytest.fixture
def tiny_problem():
    """A float64 TinyNet with a retain and a forget batch drawn from different distributions."""
    g = torch.Generator().manual_seed(1)
    model = TinyNet().double()
    xr = torch.randn(16, 4, generator=g, dtype=torch.float64)
    xf = torch.randn(16, 4, generator=g, dtype=torch.float64) + 1.5
    yr = torch.randn(16, 3, generator=g, dtype=torch.float64)
    yf = torch.randn(16, 3, generator=g, dtype=torch.float64) - 1.0
    return model, (xr, yr), (xf, yf)


@pytest.fixture(scope="module")
def tiny_dit(tmp_path_factory) -> Path:
    """A tiny MNIST DiT (1 block, perturbed from its adaLN-Zero start) saved as a checkpoint; its path."""
    from dataclasses import asdict

    from genunlearn.checkpoints import save_weights
    from genunlearn.models.mnist_dit import MnistDiT

    torch.manual_seed(0)
    dit = MnistDiT(num_layers=1, num_attention_heads=2, attention_head_dim=8)
    with torch.no_grad():  # adaLN-Zero starts as the identity: give the blocks something to differentiate
        for p in dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("dit") / "tiny.safetensors"
    save_weights(dit, path, metadata={"build_options": asdict(dit.config)})
    return path
