"""How many retained images `rep` leaves out as targets because they sit among the forget examples.

`LatentReplacement.for_vae` uses as replacement targets only *unambiguous* retained examples: those none
of whose 16 nearest training examples (by the frozen encoder's posterior mean) is a forget example. This
script counts, per model and forget digit, the retained images and the ambiguous ones excluded, with the
defaults of `for_vae`, and writes benchmarks/results/rep_targets.json (quoted in docs/findings.md).

Usage: python benchmarks/rep_targets.py [--forget 1,7,8] [--out benchmarks/results/rep_targets.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genunlearn.checkpoints import atomic_write_text
from genunlearn.data import ForgetSplit, load_dataset
from genunlearn.experiments.records import dumps_compact
from genunlearn.models import load_model
from genunlearn.objectives import _unambiguous
from genunlearn.paths import authors_weights
from genunlearn.provenance import file_fingerprint, run_record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forget", default="1,7,8")
    ap.add_argument("--purity-neighbours", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rep_targets.json"))
    args = ap.parse_args()
    train = load_dataset("mnist", "train")
    x = train.flat_float()
    models = {"bundled": None, "authors": authors_weights("vae.safetensors")}
    rows = []
    for name, path in models.items():
        if name == "authors" and path is None:
            print("authors' VAE not found (set GENUNLEARN_SHARED); skipped")
            continue
        vae = load_model("mnist-vae", path).eval()
        with torch.no_grad():
            mu = torch.cat([vae.encode(x[s : s + 4096])[0] for s in range(0, len(x), 4096)]).numpy()
        for digit in (int(d) for d in args.forget.split(",")):
            split = ForgetSplit.by_class(train.labels, digit, num_classes=10)
            keep = _unambiguous(mu[split.retain.numpy()], mu[split.forget.numpy()], args.purity_neighbours, 0.0)
            row = {"model": name, "forget": digit, "retained": int(keep.size), "excluded": int((~keep).sum())}
            rows.append({**row, "vae": file_fingerprint(path) if path else "bundled"})
            print(row)
    data = {"purity_neighbours": args.purity_neighbours, "rows": rows, "provenance": run_record(args)}
    atomic_write_text(args.out, dumps_compact(data))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
