"""Does BatchNorm's train mode during unlearning slow forgetting down? S, UNO and s-asc, bn train vs eval.

Usage: python benchmarks/bn_mode.py [--checkpoint VAE --classifier-checkpoint CLF] [--seeds 3] [--steps 200]
Prints, per setting, the median (over seeds) first update below 2% and the update from which the
fraction stays below 2% (robust monitor: 1,024 latents per seed, eval mode), and the retain-digit FID
change (5,000 samples); appends the rows as JSON lines to --out, each with its monitor (classifier
checkpoint, bn1 use) and provenance (command line, git commit, versions, machine, date).
"""

from __future__ import annotations

import argparse
import json
import statistics

from genunlearn.experiments.bench import first_below, stays_below
from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec
from genunlearn.experiments.records import mnist_inputs
from genunlearn.loop import UnlearnConfig
from genunlearn.provenance import run_record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--classifier-checkpoint")
    ap.add_argument("--methods", default="s,uno,s-asc")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--forget", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/bn_mode.jsonl")
    args = ap.parse_args()
    setup = MnistSetup(
        MnistUnlearnSpec(
            forget=(args.forget,), checkpoint=args.checkpoint, classifier_checkpoint=args.classifier_checkpoint
        )
    )
    fid0 = setup.fid(setup.fresh_model(), 5000, 0)["fid_retain"]
    for method in args.methods.split(","):
        for bn in ("train", "eval"):
            firsts, stays, dfid = [], [], []
            for seed in range(args.seeds):
                cfg = UnlearnConfig(method=method, steps=args.steps, bn_mode=bn, early_stop=False, seed=seed)
                model, res = setup.run(cfg, progress=False)
                ff = [r["forget_fraction"] for r in res.log]
                f, s = first_below(ff, 0.02), stays_below(ff, 0.02)
                firsts.append(float("inf") if f is None else f)
                stays.append(float("inf") if s is None else s)
                dfid.append(setup.fid(model, 5000, seed)["fid_retain"] - fid0)
            row = {
                "checkpoint": args.checkpoint or "bundled",
                "forget": args.forget,
                "method": method,
                "bn_mode": bn,
                "seeds": args.seeds,
                "steps": args.steps,
                "median_first_below": statistics.median(firsts),
                "median_stays_below": statistics.median(stays),
                "median_fid_retain_change": statistics.median(dfid),
                "firsts": firsts,
                "stays": stays,
                "monitor": {
                    "classifier_checkpoint": args.classifier_checkpoint or "bundled",
                    "classifier_bn": bool(getattr(setup.classifier, "use_bn", False)),
                    "samples": setup.spec.monitor_samples,
                    "mode": setup.spec.monitor_mode,
                },
                "provenance": run_record(args, inputs=mnist_inputs(setup.spec)),
            }
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
