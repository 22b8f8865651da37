"""Figures people would rather look at than read: before/after grids and class histograms (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def _tile(images: torch.Tensor, rows: int, side: int | None = None) -> np.ndarray:
    """A grid of images: flat square images ``(B, H*W)``, ``(B, H, W)`` or ``(B, C, H, W)`` (C = 1 or 3)."""
    imgs = images.detach().float().cpu()
    if imgs.ndim == 2:
        side = side or round(imgs.shape[1] ** 0.5)
        imgs = imgs.reshape(-1, 1, side, side)
    elif imgs.ndim == 3:
        imgs = imgs.unsqueeze(1)
    arr = imgs.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    n, h, w, c = arr.shape
    cols = int(np.ceil(n / rows))
    canvas = np.ones((rows * (h + 2), cols * (w + 2), c))
    for i, im in enumerate(arr):
        r, col = divmod(i, cols)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, col * (w + 2) + 1 : col * (w + 2) + 1 + w] = im
    return canvas[..., 0] if c == 1 else np.clip(canvas, 0, 1)


def show_images(ax: Any, tile: np.ndarray) -> None:
    """Draw a tile of :func:`_tile`: grey images inverted (dark strokes on white, the paper's MNIST figures),
    RGB images as they are."""
    if tile.ndim == 3:
        ax.imshow(tile)
    else:
        ax.imshow(1.0 - tile, cmap="gray", vmin=0, vmax=1)


def panels(n: int, cols: int, size: tuple[float, float] = (3.0, 3.2)) -> tuple[Any, Any]:
    """A figure of ``n`` panels in rows of ``cols`` (each ``size`` inches), unused panels hidden; returns the
    figure and the flat array of axes."""
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def before_after_grid(
    before: torch.Tensor,
    after: torch.Tensor,
    path: str | Path,
    *,
    title: str = "",
    rows: int = 10,
    names: tuple[str, str] = ("original", "after unlearning"),
) -> Path:
    """Two image grids side by side, generated from identical latents (paper figure 1), headed ``names``. Grey images
    ``(B, H*W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` are drawn inverted (dark strokes on white, as the paper's MNIST
    figures); RGB images ``(B, 3, H, W)`` in [0, 1] as they are."""
    tiles = [_tile(before, rows), _tile(after, rows)]
    h, w = tiles[0].shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5 * h / w + 0.9))
    for ax, tile, name in ((axes[0], tiles[0], names[0]), (axes[1], tiles[1], names[1])):
        show_images(ax, tile)
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def class_histogram(
    before: Sequence[int], after: Sequence[int], path: str | Path, *, forget: Sequence[int], title: str = ""
) -> Path:
    """Share of generated samples per class before and after (paper figure 2); forget classes hatched."""
    b = np.asarray(before, dtype=float)
    a = np.asarray(after, dtype=float)
    b, a = b / b.sum(), a / a.sum()
    x = np.arange(len(b))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(x - 0.2, b, 0.4, label="original", color="#9e9e9e")
    colors = ["#c62828" if ai < bi else "#2e7d32" for ai, bi in zip(a, b, strict=True)]
    bars = ax.bar(x + 0.2, a, 0.4, label="after (green: up, red: down)", color=colors)
    for i in forget:
        bars[i].set_hatch("//")
    ax.set_xticks(x)
    ax.set_xlabel("class assigned by the classifier")
    ax.set_ylabel("share of generated samples")
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def rgb_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, pad: int = 2, scale: int = 2) -> Path:
    """Save RGB images ``(N, 3, H, W)`` in [0, 1] as one PNG grid (``nrow`` per row, white padding, exact pixels
    enlarged ``scale`` times by repetition)."""
    from PIL import Image

    from genunlearn.checkpoints import atomic_write

    imgs = images.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, h, w, _ = imgs.shape
    rows = int(np.ceil(n / nrow))
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, nrow)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return atomic_write(path, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"))
