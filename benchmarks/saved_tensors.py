"""Bytes of tensors saved for backward by one step of each method on the MNIST VAE (saved_tensors_hooks).

Usage: python benchmarks/saved_tensors.py [--out benchmarks/results/saved_tensors.json]
(the table in benchmarks/NOTES.md is generated from that file by ``genunlearn report``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import step_cost

from genunlearn.checkpoints import atomic_write_text
from genunlearn.experiments.records import dumps_compact
from genunlearn.provenance import run_record


def saved_bytes(step, params: list[torch.Tensor]) -> dict[int, int]:
    """Storage pointer -> bytes of every tensor (not a parameter) saved for backward during ``step()``."""
    param_ptrs = {p.data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="s,naive-s,uno,naive-uno,uno-fd")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "saved_tensors.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, loss_fn, xr, xf, hat, rep = step_cost.setup("mnist-vae", torch.device("cpu"), args.batch)
    steps, params = step_cost.make_steps(model, loss_fn, xr, xf, hat, rep)
    rows = []
    for name in args.methods.split(","):
        seen = saved_bytes(steps[name], params)
        largest = sorted(seen.values(), reverse=True)[:6]
        rows.append({"method": name, "storages": len(seen), "bytes": sum(seen.values()), "largest_bytes": largest})
        big = [round(b / 2**20, 2) for b in largest]
        print(f"{name:10s} {len(seen):4d} saved storages, {sum(seen.values()) / 2**20:7.1f} MiB; largest (MiB) {big}")
    data = {"model": "mnist-vae", "batch": args.batch, "device": "cpu", "rows": rows, "provenance": run_record(args)}
    atomic_write_text(args.out, dumps_compact(data))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
