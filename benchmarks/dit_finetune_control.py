"""Control for the DiT bench's collateral damage: what do 100 small-batch Adam updates do with *no* forgetting?

The DiT bench (``results/mnist-dit``) finds that every replacement method, plain replacement fine-tuning
included, lowers the other labels' accuracy. Is that the replacement, or any fine-tuning of this small model at
the bench's settings (batch 10, constant lr, the bundled *EMA* weights as the start)? This script fine-tunes the
bundled MNIST DiT on its own retained training data (every digit but ``--forget``, each under its own label, the
plain denoising loss: method ``d`` of class unlearning, nothing is forgotten or replaced) with the bench's
optimiser settings, and measures what the bench measures with the same noises: per-class accuracy (50 samples
per label, seed-0 noises) and FID of the kept classes (classifier features, 500 samples).

Usage: python benchmarks/dit_finetune_control.py [--lrs 1e-4,1e-5] [--seeds 3] [--out results/mnist-dit/control]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from genunlearn.checkpoints import atomic_write_json, atomic_write_text
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.experiments.session import UnlearnSession
from genunlearn.loop import UnlearnConfig
from genunlearn.objectives import ObjectiveConfig
from genunlearn.provenance import record_start, run_record


def _summary(acc: dict[str, float], forget: int, target: int) -> dict[str, float]:
    """The bench's "accuracy, other classes": the labels neither forgotten nor the replacement target."""
    others = [v for c, v in acc.items() if int(c) not in (forget, target)]
    return {"accuracy_other_classes": statistics.fmean(others)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrs", default="1e-4,1e-5", help="Learning rates (the bench's: 1e-4).")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--forget", type=int, default=1, help="The digit left out of the fine-tuning data.")
    ap.add_argument("--target", type=int, default=7, help="The bench's target digit (left out of the summary).")
    ap.add_argument("--class-samples", type=int, default=50)
    ap.add_argument("--fid-samples", type=int, default=500)
    ap.add_argument("--checkpoint", default=None, help="DiT weights (default: bundled).")
    ap.add_argument("--out", default="results/mnist-dit/control")
    ap.add_argument("--render-only", action="store_true", help="Rewrite summary and table.md from results.json.")
    args = ap.parse_args()
    if args.render_only:
        path = Path(args.out) / "results.json"
        data = json.loads(path.read_text())
        data["summary"] = summarise(data["rows"])
        atomic_write_json(path, data)
        atomic_write_text(
            Path(args.out) / "table.md", render(data["rows"], argparse.Namespace(**data["settings"])) + "\n"
        )
        return
    record_start()
    options = {"sampler_steps": 10, "guidance_scale": 2.0, "sampler": "dpm++"}
    session = UnlearnSession(
        ModelConfig(name="mnist-dit", checkpoint=args.checkpoint, options=options),
        DataConfig(forget=(args.forget,)),
        MonitorConfig(samples=16),
        device="cpu",
        loss_reduction="mean",
    )
    objective = ObjectiveConfig(loss_reduction="mean")
    original = session.fresh_model()
    acc0 = session.class_accuracy(original, args.class_samples, seed=0)
    rows = [
        {
            "name": "original",
            "lr": None,
            "seed": None,
            "class_accuracy": acc0["accuracy"],
            **_summary(acc0["accuracy"], args.forget, args.target),
            "fid_kept": session.fid(original, args.fid_samples, 0)["fid_retain"],
        }
    ]
    for lr in [float(v) for v in args.lrs.split(",")]:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            cfg = UnlearnConfig(
                method="d", steps=args.steps, lr=lr, batch_size=args.batch_size, stop_at=None, seed=seed,
                monitor_every=args.steps,
            )  # fmt: skip
            model, result = session.run(cfg, objective, progress=False)
            acc = session.class_accuracy(model, args.class_samples, seed=0)
            rows.append(
                {
                    "name": "fine-tuned on retained data",
                    "lr": lr,
                    "seed": seed,
                    "status": result.status,
                    "class_accuracy": acc["accuracy"],
                    **_summary(acc["accuracy"], args.forget, args.target),
                    "fid_kept": session.fid(model, args.fid_samples, seed)["fid_retain"],
                    "wall_s": time.perf_counter() - t0,
                }
            )
            print(f"lr {lr:g} seed {seed}: other-class accuracy {rows[-1]['accuracy_other_classes']:.3f}, "
                  f"FID {rows[-1]['fid_kept']:.2f}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"settings": vars(args), "rows": rows, "summary": summarise(rows), "provenance": run_record(vars(args))}
    atomic_write_json(out / "results.json", data)
    atomic_write_text(out / "table.md", render(rows, args) + "\n")
    print(render(rows, args))


def _group(r: dict) -> str:
    return "original" if r["lr"] is None else f"fine-tuned, lr {r['lr']:g}"


def summarise(rows: list[dict]) -> list[dict]:
    """Per setting (the original, each learning rate): mean and std over seeds of the quoted numbers."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group(r), []).append(r)
    out = []
    for name, rs in groups.items():
        entry: dict = {"setting": name, "lr": rs[0]["lr"], "seeds": len(rs)}
        for key in ("accuracy_other_classes", "fid_kept"):
            vals = [r[key] for r in rs]
            entry[key] = [statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0]
        entry["class_accuracy"] = {
            c: statistics.fmean(r["class_accuracy"][c] for r in rs) for c in rs[0]["class_accuracy"]
        }
        out.append(entry)
    return out


def render(rows: list[dict], args: argparse.Namespace) -> str:
    """Markdown: the original and each learning rate (mean (std) over seeds), with per-label accuracies."""
    labels = sorted(rows[0]["class_accuracy"], key=int)
    head = ["setting", "seeds", "accuracy, other classes", "FID kept classes", *[f"label {c}" for c in labels]]
    out = [
        "# Control: fine-tuning the MNIST DiT on its own retained data (nothing forgotten)",
        "",
        f"Method `d` of class unlearning (digit {args.forget} left out of the data, every other digit under its own "
        f"label, plain denoising loss), {args.steps} Adam updates, batch {args.batch_size}, mean loss, from the "
        f"bundled EMA weights; per-label accuracy of {args.class_samples} samples per label from the DiT bench's "
        f"seed-0 noises (DPM-Solver++ 10 steps, guidance 2), FID of the kept classes from {args.fid_samples} "
        f"samples (classifier features). Other classes: the labels other than {args.forget} and {args.target}, as "
        "in the bench's tables. Mean (std) over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group(r), []).append(r)

    def ms(vals: list[float], spec: str) -> str:
        if len(vals) == 1:
            return format(vals[0], spec)
        return f"{format(statistics.fmean(vals), spec)} ({format(statistics.stdev(vals), spec)})"

    for name, rs in groups.items():
        cells = [
            name,
            str(len(rs)) if rs[0]["seed"] is not None else "—",
            ms([r["accuracy_other_classes"] for r in rs], ".3f"),
            ms([r["fid_kept"] for r in rs], ".2f"),
            *[format(statistics.fmean(r["class_accuracy"][c] for r in rs), ".2f") for c in labels],
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
