"""How does BatchNorm's mode during unlearning change the outcome? Methods x BN modes x seeds.

BN modes (``--bn-mode`` of ``genunlearn unlearn``): ``train`` (reference code: batch statistics, running
statistics updated by every retain and forget batch), ``eval`` (running statistics used and kept),
``batch`` (batch statistics, running statistics untouched).

Usage: python benchmarks/bn_mode.py [--checkpoint VAE --classifier-checkpoint CLF] [--seeds 3] [--steps 200]
           [--methods s,uno,rep] [--modes train,eval,batch] [--independent-classifier CLF2 [--independent-bn]]
Prints, per setting, the median (over seeds) first update below 2% and the update from which the
fraction stays below 2% (robust monitor: 1,024 latents per seed, eval mode), the retain-digit FID
change (5,000 samples) and, with ``--independent-classifier``, the final forget fraction by that second
classifier; appends the rows as JSON lines to --out, each with its monitor (classifier checkpoint,
bn1 use) and provenance (command line, git commit, versions, machine, date).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace

from genunlearn.experiments.bench import first_below, stays_below
from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec
from genunlearn.experiments.records import mnist_inputs
from genunlearn.loop import UnlearnConfig
from genunlearn.models import load_model
from genunlearn.provenance import run_record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--classifier-checkpoint")
    ap.add_argument("--methods", default="s,uno,rep")
    ap.add_argument("--modes", default="train,eval,batch")
    ap.add_argument("--independent-classifier", default=None, help="A second classifier for the final reading.")
    ap.add_argument("--independent-bn", action="store_true", help="Apply bn1 in the independent classifier.")
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
    second = None
    if args.independent_classifier:
        clf2 = load_model("mnist-classifier", args.independent_classifier, use_bn=args.independent_bn or None)
        second = replace(setup.monitor(0), classifier=clf2)
    for method in args.methods.split(","):
        for bn in args.modes.split(","):
            firsts, stays, dfid, finals, finals2 = [], [], [], [], []
            for seed in range(args.seeds):
                cfg = UnlearnConfig(method=method, steps=args.steps, bn_mode=bn, early_stop=False, seed=seed)
                model, res = setup.run(cfg, progress=False)
                ff = [r["forget_fraction"] for r in res.log]
                f, s = first_below(ff, 0.02), stays_below(ff, 0.02)
                firsts.append(float("inf") if f is None else f)
                stays.append(float("inf") if s is None else s)
                dfid.append(setup.fid(model, 5000, seed)["fid_retain"] - fid0)
                finals.append(ff[-1])
                if second is not None:
                    finals2.append(replace(second, latents=setup.monitor(seed).latents).measure(model).fraction)
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
                "fid_retain_changes": dfid,
                "final_forget_fraction": finals,
                "final_forget_fraction_independent": finals2 or None,
                "independent_classifier": args.independent_classifier,
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
