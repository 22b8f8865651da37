"""Figures of the DiT bench: before/after grids from identical noise and labels (paper figure 4), per-class
accuracy, the forget label's class histogram, forget-fraction curves (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from genunlearn.eval.figures import before_after_grid


@torch.no_grad()
def grids(fig_dir: Path, session, models: dict[str, Any], s) -> None:
    """One PNG per method: the original's and the unlearned model's samples, one row per class, same noise."""
    sampler = session.bundle.sampler
    g = torch.Generator().manual_seed(40_000)
    classes = sorted(set(session.data.labels.tolist()))
    labels = torch.tensor([c for c in classes for _ in range(s.grid_per_class)], device=session.device)
    noise = sampler.draw(len(labels), g).to(session.device)
    before = sampler.generate(session.fresh_model(), noise, labels=labels)
    for method, model in models.items():
        after = sampler.generate(model, noise, labels=labels)
        before_after_grid(
            before,
            after,
            fig_dir / f"grid-{method}.png",
            title=f"{method}: digit {s.forget} -> {s.target} (rows: labels 0-9; identical noise)",
            rows=len(classes),
        )


def class_accuracy(path: Path, records: dict[str, list[dict]], original: dict[str, Any]) -> None:
    """Grouped bars: per-label accuracy of the original and of each method (mean over seeds)."""
    labels = sorted(original["class_accuracy"]["accuracy"], key=int)
    series = {"original": [original["class_accuracy"]["accuracy"][c] for c in labels]}
    for method, recs in records.items():
        series[method] = [float(np.mean([r["class_accuracy_final"]["accuracy"][c] for r in recs])) for c in labels]
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(labels)), 3.6))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [f"label {c}" for c in labels], fontsize=8)
    ax.set_ylabel("classified as its label")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Per-label accuracy of guided samples (label {original['forget']} is being replaced)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def forget_histograms(path: Path, records: dict[str, list[dict]], original: dict[str, Any]) -> None:
    """Classes the classifier sees in samples generated with the forget label: original vs after (seed 0)."""
    n = len(records)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    before = np.array(original["class_counts"]) / max(1, sum(original["class_counts"]))
    for ax, (method, recs) in zip(axes.flat, records.items(), strict=False):
        after = np.array(recs[0]["class_counts_final"]) / max(1, sum(recs[0]["class_counts_final"]))
        x = np.arange(len(before))
        ax.bar(x - 0.2, before, 0.4, color="#9e9e9e", label="original")
        ax.bar(x + 0.2, after, 0.4, color="#1565c0", label="after")
        ax.set_title(method, fontsize=9)
        ax.set_xticks(x)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Classes of samples generated with label {original['forget']} (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves(path: Path, records: dict[str, list[dict]], threshold: float) -> None:
    """Forget fraction (share of forget-label samples classified as the forget class) vs update, median of seeds.

    Runs stopped early (``--early-stop``) have shorter curves: each update's median is over the seeds still running.
    """
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for method, recs in records.items():
        rows = [[np.nan if v is None else v for v in r["curve"]["forget_fraction"]] for r in recs]
        n = max(len(row) for row in rows)
        ys = np.array([row + [np.nan] * (n - len(row)) for row in rows], dtype=float)
        steps = np.arange(ys.shape[1])
        ok = ~np.isnan(ys).all(0)  # the monitored updates
        ax.plot(steps[ok], np.nanmedian(ys[:, ok], 0), label=method, lw=1.4)
    ax.axhline(threshold, color="k", ls=":", lw=1)
    ax.set_xlabel("update")
    ax.set_ylabel("forget fraction (median over seeds)")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_all(fig_dir: Path, session, records, original, models_seed0, s) -> None:
    """Every DiT bench figure into ``fig_dir``."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    class_accuracy(fig_dir / "class_accuracy.png", records, original)
    forget_histograms(fig_dir / "forget_label_histograms.png", records, original)
    curves(fig_dir / "forget_fraction.png", records, s.threshold)
    if models_seed0:
        grids(fig_dir, session, models_seed0, s)
