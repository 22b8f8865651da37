"""What Selective Amnesia's EWC weight lambda means on the MNIST DiT: the scale of its Fisher and of its gradients.

Builds SA's three terms for the bench's replacement session (label 1, the bundled DiT, the bench's sampler) exactly
as ``genunlearn bench mnist-dit --methods amnesia`` does (pool of ``fisher_samples`` generated samples, Fisher
from it), then reports the Fisher's distribution (mean, median, quantiles, max over all weights) and, on one
batch, the surrogate's and the replay's gradient sizes (L2 norm and mean absolute entry). From those, the EWC
gradient ``2 lambda F dtheta`` for a mean Fisher entry at ``dtheta`` = 1e-3 (the distance Adam at lr 1e-4 moves a
weight in 100 updates when its gradient keeps its sign) is compared with the surrogate's mean entry, for several
lambda: where the ratio is near 1 the penalty starts to hold weights. A calculation from measured scales, not a
claim about forgetting (``results/mnist-dit/bench-amnesia*/`` measure that).

Usage: python benchmarks/dit_fisher_scale.py [--threads 1] [--out benchmarks/results/dit_fisher_scale.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from genunlearn.checkpoints import atomic_write_json
from genunlearn.experiments.dit_bench import DiTBenchSettings, make_session
from genunlearn.objectives import ObjectiveConfig
from genunlearn.provenance import run_record

LAMBDAS = (1e2, 1e4, 1e6, 1e7, 1e8)
DTHETA = 1e-3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fisher-samples", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/dit_fisher_scale.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = DiTBenchSettings()
    session = make_session(s, None, "cpu")
    objective = ObjectiveConfig(loss_reduction=s.loss_reduction, fisher_samples=args.fisher_samples)
    t0 = time.perf_counter()
    terms = session.terms(("surrogate", "replay", "ewc"), objective, s.batch_size)
    setup_s = time.perf_counter() - t0
    fisher = torch.cat([f.reshape(-1) for f in terms["ewc"].fisher.values()]).double()
    sample = fisher[torch.randperm(len(fisher), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    quantiles = {name: float(torch.quantile(sample, q)) for name, q in (("median", 0.5), ("q90", 0.9), ("q99", 0.99))}
    model = session.fresh_model()
    params = [p for p in model.parameters() if p.requires_grad]
    x_f, y_f = session.forget_data
    batch = (x_f[: s.batch_size], y_f[: s.batch_size])

    def grad_stats(loss: torch.Tensor) -> dict[str, float]:
        g = torch.cat([v.reshape(-1) for v in torch.autograd.grad(loss, params)])
        return {"loss": float(loss.detach()), "l2": float(g.norm()), "mean_abs": float(g.abs().mean())}

    surrogate = grad_stats(terms["surrogate"](model, None, batch))
    replay = grad_stats(terms["replay"](model))
    mean_f = float(fisher.mean())
    ratios = {
        f"lambda_{lam:.0e}".replace("e+0", "e"): 2 * lam * mean_f * DTHETA / surrogate["mean_abs"] for lam in LAMBDAS
    }
    result = {
        "fisher_samples": args.fisher_samples,
        "fisher_timesteps": 10,
        "weights": len(fisher),
        "fisher": {"mean": mean_f, "max": float(fisher.max()), **quantiles},  # quantiles of 1M random entries
        "surrogate_gradient": surrogate,
        "replay_gradient": replay,
        "dtheta": DTHETA,
        "ewc_over_surrogate_gradient_at_mean_fisher": ratios,
        "terms_setup_s": setup_s,
        "provenance": run_record({"script": "benchmarks/dit_fisher_scale.py", **vars(args)}),
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1))


if __name__ == "__main__":
    main()
