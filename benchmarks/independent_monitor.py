"""Re-measure a benchmark's seed-0 models with an independent classifier.

Classifier-assisted methods (H, S^, UNO^, UNO^-S^) optimise against the same classifier that monitors
them, so they can "forget" by producing samples that merely fool it. This script decodes 1,024 latents
(fixed, eval mode) with each seed-0 model of a ``genunlearn bench mnist`` output and counts the forget
digit with a *different* classifier. It writes ``independent_monitor.json`` (values, classifier file with
its sha256, provenance) and ``independent_monitor.md`` (rendered by ``genunlearn.report``, which also
regenerates it from the JSON) into the bench folder.

Usage:
    python benchmarks/independent_monitor.py results/mnist/bundled \
        ../shared/anchors/uno-paper-mnist/classifier.safetensors
    python benchmarks/independent_monitor.py results/mnist/authors \
        src/genunlearn/models/weights/mnist-classifier.safetensors bn

The optional third argument ``bn`` / ``no-bn`` says whether the classifier applies ``bn1``; without it, the rule
of ``genunlearn audit`` and ``bench compare`` (:func:`genunlearn.experiments.audit.independent_bn`): as the file
records, applied when it records nothing (the UNO authors' file; their own forward skips ``bn1`` and then reads
markedly fewer 1s among generated digits: ``benchmarks/results/independent_bn.json``). Until 2026-12-04 the
default was ``bn1`` skipped. ``--out DIR`` writes the two files into ``DIR`` instead of the bench folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genunlearn.checkpoints import atomic_write_text
from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.experiments.records import dumps_compact
from genunlearn.models import load_model
from genunlearn.provenance import run_record
from genunlearn.report import render_independent_monitor


def main(bench_dir: str, classifier: str, use_bn: bool | None = None, out: str | None = None) -> None:
    """Re-measure ``bench_dir``'s seed-0 models; write into ``out`` (default: the bench folder itself)."""
    from genunlearn.experiments.audit import independent_bn

    use_bn = independent_bn(classifier, use_bn)
    bench = Path(bench_dir)
    target = Path(out) if out else bench
    target.mkdir(parents=True, exist_ok=True)
    results = json.loads((bench / "results.json").read_text())
    forget = results["spec"]["forget"]
    clf = load_model("mnist-classifier", classifier, use_bn=use_bn)
    mon = ForgetMonitor(
        generate=lambda m, z: m.decode(z),
        classifier=clf,
        latents=torch.randn(1024, 2, generator=torch.Generator().manual_seed(10_000)),
        forget_classes=forget,
        mode="eval",
    )
    rows = [
        {
            "entry": "original",
            "independent": mon.measure(load_model("mnist-vae", results["spec"]["checkpoint"])).fraction,
            "own": None,
        }
    ]
    for r in results["rows"]:
        path = bench / "runs" / r["entry"] / "seed0.safetensors"
        if path.is_file():
            own = json.loads((bench / "runs" / r["entry"] / "seed0.json").read_text())
            rows.append(
                {
                    "entry": r["entry"],
                    "independent": mon.measure(load_model("mnist-vae", path)).fraction,
                    "own": own["forget_fraction_final_robust"],
                }
            )
    data = {
        "classifier": classifier,
        "use_bn": use_bn,
        "latents": 1024,
        "latents_seed": 10_000,
        "rows": rows,
        "provenance": run_record(
            {"bench_dir": bench_dir, "classifier": classifier, "use_bn": use_bn},
            inputs={"classifier": classifier, "vae": results["spec"]["checkpoint"]},
        ),
    }
    atomic_write_text(target / "independent_monitor.json", dumps_compact(data))
    text = render_independent_monitor(data)
    atomic_write_text(target / "independent_monitor.md", text)
    print(text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_dir", help="a genunlearn bench mnist output folder")
    ap.add_argument("classifier", help="the independent MNIST classifier's weights")
    ap.add_argument("bn", nargs="?", choices=["bn", "no-bn"], help="apply bn1 or skip it (default: audit's rule)")
    ap.add_argument("--out", default=None, help="write the two files here instead of into BENCH_DIR")
    args = ap.parse_args()
    main(args.bench_dir, args.classifier, use_bn=None if args.bn is None else args.bn == "bn", out=args.out)
