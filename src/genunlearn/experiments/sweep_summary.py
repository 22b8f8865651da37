"""Summary of a hyperparameter sweep (``benchmarks/sweep.py``): medians over seeds per setting.

The single implementation of ``summary.csv`` and ``summary.md``: the sweep script writes them with it, and
``genunlearn report`` regenerates them from the committed ``cells.jsonl`` with it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genunlearn.checkpoints import atomic_write_csv, atomic_write_text

#: What identifies a cell (one run); all but ``seed`` identify a setting (a summary row).
KEYS = (
    "method",
    "beta_o",
    "ascent_weight",
    "beta_r",
    "keep_weight",
    "lr",
    "optimizer",
    "loss_reduction",
    "forget",
    "seed",
    "steps",
    "checkpoint",
    "classifier_checkpoint",
)
#: Keys that older sweeps did not record (left out of their summary instead of showing as empty).
OPTIONAL_KEYS = ("classifier_checkpoint", "keep_weight")
#: Per-cell measures that older sweeps did not record: their medians join the summary when every cell has them.
OPTIONAL_MEASURES = ("collateral_at_first", "collateral_final", "retained_tv_final")


def read_cells(path: str | Path) -> list[dict[str, Any]]:
    """The cells of a ``cells.jsonl`` (one JSON object per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def sweep_hold(cells: Sequence[Mapping[str, Any]], default: int = 100) -> int:
    """The ``--hold`` window the cells were run with (recorded per cell; older sweeps: ``default``)."""
    holds = {c.get("hold", default) for c in cells}
    if len(holds) > 1:
        raise ValueError(f"cells were run with different --hold windows {sorted(holds)}")
    return holds.pop() if holds else default


def summary_rows(cells: Sequence[Mapping[str, Any]], hold: int) -> list[dict[str, Any]]:
    """One row per setting: medians over seeds of updates to < 2%, rebound and FID change."""
    keys = [k for k in KEYS if k != "seed" and (k not in OPTIONAL_KEYS or any(k in c for c in cells))]
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for c in cells:
        groups.setdefault(tuple(c.get(k) for k in keys), []).append(c)
    measures = [m for m in OPTIONAL_MEASURES if cells and all(m in c for c in cells)]
    rows = []
    for k, cs in groups.items():
        ups = [c["first_below"] if c["first_below"] is not None else np.inf for c in cs]
        stay = [c["stays_below"] if c["stays_below"] is not None else np.inf for c in cs]
        rows.append(
            {
                **dict(zip(keys, k, strict=True)),
                "seeds": len(cs),
                "median_first_below": float(np.median(ups)),
                "median_stays_below": float(np.median(stay)),
                "reached": sum(np.isfinite(ups)),
                "stayed": sum(np.isfinite(stay)),
                "held": sum(bool(c.get("held")) for c in cs),
                "median_ff_final": statistics.median(c["ff_final"] for c in cs),
                "median_fid_retain_delta": statistics.median(c["fid_retain_delta"] for c in cs),
                "max_fid_retain_delta": max(c["fid_retain_delta"] for c in cs),
                "median_max_after_first": statistics.median(
                    max(c["curve"][c["first_below"] : c["first_below"] + hold + 1])
                    if c["first_below"] is not None
                    else 1.0
                    for c in cs
                ),
                **{f"median_{m}": _median_known(c[m] for c in cs) for m in measures},
            }
        )
    return rows


def _median_known(values: Any) -> float | None:
    """Median of the values that are not ``None`` (``None`` if there are none)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def render_summary_md(rows: Sequence[Mapping[str, Any]], hold: int) -> str:
    """The ``summary.md`` table (``keep_weight`` and the collateral columns only where the cells recorded them)."""
    keep = any("keep_weight" in r for r in rows)
    collateral = any("median_collateral_final" in r for r in rows)
    head = "| method | beta_o | ascent_weight | beta_r | " + ("keep_weight | " if keep else "")
    head += (
        f"lr | optimizer | reduction | digit | seeds | median updates to < 2% | reached | held {hold} updates "
        f"| median max. in those {hold} | median retain-FID change | max. change |"
    )
    if collateral:
        head += " median collateral at first < 2% | median collateral, final | median retained TV, final |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}%"

    for r in rows:
        line = f"| {r['method']} | {r['beta_o']:g} | {r['ascent_weight']:g} | {r['beta_r']:g} | "
        if keep:
            line += "— | " if r.get("keep_weight") is None else f"{r['keep_weight']:g} | "
        line += (
            f"{r['lr']:g} | {r['optimizer']} | {r['loss_reduction']} | {r['forget']} | {r['seeds']} "
            f"| {r['median_first_below']:g} | {r['reached']} | {r['held']} | {100 * r['median_max_after_first']:.1f}% "
            f"| {r['median_fid_retain_delta']:+.2f} | {r['max_fid_retain_delta']:+.2f} |"
        )
        if collateral:
            line += (
                f" {pct(r.get('median_collateral_at_first'))} | {pct(r.get('median_collateral_final'))} "
                f"| {pct(r.get('median_retained_tv_final'))} |"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_summary(cells: Sequence[Mapping[str, Any]], out: str | Path, hold: int) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` into ``out``; returns the rows."""
    out = Path(out)
    rows = summary_rows(cells, hold)
    atomic_write_csv(out / "summary.csv", rows)
    atomic_write_text(out / "summary.md", render_summary_md(rows, hold))
    return rows
