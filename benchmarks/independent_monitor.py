"""Re-measure a benchmark's seed-0 models with an independent classifier.

Classifier-assisted methods (H, S^, UNO^, UNO^-S^) optimise against the same classifier that monitors
them, so they can "forget" by producing samples that merely fool it. This script decodes 1,024 latents
(fixed, eval mode) with each seed-0 model of a ``genunlearn bench mnist`` output and counts the forget
digit with a *different* classifier.

Usage:
    python benchmarks/independent_monitor.py results/mnist/bundled \
        ../shared/anchors/uno-paper-mnist/classifier.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.models import load_model


def main(bench_dir: str, classifier: str, use_bn: bool = False) -> None:
    bench = Path(bench_dir)
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
    rows = [("original", mon.measure(load_model("mnist-vae", results["spec"]["checkpoint"])).fraction, None)]
    for r in results["rows"]:
        path = bench / "runs" / r["entry"] / "seed0.safetensors"
        if path.is_file():
            own = json.loads((bench / "runs" / r["entry"] / "seed0.json").read_text())
            rows.append(
                (r["entry"], mon.measure(load_model("mnist-vae", path)).fraction, own["forget_fraction_final_robust"])
            )
    lines = [
        "| entry (seed 0, after K updates) | forget fraction, independent classifier | forget fraction, "
        "bench's own classifier |",
        "|---|---|---|",
    ]
    lines += [f"| {e} | {f:.3f} | {'—' if o is None else f'{o:.3f}'} |" for e, f, o in rows]
    text = "\n".join(lines)
    print(text)
    (bench / "independent_monitor.md").write_text(
        f"Independent classifier: {classifier} (bn1 {'applied' if use_bn else 'skipped'}); 1,024 latents, "
        "eval mode.\n\n" + text + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], use_bn=len(sys.argv) > 3 and sys.argv[3] == "bn")
