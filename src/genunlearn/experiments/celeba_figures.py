"""Figures of the CelebA bench: before/after face grids from identical latents (paper figures 3, 9, 10) and the
rates of other attributes (matplotlib, Agg). Generated faces only: no training image is ever drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from genunlearn.adapters import eval_mode
from genunlearn.eval.figures import before_after_grid


@torch.no_grad()
def grid_latents(session, original: torch.nn.Module, n: int = 18, pool: int = 1024) -> tuple[torch.Tensor, int]:
    """The grids' latents: from a fixed pool (seed 50,000), the first ``n // 2`` whose face the ``original`` model
    draws with the feature (by the monitor's classifier, eval mode), then the first latents without it, ``n`` in all.

    A rare feature (eyeglasses: a few percent of the faces) would otherwise seldom appear among 18 random faces, so
    the grid could not show what happened to it. Returns the latents and how many of them show the feature.
    """
    z = session.bundle.sampler.draw(pool, torch.Generator().manual_seed(50_000)).to(session.device)
    with eval_mode(original):
        has = torch.cat([session.classifier(original.decode(c)).argmax(1).bool() for c in z.split(256)])
    with_feature = torch.nonzero(has).flatten()[: n // 2]
    without = torch.nonzero(~has).flatten()[: n - len(with_feature)]
    return z[torch.cat([with_feature, without])], len(with_feature)


def grids(fig_dir: Path, session, models: dict[str, Any], s, n: int = 18) -> None:
    """One PNG per method: ``n`` faces of the original and of the unlearned model from the same latents, the first
    of them faces the original draws with the feature (:func:`grid_latents`)."""
    original = session.fresh_model()
    z, k = grid_latents(session, original, n)
    with eval_mode(original):
        before = original.decode(z)
    feat = ("|" if s.attr_mode == "any" else "&").join(s.attributes)
    for method, model in models.items():
        with eval_mode(model):
            after = model.decode(z)
        title = f"{method}: forget {feat} (the first {k} faces: the original's called {feat})"
        before_after_grid(before, after, fig_dir / f"grid-{method}.png", title=title, rows=3)


def attribute_rates(path: Path, records: dict[str, list[dict]], original: dict[str, Any], s) -> None:
    """Grouped bars of the other attributes' rates: original, implied by removing the feature, each method."""
    attrs = [a for a in original["attributes"]["rates"] if a not in s.attributes]
    series = {
        "original": [original["attributes"]["rates"][a] for a in attrs],
        "implied": [original["attributes"]["rates_without_feature"][a] or 0.0 for a in attrs],
    }
    for method, recs in records.items():
        series[method] = [float(np.mean([r["attributes_final"]["rates"][a] for r in recs])) for a in attrs]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(attrs)), 3.6))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(np.arange(len(attrs)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(attrs)) + 0.4 - width / 2, attrs)
    ax.set_ylabel("rate among generated faces")
    ax.set_title("What else changed (same latents; 'implied': original faces without the feature)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves(path: Path, records: dict[str, list[dict]], s) -> None:
    """Forget fraction against updates, one thin line per seed, one colour per method, the threshold dashed."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, (method, recs) in enumerate(records.items()):
        colour = f"C{i % 10}"
        for j, r in enumerate(recs):
            ff = np.asarray(r["curve"]["forget_fraction"], dtype=float)
            steps = np.arange(len(ff))
            keep = ~np.isnan(ff)
            ax.plot(steps[keep], ff[keep], color=colour, lw=1, alpha=0.8, label=method if j == 0 else None)
    ax.axhline(s.threshold, color="k", ls="--", lw=0.8)
    ax.set_xlabel("update")
    ax.set_ylabel("share of generated faces with the feature")
    feat = ("|" if s.attr_mode == "any" else "&").join(s.attributes)
    ax.set_title(f"Forgetting {feat} (monitor: {s.monitor_samples} fixed latents; dashed: threshold)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_all(fig_dir: Path, session, records, original, models_seed0, s) -> None:
    """Every CelebA bench figure into ``fig_dir``."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    curves(fig_dir / "forget_curves.png", records, s)
    attribute_rates(fig_dir / "attribute_rates.png", records, original, s)
    if models_seed0:
        grids(fig_dir, session, models_seed0, s)
