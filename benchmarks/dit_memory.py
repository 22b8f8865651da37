"""How much memory does a UNO step need on DiT-XL/2? Measured on small DiTs, fitted, and extrapolated.

No GPU is lent to this project's machine, so the memory of one unlearning step (peak of live tensors, from the
profiler's memory timeline; ``genunlearn.eval.memory``) is measured on small latent-space DiTs
(``DiTTransformer2DModel`` with learned sigma, 4 latent channels, patch 2, as DiT-XL/2) over widths, depths,
token counts and batch sizes, for S, UNO and UNO-FD on the replacement task of the paper (eq. 4-8). Each method's
peak is fitted (non-negative least squares) as

    peak = a * P  +  b * B*T*W*L  +  c * B*T*T*H*L

(``P`` parameters, ``B`` batch, ``T`` tokens, ``W`` width, ``L`` layers, ``H`` heads: parameter-sized buffers,
activations, attention scores), checked on configurations left out of the fit, and evaluated for DiT-XL/2
(P = 675M, W = 1152, L = 28, H = 16, T = 256 latent tokens) at batch 1-32 — a *computed* estimate, stated as such.

Usage: python benchmarks/dit_memory.py [--threads 2] [--out benchmarks/results/dit_memory.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from genunlearn.checkpoints import atomic_write_json
from genunlearn.eval.memory import peak_live_tensor_bytes
from genunlearn.loop import attention_kernels
from genunlearn.methods import MethodParams, StepContext, get_method
from genunlearn.objectives import DiffusionObjective, ReplacementTask
from genunlearn.provenance import run_record

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("s", "uno", "uno-fd")
XL = {"parameters": 675_129_632, "width": 1152, "layers": 28, "heads": 16, "tokens": 256}


def measure(width: int, layers: int, heads: int, side: int, batch: int) -> dict:
    from diffusers import DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        in_channels=4,
        out_channels=8,
        sample_size=side,
        patch_size=2,
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        num_layers=layers,
        num_embeds_ada_norm=10,
        norm_type="ada_norm_zero",
    )
    with torch.no_grad():  # adaLN-Zero starts at the identity; any non-degenerate point has the same memory
        for p in dit.parameters():
            p.add_(0.01 * torch.randn_like(p))

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.t = dit

        def forward(self, x, t, y):
            return self.t(x, timestep=t, class_labels=y, return_dict=False)[0]

    model = Wrap().train()
    obj = DiffusionObjective(DDPMScheduler(), prediction="epsilon")
    task = ReplacementTask(obj.conditional, 1, 7)
    g = torch.Generator().manual_seed(0)
    xr = torch.randn(batch, 4, side, side, generator=g)
    xf = torch.randn(batch, 4, side, side, generator=g)
    params = list(model.parameters())
    out = {
        "width": width,
        "layers": layers,
        "heads": heads,
        "tokens": (side // 2) ** 2,
        "batch": batch,
        "parameters": sum(p.numel() for p in params),
        "peak_bytes": {},
    }
    for name in METHODS:
        m = get_method(name)
        ctx = StepContext(
            params=params,
            retain_loss=lambda: task.retain_loss(model, xr),
            forget_loss=lambda: task.forget_loss(model, xf),
            hp=MethodParams(beta_o=2e-2),
        )

        def step(m=m, ctx=ctx):
            with attention_kernels(m.needs_double_backward(ctx)):
                return m.compute(ctx).direction

        out["peak_bytes"][name] = peak_live_tensor_bytes(step)
    return out


def features(r: dict) -> list[float]:
    b, t, w, layers, h = r["batch"], r["tokens"], r["width"], r["layers"], r["heads"]
    return [r["parameters"], b * t * w * layers, b * t * t * h * layers]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dit_memory.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = list(itertools.product((64, 128), (2, 4), (8, 16), (1, 4, 8)))  # width, layers, side, batch
    rows = []
    for width, layers, side, batch in grid:
        r = measure(width, layers, 4, side, batch)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items()}), flush=True)
    held_out = [i for i, (w, la, side, b) in enumerate(grid) if (w, la) == (128, 4) and b == 8]
    train = [i for i in range(len(rows)) if i not in held_out]
    fits, predictions = {}, {}
    for name in METHODS:
        x = np.array([features(rows[i]) for i in train], dtype=float)
        y = np.array([rows[i]["peak_bytes"][name] for i in train], dtype=float)
        scale = x.max(0)
        coef, _ = nnls(x / scale, y)
        coef = coef / scale
        check = [
            {
                "config": {k: rows[i][k] for k in ("width", "layers", "tokens", "batch")},
                "measured_mib": rows[i]["peak_bytes"][name] / 2**20,
                "fitted_mib": float(np.dot(coef, features(rows[i]))) / 2**20,
            }
            for i in held_out
        ]
        fits[name] = {
            "coef_bytes": {"per_parameter": coef[0], "per_activation": coef[1], "per_score": coef[2]},
            "held_out": check,
        }
        predictions[name] = {
            str(b): float(np.dot(coef, features({**XL, "batch": b}))) / 2**30 for b in (1, 2, 4, 8, 16, 32)
        }
        print(name, "per-parameter bytes", round(coef[0], 2), "held out:", check)
    for b in (1, 2, 4, 8, 16, 32):
        print(f"DiT-XL/2 batch {b:2d}: " + "  ".join(f"{m} {predictions[m][str(b)]:6.1f} GiB" for m in METHODS))
    atomic_write_json(
        args.out,
        {
            "what": "peak live-tensor memory of one step, measured on small DiTs (CPU profiler), fitted, and "
            "extrapolated to DiT-XL/2 (computed, not measured: no GPU was lent)",
            "model_of_peak": "a*P + b*B*T*W*L + c*B*T^2*H*L",
            "dit_xl_2": XL,
            "measurements": rows,
            "fits": fits,
            "dit_xl_2_predicted_gib": predictions,
            "provenance": run_record(vars(args)),
        },
    )


if __name__ == "__main__":
    main()
