"""Shadow (reference) VAEs for sample-level membership inference and memorisation, on random halves of MNIST.

Shadow model ``k`` is ``genunlearn train vae --exclude-ids half{k}.txt --seed k --epochs E``: the bundled recipe
(Adam 1e-3, batch 128) on a random half of the 60,000 training images (the other half is excluded), for E epochs
instead of 200 — scaled down to what two shared CPU cores afford (E = 25 by default: each shadow costs about
1/16 of a full training). Each training image is then IN for about half of the shadows and OUT for the others,
which is what the offline likelihood-ratio attack and counterfactual memorisation need. The halves are drawn
from generators seeded 70,000 + k, so they are reproducible and need not be committed. Resumable (each training
is, and finished ones are skipped).

    python benchmarks/shadows.py --count 8 --epochs 25 --out runs/shadows --threads 1
    python benchmarks/shadows.py --start 16 --count 16 --out runs/shadows-fresh   # shadows 16..31: other halves
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genunlearn.train import TrainConfig, train

N_TRAIN = 60_000


def half_ids(k: int, n: int = N_TRAIN) -> list[int]:
    """The training indices shadow ``k`` leaves out (a random half, seeded 70,000 + k)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(70_000 + k))
    return sorted(perm[: n // 2].tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--start", type=int, default=0, help="index of the first shadow (its half is seeded 70,000 + k)")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--out", default="runs/shadows")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(args.start, args.start + args.count):
        ids = out / f"half{k}.txt"
        if not ids.is_file():
            ids.write_text("\n".join(map(str, half_ids(k))) + "\n")
        run = out / f"shadow{k}"
        record = run / "record.json"
        if record.is_file() and json.loads(record.read_text()).get("complete"):
            continue
        cfg = TrainConfig(model="vae", epochs=args.epochs, seed=k, exclude_ids=str(ids))
        train(cfg, run, progress=False)
        print(f"shadow {k} done: {json.loads(record.read_text())['final']}", flush=True)


if __name__ == "__main__":
    main()
