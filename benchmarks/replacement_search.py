"""How long does ``rep``'s neighbour search take for high-dimensional latents and many examples?

``nearest_unambiguous`` finds, for every forget example, its nearest *unambiguous* retained examples (exact,
Euclidean, in the frozen encoder's latent space). Latents of dimension <= 8 use a KD-tree; above that a
chunked brute-force search on matrix products that tests purity only for candidate targets. This script times
it on synthetic latents shaped like a face VAE's (d = 512, a clustered forget class) for growing sizes up to
200,000 examples, and checks the brute-force result against ``torch.cdist`` on the smallest size.

Usage: python benchmarks/replacement_search.py [--dims 512] [--sizes 20000,50000,100000,200000]
           [--forget-share 0.1] [--threads 2]
Writes benchmarks/results/replacement_search.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genunlearn.checkpoints import atomic_write_json
from genunlearn.objectives import nearest_unambiguous

ROOT = Path(__file__).resolve().parents[1]


def latents(n: int, d: int, share: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Retained and forget posterior means: ten Gaussian clusters, the forget class one of them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, d, generator=g) * 2.0
    n_f = int(share * n)
    labels = torch.cat([torch.zeros(n_f, dtype=torch.long), torch.randint(1, 10, (n - n_f,), generator=g)])
    mu = centres[labels] + torch.randn(n, d, generator=g)
    return mu[n_f:], mu[:n_f]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--sizes", default="20000,50000,100000,200000")
    ap.add_argument("--forget-share", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "replacement_search.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for i, n in enumerate(int(s) for s in args.sizes.split(",")):
        mu_r, mu_f = latents(n, args.dims, args.forget_share)
        t0 = time.perf_counter()
        idx = nearest_unambiguous(mu_r, mu_f, neighbours=1, purity_neighbours=16, max_forget_share=0.0)
        dt = time.perf_counter() - t0
        row = {"examples": n, "retained": len(mu_r), "forget": len(mu_f), "dims": args.dims, "seconds": dt}
        if i == 0:  # exactness on the smallest size: each target is the nearest retained point with pure neighbours
            d_all = torch.cdist(mu_r, torch.cat([mu_r, mu_f]))
            d_all.fill_diagonal_(float("inf"))
            pure = (d_all.topk(16, largest=False).indices < len(mu_r)).all(1)
            d = torch.cdist(mu_f, mu_r)
            d[:, ~pure] = float("inf")
            row["matches_exact_search"] = bool(torch.equal(d.argmin(1), idx[:, 0]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"what": "rep's exact nearest-unambiguous-neighbour search, brute force on matrix products", "rows": rows}
    from genunlearn.provenance import run_record

    out["provenance"] = run_record(vars(args))
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
