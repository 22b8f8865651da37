"""Measure memorisation of the MNIST training images, and pick the forget sets of sample-level unlearning.

Counterfactual memorisation (Feldman & Zhang 2020; van den Burg & Williams 2021 for generative models) of a
training image ``x``: the mean negative ELBO of ``x`` under shadow models that did *not* train on it minus under
those that did (nats). The shadows are ``benchmarks/shadows.py``'s (random halves, scaled-down recipe). The
bundled model's own view is recorded beside it: its loss of ``x`` against the shadows' OUT mean (the offline
likelihood-ratio score).

Writes into ``--out``:

- ``forget-sets/random-{10,100,1000}.txt``: nested random sets (seeded 80,000);
- ``forget-sets/memorised-{10,100,1000}.txt``: the most memorised images (highest score among images with at
  least one IN and one OUT shadow);
- ``forget-sets/all.txt``: the union of the sets (the sets are nested, so this is random-1000 with memorised-1000):
  a model retrained without it has seen none of the forget images of any set;
- ``memorisation.json``: the score distribution and that of a null (each shadow's IN/OUT assignment replaced by
  another random half: model-to-model noise only), every image's score (rounded), the sets' scores and labels,
  and the run's provenance;
- ``figures/memorised.png``: the 100 most memorised images.

    python benchmarks/forget_sets.py --shadows runs/shadows --out results/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genunlearn.checkpoints import atomic_write_json
from genunlearn.data import load_dataset
from genunlearn.eval.membership import lira_offline_scores, memorisation_scores, vae_nll
from genunlearn.experiments.samples import Shadow
from genunlearn.models import load_model
from genunlearn.objectives import VAEObjective
from genunlearn.provenance import record_start, run_record

SIZES = (10, 100, 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shadows", default="runs/shadows", help="directory holding shadow0, shadow1, ...")
    ap.add_argument("--out", default="results/samples")
    ap.add_argument("--draws", type=int, default=2, help="reparameterisation draws per image")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    record_start()
    out = Path(args.out)
    (out / "forget-sets").mkdir(parents=True, exist_ok=True)
    train = load_dataset("mnist", "train")
    x = train.flat_float()
    n = len(x)
    runs = sorted(Path(args.shadows).glob("shadow*"), key=lambda p: int(p.name.removeprefix("shadow")))
    shadows = [Shadow.from_run(r, n) for r in runs if (r / "record.json").is_file()]
    if len(shadows) < 2:
        raise SystemExit(f"{args.shadows}: need at least two finished shadow models, found {len(shadows)}")
    per = VAEObjective("bernoulli").per_example
    nll = torch.stack(
        [vae_nll(load_model("mnist-vae", s.path), x, per, latent_dim=2, draws=args.draws) for s in shadows]
    )
    inside = torch.stack([s.trained_on for s in shadows])
    mem = memorisation_scores(nll, inside)
    # null: the same losses with each shadow's IN/OUT assignment replaced by another random half (model-to-model
    # noise only); real memorisation shows as scores above the null's upper quantiles
    g = torch.Generator().manual_seed(90_000)
    fake = torch.stack([torch.randperm(n, generator=g) < int(s.trained_on.sum()) for s in shadows])
    null = memorisation_scores(nll, fake)
    target = vae_nll(load_model("mnist-vae"), x, per, latent_dim=2, draws=args.draws)
    lira = lira_offline_scores(target, nll, ~inside)
    valid = ~torch.isnan(mem)
    ranked = torch.argsort(torch.where(valid, mem, torch.full_like(mem, -1e9)), descending=True)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(80_000))
    sets = {}
    for size in SIZES:
        sets[f"random-{size}"] = sorted(perm[:size].tolist())
        sets[f"memorised-{size}"] = sorted(ranked[:size].tolist())
    for name, ids in sets.items():
        (out / "forget-sets" / f"{name}.txt").write_text("\n".join(map(str, ids)) + "\n")
    union = sorted({i for ids in sets.values() for i in ids})
    (out / "forget-sets" / "all.txt").write_text("\n".join(map(str, union)) + "\n")
    levels = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99, 0.999], dtype=torch.float64)
    q = torch.quantile(mem[valid], levels)
    q_null = torch.quantile(null[~torch.isnan(null)], levels)
    summary = {
        "shadows": [{"path": s.path, "trained_on": int(s.trained_on.sum())} for s in shadows],
        "draws": args.draws,
        "scored_images": int(valid.sum()),
        "memorisation_quantiles": dict(zip(["1%", "10%", "50%", "90%", "99%", "99.9%"], q.tolist(), strict=True)),
        "memorisation_mean": float(mem[valid].mean()),
        "null_quantiles": dict(zip(["1%", "10%", "50%", "90%", "99%", "99.9%"], q_null.tolist(), strict=True)),
        "above_null_999": int((mem[valid] > q_null[-1]).sum()),
        "sets": {
            name: {
                "ids": ids,
                "labels": train.labels[ids].tolist(),
                "memorisation_mean": float(mem[ids][~torch.isnan(mem[ids])].mean()),
                "bundled_model_lira_mean": float(lira[ids][~torch.isnan(lira[ids])].mean()),
            }
            for name, ids in sets.items()
        },
        "per_image_memorisation": [None if torch.isnan(v) else round(float(v), 3) for v in mem],
        "provenance": run_record(
            {"shadows": args.shadows, "draws": args.draws},
            inputs={f"shadow{i}": s.path for i, s in enumerate(shadows)},
        ),
    }
    atomic_write_json(out / "memorisation.json", summary)
    _figure(out / "figures" / "memorised.png", x[ranked[:100]], mem[ranked[:100]])
    keys = ("scored_images", "memorisation_quantiles", "null_quantiles", "above_null_999")
    print({k: v for k, v in summary.items() if k in keys})


def _figure(path: Path, images: torch.Tensor, scores: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genunlearn.eval.figures import _tile

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 7.4))
    ax.imshow(1.0 - _tile(images, 10), cmap="gray", vmin=0, vmax=1)
    ax.set_title(
        f"The 100 most memorised training images (scores {float(scores[-1]):.1f} to {float(scores[0]):.1f} nats)"
    )
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
