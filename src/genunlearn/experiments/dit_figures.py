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
def grids(fig_dir: Path, session, models: dict[str, Any], s, retrained: Any | None = None) -> None:
    """One PNG per method: the original's and the unlearned model's samples, one row per class, same noise; with a
    ``retrained`` model also ``grid-retrained.png`` (the original against it)."""
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
    if retrained is not None:
        before_after_grid(
            before,
            sampler.generate(retrained, noise, labels=labels),
            fig_dir / "grid-retrained.png",
            title=f"the DiT retrained without label {s.forget} (rows: labels 0-9; identical noise)",
            rows=len(classes),
            names=("original", f"retrained without label {s.forget}"),
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


def forget_histograms(
    path: Path, records: dict[str, list[dict]], original: dict[str, Any], retrained: dict[str, Any] | None = None
) -> None:
    """Classes the classifier sees in samples generated with the forget label: original vs after (seed 0), and the
    retrained model's (same noises) when there is one."""
    n = len(records)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    before = np.array(original["class_counts"]) / max(1, sum(original["class_counts"]))
    for ax, (method, recs) in zip(axes.flat, records.items(), strict=False):
        after = np.array(recs[0]["class_counts_final"]) / max(1, sum(recs[0]["class_counts_final"]))
        x = np.arange(len(before))
        if retrained is None:
            ax.bar(x - 0.2, before, 0.4, color="#9e9e9e", label="original")
            ax.bar(x + 0.2, after, 0.4, color="#1565c0", label="after")
        else:
            gold = np.array(retrained["class_counts"]) / max(1, sum(retrained["class_counts"]))
            ax.bar(x - 0.28, before, 0.28, color="#9e9e9e", label="original")
            ax.bar(x, after, 0.28, color="#1565c0", label="after")
            ax.bar(x + 0.28, gold, 0.28, color="#2e7d32", label="retrained")
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


def gold_distances(path: Path, rows: list[dict], original: dict[str, Any]) -> None:
    """Two panels: each method's FID to the retrained model (kept labels) and TV of its forget-label histogram to the
    retrained model's (mean and std over seeds), the original's distances as dashed lines."""
    rows = [r for r in rows if r.get("fid_kept_to_retrained")]
    if not rows:
        return
    to = original.get("to_retrained") or {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.8))
    y = np.arange(len(rows))
    for ax, key, xlabel in (
        (axes[0], "fid_kept_to_retrained", "FID to the retrained model, kept labels (lower = closer)"),
        (
            axes[1],
            "tv_forget_label_to_retrained",
            f"TV of label {original['forget']}'s class histogram to the retrained",
        ),
    ):
        means = [r[key][0] for r in rows]
        stds = [r[key][1] or 0.0 for r in rows]
        ax.barh(y, means, xerr=stds, color="#1565c0")
        if to.get(key) is not None:
            ax.axvline(to[key], color="#c62828", ls="--", label="original")
            ax.legend(fontsize=8)
        ax.set_yticks(y, [r["method"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel(xlabel, fontsize=9)
    fig.suptitle("Distance to the DiT retrained without the forget label (0 = the gold standard)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_all(
    fig_dir: Path,
    session,
    records,
    original,
    models_seed0,
    s,
    rows: list[dict] | None = None,
    retrained: dict[str, Any] | None = None,
    retrained_model: Any | None = None,
) -> None:
    """Every DiT bench figure into ``fig_dir`` (with a retrained model: its histogram, grid and the distances)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    class_accuracy(fig_dir / "class_accuracy.png", records, original)
    forget_histograms(fig_dir / "forget_label_histograms.png", records, original, retrained)
    curves(fig_dir / "forget_fraction.png", records, s.threshold)
    if retrained is not None and rows:
        gold_distances(fig_dir / "distance_to_retrained.png", rows, original)
    if models_seed0 or retrained_model is not None:
        grids(fig_dir, session, models_seed0, s, retrained_model)
