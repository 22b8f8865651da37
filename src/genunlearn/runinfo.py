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


def git_commit(path: str | None = None) -> str | None:
    """The git commit of the checkout holding genunlearn (``+dirty`` when it has local changes), if any."""
    import subprocess
    from pathlib import Path

    where = path or str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, str | int | None]:
    """The machine a result was measured on: host name, CPU model and count, torch threads, CUDA device."""
    import os

    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
