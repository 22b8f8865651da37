"""How the UNO authors' MNIST classifier counts 1s with and without its ``bn1`` layer.

The authors' own forward skips ``bn1`` (97.0% test accuracy; 98.2% with it). Benches that use their classifier as the
second, independent reader of a forgetting claim must say which forward they used, because the two read different
shares of 1s among *generated* digits. This script measures, on the bundled VAE's samples from the 10,000 latents that
``bench compare`` shares between models (seeded 40,000) and on the MNIST test images: the share classified as 1 by the
bundled classifier and by the authors' classifier with ``bn1`` skipped and applied, and each forward's agreement with
the bundled classifier.

    python benchmarks/independent_bn.py --out benchmarks/results/independent_bn.json
"""

from __future__ import annotations

import argparse

import torch

from genunlearn.checkpoints import atomic_write_json
from genunlearn.data import load_dataset
from genunlearn.errors import ConfigError
from genunlearn.models import load_model
from genunlearn.paths import authors_weights
from genunlearn.provenance import record_start, run_record


@torch.no_grad()
def _read(clf: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([clf(b).argmax(1) for b in x.split(5000)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/independent_bn.json")
    ap.add_argument("--latents", type=int, default=10_000)
    args = ap.parse_args()
    record_start()
    path = authors_weights("classifier.safetensors")
    if path is None:
        raise ConfigError("the UNO authors' classifier is not in ../shared/anchors/uno-paper-mnist/")
    own = load_model("mnist-classifier").eval()
    forwards = {f"authors_bn1_{'applied' if bn else 'skipped'}": load_model("mnist-classifier", path, use_bn=bn).eval()
                for bn in (False, True)}  # fmt: skip
    vae = load_model("mnist-vae").eval()
    z = torch.randn(args.latents, vae.latent_dim, generator=torch.Generator().manual_seed(40_000))
    with torch.no_grad():
        generated = torch.cat([vae.decode(b) for b in z.split(5000)])
    test = load_dataset("mnist", "test")
    inputs = {"generated": generated, "test": test.flat_float()}
    rows = {}
    for name, x in inputs.items():
        ref = _read(own, x)
        row = {"n": len(x), "bundled_share_1": float((ref == 1).float().mean())}
        if name == "test":
            row["true_share_1"] = float((test.labels == 1).float().mean())
        for key, clf in forwards.items():
            p = _read(clf, x)
            row[f"{key}_share_1"] = float((p == 1).float().mean())
            row[f"{key}_agreement_with_bundled"] = float((p == ref).float().mean())
            if name == "test":
                row[f"{key}_accuracy"] = float((p == test.labels).float().mean())
        rows[name] = row
    provenance = run_record({"latents": args.latents}, inputs={"authors_classifier": str(path)})
    result = {"rows": rows, "provenance": provenance}
    atomic_write_json(args.out, result)
    for name, row in rows.items():
        print(name, {k: round(v, 4) for k, v in row.items()})


if __name__ == "__main__":
    main()
