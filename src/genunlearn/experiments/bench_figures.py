"""Figures of the MNIST benchmark: sample grids, histograms, forget-fraction curves, FID, latent maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from genunlearn.eval.figures import _tile, panels

DIGIT_COLORS = plt.get_cmap("tab10")


def sample_grids(path: Path, setup, models: dict[str, Any], labels: dict[str, str]) -> None:
    """Paper figure 1: 8x8 samples from identical latents, original and each method (seed 0)."""
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)).to(setup.device)
    items = [("original", setup.fresh_model())] + [(labels[k], m) for k, m in models.items()]
    fig, axes = panels(len(items), 4)
    for ax, (name, model) in zip(axes, items, strict=False):
        with torch.no_grad():
            model.eval()
            ax.imshow(1.0 - _tile(model.decode(z), 8), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name if len(name) < 40 else name[:38] + "…", fontsize=8)
        ax.axis("off")
    fig.suptitle("Samples from identical latents after K updates (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def histograms(
    path: Path, records: dict[str, list[dict]], labels: dict[str, str], original: dict[str, Any], forget: list[int]
) -> None:
    """Paper figure 2: classes of generated samples before and after (robust monitor, seed 0)."""
    keys = [k for k in records if records[k]]
    fig, axes = panels(len(keys), 4)
    before = np.asarray(original["class_counts_robust"], float)
    before /= before.sum()
    for ax, k in zip(axes, keys, strict=False):
        after = np.asarray(records[k][0]["class_counts_final_robust"], float)
        after /= after.sum()
        x = np.arange(len(before))
        ax.bar(x - 0.2, before, 0.4, color="#9e9e9e")
        ax.bar(
            x + 0.2, after, 0.4, color=["#c62828" if a < b else "#2e7d32" for a, b in zip(after, before, strict=True)]
        )
        ax.set_xticks(x)
        ax.set_title(labels[k] if len(labels[k]) < 40 else labels[k][:38] + "…", fontsize=8)
        for f in forget:
            ax.axvspan(f - 0.5, f + 0.5, color="#ffcdd2", alpha=0.4, zorder=0)
    fig.suptitle("Share of generated samples per digit: original (grey) vs after K updates (green up / red down)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curves(path: Path, records: dict[str, list[dict]], labels: dict[str, str], threshold: float) -> None:
    """Forget fraction vs update and vs compute seconds, median over seeds with a min-max band."""
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    for i, k in enumerate(records):
        recs = records[k]
        color = plt.get_cmap("tab10")(i % 10)
        style = "-" if i < 10 else ":"
        for row, mon in enumerate(("robust", "ref")):
            ys = np.array([r["curve"][f"forget_fraction_{mon}"] for r in recs], float)
            ts = np.array([r["curve"]["compute_time_s"] for r in recs], float)
            x = np.arange(ys.shape[1])
            med, lo, hi = np.median(ys, 0), ys.min(0), ys.max(0)
            axes[row, 0].plot(x, med, color=color, ls=style, label=labels[k] if row == 0 else None, lw=1.4)
            axes[row, 0].fill_between(x, lo, hi, color=color, alpha=0.12)
            axes[row, 1].plot(np.median(ts, 0), med, color=color, ls=style, lw=1.4)
            axes[row, 1].fill_between(np.median(ts, 0), lo, hi, color=color, alpha=0.12)
    for row, mon in enumerate(
        ("robust monitor (1,024 latents per seed, eval mode)", "reference monitor (128 latents per run, train mode)")
    ):
        for col, xl in enumerate(("update", "compute time (s)")):
            ax = axes[row, col]
            ax.axhline(threshold, color="k", ls="--", lw=0.8)
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_xlabel(xl)
            ax.set_ylabel("forget fraction")
            ax.set_title(mon, fontsize=9)
            if col == 1:
                ax.set_xscale("symlog", linthresh=0.01)
                ax.set_xlim(left=0)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Forget fraction (median over seeds, band: min-max); x of the right column: median compute time")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fid_bars(path: Path, rows: list[dict[str, Any]], original: dict[str, Any]) -> None:
    """FID (mean +- std over seeds) per method, against all digits and against retain digits."""
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = np.arange(len(rows))
    for off, key, name, color in (
        (-0.2, "fid", "all digits", "#1565c0"),
        (0.2, "fid_retain", "retain digits", "#ef6c00"),
    ):
        m = [r[key][0] for r in rows]
        s = [r[key][1] for r in rows]
        ax.bar(x + off, m, 0.4, yerr=s, label=f"FID vs {name}", color=color, capsize=2)
        ax.axhline(original[key], color=color, ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([r["entry"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("FID (classifier features, log scale)")
    ax.set_title("FID after K updates; dashed: original model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def latent_maps(
    path: Path, setup, models: dict[str, Any], labels: dict[str, str], extent: float = 3.0, n: int = 160
) -> None:
    """Paper figure 8: the 2-D latent plane coloured by the digit the classifier sees in each decoded point."""
    lin = torch.linspace(-extent, extent, n)
    zz = torch.stack(torch.meshgrid(lin, lin, indexing="xy"), -1).reshape(-1, 2).to(setup.device)
    items = [("original", setup.fresh_model())] + [(labels[k], m) for k, m in models.items()]
    fig, axes = panels(len(items), len(items))
    for ax, (name, model) in zip(axes, items, strict=False):
        model.eval()
        pred = setup.classifier(model.decode(zz)).argmax(1).reshape(n, n).cpu().numpy()
        ax.imshow(
            pred,
            origin="lower",
            extent=(-extent, extent, -extent, extent),
            cmap=DIGIT_COLORS,
            vmin=-0.5,
            vmax=9.5,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("z1")
    handles = [plt.Rectangle((0, 0), 1, 1, color=DIGIT_COLORS(d)) for d in range(10)]
    fig.legend(handles, [str(d) for d in range(10)], loc="center right", title="digit")
    fig.suptitle("Latent plane coloured by classified digit (decoded in eval mode)")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def make_all(fig_dir: Path, setup, records, rows, original, models_seed0, settings) -> None:
    """Write every figure of the benchmark into ``fig_dir``."""
    labels = {r["entry"]: r["label"] for r in rows}
    forget = list(setup.spec.forget)
    histograms(fig_dir / "histograms.png", records, labels, original, forget)
    curves(fig_dir / "forget_fraction.png", records, labels, settings.threshold)
    fid_bars(fig_dir / "fid.png", rows, original)
    if models_seed0:
        sample_grids(fig_dir / "grids.png", setup, models_seed0, labels)
        chosen = {k: m for k, m in models_seed0.items() if k in ("s", "uno", "uno-s")}
        latent_maps(fig_dir / "latent_map.png", setup, chosen, labels)
