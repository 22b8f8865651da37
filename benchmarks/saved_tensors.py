"""Bytes of tensors saved for backward by one step of each method on the MNIST VAE (saved_tensors_hooks).

Usage: python benchmarks/saved_tensors.py   (numbers quoted in benchmarks/NOTES.md)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import step_cost


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
    torch.set_num_threads(2)
    model, loss_fn, xr, xf, hat, rep = step_cost.setup("mnist-vae", torch.device("cpu"), 128)
    steps, params = step_cost.make_steps(model, loss_fn, xr, xf, hat, rep)
    for name in ("s", "naive-s", "uno", "naive-uno", "uno-fd"):
        seen = saved_bytes(steps[name], params)
        big = [round(b / 2**20, 2) for b in sorted(seen.values(), reverse=True)[:6]]
        print(f"{name:10s} {len(seen):4d} saved storages, {sum(seen.values()) / 2**20:7.1f} MiB; largest (MiB) {big}")


if __name__ == "__main__":
    main()
