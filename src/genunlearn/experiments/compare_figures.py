"""Figures of ``genunlearn bench compare``: the trade-off, sample grids, class histograms, forget curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from genunlearn.adapters import eval_mode
from genunlearn.eval.figures import _tile, panels

FAMILY_COLORS = {
    "paper": "#1565c0",
    "paper (classifier)": "#64b5f6",
    "genunlearn": "#2e7d32",
    "peer": "#c62828",
    "baseline": "#757575",
}


def tradeoff(path: Path, result: dict[str, Any]) -> None:
    """Distance to the retrained model (FID, or FID vs retained digits without one) against collateral change."""
    rows = result["rows"]
    use_retrained = any(r["fid_to_retrained"][0] is not None for r in rows)
    key = "fid_to_retrained" if use_retrained else "fid_retain"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in rows:
        x, y = r[key], r["changed_share"]
        if x[0] is None or y[0] is None:
            continue
        color = FAMILY_COLORS.get(r["family"], "black")
        ax.errorbar(x[0], 100 * y[0], xerr=x[1], yerr=100 * y[1], fmt="o", color=color, capsize=2)
        ax.annotate(r["entry"], (x[0], 100 * y[0]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    for ref in result["references"]:
        if ref["entry"].startswith("retrained") and ref.get(key) is not None:
            ax.axvline(ref[key], color="#9e9e9e", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("FID to the retrained model (log)" if use_retrained else "FID vs retained digits (log)")
    ax.set_ylabel("collateral: retained-digit samples whose digit changed (%)")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f) for f, c in FAMILY_COLORS.items()]
    ax.legend(handles=handles, frameon=False, fontsize=8)
    ax.set_title("Closer to retraining (left) and less collateral (down) is better; dotted: retrained vs retrained")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grids(path: Path, session: Any, gold: Any, models: dict[str, Any], labels: dict[str, str]) -> None:
    """6x6 samples from the first gold latents: original, retrained, each method (seed 0)."""
    z = gold.latents[:36]
    items = (
        [("original", session.fresh_model())]
        + [(f"retrained {i}", m) for i, m in enumerate(gold.models[:1])]
        + [(labels.get(k, k), m) for k, m in models.items()]
    )
    fig, axes = panels(len(items), 6, (2.6, 2.8))
    sampler = session.bundle.sampler
    for ax, (name, model) in zip(axes, items, strict=False):
        with torch.no_grad(), eval_mode(model):
            ax.imshow(1.0 - _tile(sampler.generate(model, z), 6), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name if len(name) < 28 else name[:26] + "…", fontsize=7)
        ax.axis("off")
    fig.suptitle("Samples from the same latents after K updates (seed 0); the retrained model has its own latent space")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def histograms(path: Path, gold: Any, records: dict[str, list[dict]]) -> None:
    """Class shares of the gold samples: original (grey), retrained (black outline), each method (seed 0)."""
    keys = [k for k, recs in records.items() if recs and recs[0].get("gold")]
    fig, axes = panels(len(keys), 4, (2.6, 2.8))
    before = np.asarray(gold.original["counts"], float)
    before /= before.sum()
    ref = None
    if gold.retrained:
        ref = np.asarray(gold.retrained[0]["counts"], float)
        ref /= ref.sum()
    x = np.arange(len(before))
    for ax, k in zip(axes, keys, strict=False):
        after = np.asarray(records[k][0]["gold"]["measured"]["counts"], float)
        after /= after.sum()
        ax.bar(x - 0.2, before, 0.4, color="#9e9e9e")
        ax.bar(x + 0.2, after, 0.4, color="#1565c0")
        if ref is not None:
            ax.step(x, ref, where="mid", color="black", lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xticks(x)
        ax.tick_params(labelsize=7)
    fig.suptitle("Digit shares of samples from the gold latents: original (grey), after (blue), retrained (line)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curves(path: Path, records: dict[str, list[dict]], result: dict[str, Any]) -> None:
    """Forget fraction (robust monitor) per update, mean over seeds, per method."""
    fig, ax = plt.subplots(figsize=(8, 5))
    families = {r["entry"]: r["family"] for r in result["rows"]}
    for k, recs in records.items():
        arr = np.asarray([r["curve"]["forget_fraction"] for r in recs if r.get("curve")], float)
        if arr.size == 0:
            continue
        ax.plot(100 * arr.mean(0), label=k, color=FAMILY_COLORS.get(families.get(k, ""), "black"), lw=1)
    ax.axhline(100 * result["settings"]["threshold"], color="black", ls=":", lw=1)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("update")
    ax.set_ylabel("forget fraction, robust monitor (%)")
    ax.legend(fontsize=7, ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_all(
    out: Path, session: Any, gold: Any, records: dict[str, list[dict]], result: dict[str, Any], models0: dict
) -> None:
    """Every figure of the comparison into ``out``."""
    labels = {r["entry"]: r["entry"] for r in result["rows"]}
    tradeoff(out / "tradeoff.png", result)
    grids(out / "grids.png", session, gold, models0, labels)
    histograms(out / "histograms.png", gold, records)
    curves(out / "forget_fraction.png", records, result)
