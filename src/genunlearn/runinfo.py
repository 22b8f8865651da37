"""What every run records next to its outputs: versions, device, seeds."""

from __future__ import annotations

import platform
import random
import sys
from importlib import metadata

import numpy as np
import torch


def versions() -> dict[str, str]:
    """Versions of Python, genunlearn and the libraries that shape results."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("genunlearn", "torch", "numpy", "torchmetrics", "safetensors", "diffusers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["torch_threads"] = str(torch.get_num_threads())
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA if available else CPU; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
