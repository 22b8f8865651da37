"""Hyperparameter sweep for issue-6-style questions: how fast, how clean and how robust is each method?

Usage (resumable: finished cells are read back from --out/cells.jsonl):

    python benchmarks/sweep.py --methods s,uno,uno-s --beta-o 1e1,1e3,1e5 --lr 1e-3,1e-2 \
        --optimizer adam --loss-reduction sum,mean --forget 1,7,8 --seeds 0,1,2 --steps 150 --out results/sweep
    python benchmarks/sweep.py --methods rep --x-param beta_r --beta-r 3,10,30 --forget 1,7,8 \
        --seeds 0,1,2,3,4,5,6,7,8,9 --steps 120 --out results/sweep/rep

Every cell runs the full number of updates (no early stop) with the robust monitor (1,024 latents fixed
per seed, eval mode) and records the first update below the threshold, the update from which it stays
below, whether it stays below for the ``--hold`` updates after the first time (no rebound; undecided if
the run is shorter), the final and minimum forget fraction, and the retain-digit FID after the run. It writes
cells.jsonl, summary.csv (median over seeds per setting) and heatmaps (updates to unlearn, and FID change,
over learning rate x beta_o for each method / reduction / optimizer / digit). Every cell also records its
monitor (classifier checkpoint and bn1 use, latents, mode), the collateral change on the monitor's latents
(at the first reading below 2% and at the end) and the retained digits' TV distance at the end, the ``--hold``
window, the FID sample count and its provenance (command line, config, git commit, versions, machine, date:
``genunlearn.provenance``).
The summary covers this invocation's grid; ``--summarise-all`` summarises every cell in cells.jsonl (runs appended
by earlier invocations with other grids too). The summaries are regenerated from cells.jsonl by ``genunlearn report``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from genunlearn.experiments.bench import first_below, held_below, stays_below
from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec
from genunlearn.experiments.records import mnist_inputs
from genunlearn.experiments.sweep_summary import KEYS, write_summary
from genunlearn.loop import UnlearnConfig
from genunlearn.objectives import ObjectiveConfig
from genunlearn.provenance import record_start, run_record


def floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",")]


def key_of(cell: dict) -> str:
    return json.dumps({k: cell[k] for k in sorted(cell) if k in KEYS}, sort_keys=True)


def _drop_unused(cell: dict) -> dict:
    """The cell without the hyperparameters its method does not read (only ``keep_weight`` so far)."""
    return cell if cell["method"].startswith("rep-keep") else {k: v for k, v in cell.items() if k != "keep_weight"}


def run_cell(setup: MnistSetup, cell: dict, fid_samples: int, fid_original: float, hold: int) -> dict:
    cfg = UnlearnConfig(
        method=cell["method"],
        steps=cell["steps"],
        lr=cell["lr"],
        beta_o=cell["beta_o"],
        ascent_weight=cell["ascent_weight"],
        beta_r=cell["beta_r"],
        keep_weight=cell.get("keep_weight", 10.0),
        optimizer=cell["optimizer"],
        early_stop=False,
        seed=cell["seed"],
    )
    monitor = setup.monitor(cell["seed"], n=setup.spec.monitor_samples, mode=setup.spec.monitor_mode)
    monitor.set_reference(setup.fresh_model())  # every reading also measures the collateral change
    objective = ObjectiveConfig(loss_reduction=cell["loss_reduction"])
    model, res = setup.run(cfg, objective, monitor=monitor, progress=False)
    ff = [row.get("forget_fraction", float("nan")) for row in res.log]
    collateral = [row.get("collateral") for row in res.log]
    first = first_below(ff, 0.02)
    final = monitor.measure(model)
    fid = setup.fid(model, fid_samples, cell["seed"])["fid_retain"] if fid_samples else float("nan")
    return {
        **cell,
        "status": res.status,
        "first_below": first,
        "stays_below": stays_below(ff, 0.02),
        "held": held_below(ff, 0.02, hold),
        "ff_initial": ff[0],
        "ff_final": ff[-1],
        "ff_min": min(ff),
        "fid_retain": fid,
        "fid_retain_delta": fid - fid_original,
        "time_per_step_s": res.time_per_step_s,
        "curve": ff,
        "collateral_at_first": None if first is None else collateral[first],
        "collateral_final": final.collateral,
        "retained_tv_final": final.retained_tv,
        "hold": hold,
        "fid_samples": fid_samples,
        "monitor": {
            "classifier_checkpoint": setup.spec.classifier_checkpoint or "bundled",
            "classifier_bn": bool(getattr(setup.classifier, "use_bn", False)),
            "samples": setup.spec.monitor_samples,
            "mode": setup.spec.monitor_mode,
            "latents_seed": 10_000 + cell["seed"],
        },
        "provenance": run_record(
            {"cell": cell, "unlearn_config": cfg, "spec": setup.spec, "fid_samples": fid_samples, "hold": hold},
            inputs=mnist_inputs(setup.spec),
        ),
    }


def summarise(cells: list[dict], out: Path, hold: int) -> list[dict]:
    """Write summary.csv and summary.md (``genunlearn.experiments.sweep_summary``); returns the rows."""
    return write_summary(cells, out, hold)


def heatmaps(rows: list[dict], out: Path, steps: int, x: str = "beta_o") -> None:
    rows = [r for r in rows if r.get(x) is not None]  # e.g. keep_weight: rep-keep's rows only
    panels = sorted({(r["method"], r["loss_reduction"], r["optimizer"], r["forget"]) for r in rows})
    lrs = sorted({r["lr"] for r in rows})
    betas = sorted({r[x] for r in rows})
    fig, axes = plt.subplots(
        len(panels), 2, figsize=(2.2 + 1.1 * len(betas) * 2, 1.0 + 1.0 * len(lrs) * len(panels)), squeeze=False
    )
    for (ax_u, ax_f), panel in zip(axes, panels, strict=True):
        up = np.full((len(lrs), len(betas)), np.nan)
        fd = np.full((len(lrs), len(betas)), np.nan)
        for r in rows:
            if (r["method"], r["loss_reduction"], r["optimizer"], r["forget"]) == panel:
                i, j = lrs.index(r["lr"]), betas.index(r[x])
                up[i, j] = min(r["median_first_below"], steps + 1)
                fd[i, j] = r["median_fid_retain_delta"]
        for ax, mat, cmap, title in (
            (ax_u, up, "viridis_r", "median updates to < 2% (>K: never)"),
            (ax_f, fd, "RdYlGn_r", "median retain-FID change"),
        ):
            im = ax.imshow(mat, cmap=cmap, aspect="auto")
            for i, j in itertools.product(range(len(lrs)), range(len(betas))):
                if not np.isnan(mat[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{mat[i, j]:.0f}" if ax is ax_u else f"{mat[i, j]:+.1f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="w" if ax is ax_u else "k",
                    )
            ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas], fontsize=7)
            ax.set_yticks(range(len(lrs)), [f"{v:g}" for v in lrs], fontsize=7)
            ax.set_xlabel(x, fontsize=7)
            ax.set_ylabel("lr", fontsize=7)
            ax.set_title(f"{panel[0]} {panel[1]} {panel[2]} digit {panel[3]}: {title}", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out / "heatmaps.png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="s,uno,uno-s")
    ap.add_argument("--beta-o", default="1e3")
    ap.add_argument("--ascent-weight", default="1")
    ap.add_argument("--beta-r", default="10")
    ap.add_argument("--keep-weight", default="10", help="rep-keep: weight(s) of the decoder-keep term")
    ap.add_argument("--x-param", default="beta_o", choices=["beta_o", "ascent_weight", "beta_r", "keep_weight"])
    ap.add_argument("--hold", type=int, default=100, help="updates after the first < 2% that must stay below")
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--loss-reduction", default="sum")
    ap.add_argument("--forget", default="1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--fid-samples", type=int, default=5000)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--classifier-checkpoint", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--summarise-all",
        action="store_true",
        help="summarise every cell in --out's cells.jsonl (earlier invocations' grids too), not only this grid",
    )
    args = ap.parse_args()
    record_start()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / "cells.jsonl"
    done = {}
    if cells_path.is_file():
        for line in cells_path.read_text().splitlines():
            c = json.loads(line)
            done[key_of(c)] = c
    grid = [
        dict(zip(KEYS, v, strict=True))
        for v in itertools.product(
            args.methods.split(","),
            floats(args.beta_o),
            floats(args.ascent_weight),
            floats(args.beta_r),
            floats(args.keep_weight),
            floats(args.lr),
            args.optimizer.split(","),
            args.loss_reduction.split(","),
            [int(d) for d in args.forget.split(",")],
            [int(s) for s in args.seeds.split(",")],
            [args.steps],
            [args.checkpoint],
            [args.classifier_checkpoint],
        )
    ]
    # keep_weight acts on rep-keep only: other methods' cells do not carry it (one cell per setting)
    grid = list({key_of(c): c for c in (_drop_unused(c) for c in grid)}.values())
    setups: dict[int, MnistSetup] = {}
    fid0: dict[int, float] = {}
    cells = []
    for cell in tqdm(grid, desc="sweep"):
        k = key_of(cell)
        if k not in done:
            d = cell["forget"]
            if d not in setups:
                setups[d] = MnistSetup(
                    MnistUnlearnSpec(
                        forget=(d,), checkpoint=args.checkpoint, classifier_checkpoint=args.classifier_checkpoint
                    )
                )
                fid0[d] = (
                    setups[d].fid(setups[d].fresh_model(), args.fid_samples, 0)["fid_retain"]
                    if args.fid_samples
                    else float("nan")
                )
            done[k] = run_cell(setups[d], cell, args.fid_samples, fid0[d], args.hold)
            with open(cells_path, "a") as fh:
                fh.write(json.dumps(done[k]) + "\n")
        cells.append(done[k])
    if args.summarise_all:
        cells = list(done.values())
    rows = summarise(cells, out, args.hold)
    heatmaps(rows, out, args.steps, args.x_param)
    for r in rows:
        print(
            {
                k: r[k]
                for k in (
                    "method",
                    args.x_param,
                    "lr",
                    "optimizer",
                    "loss_reduction",
                    "forget",
                    "median_first_below",
                    "median_stays_below",
                    "held",
                    "median_fid_retain_delta",
                )
            }
        )


if __name__ == "__main__":
    main()
