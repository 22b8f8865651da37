"""What survives FSDP (fully sharded parameters) on CPU with gloo: the gradient primitives the methods need.

Usage:  python benchmarks/fsdp_probe.py [--out benchmarks/results/fsdp_probe.json]

Two gloo processes shard a small tanh MLP with FSDP2 (``torch.distributed.fsdp.fully_shard``, one unit per
layer, parameters as DTensor shards). Each rank holds half of a batch; the probe checks, against the
single-process computation on the whole batch (float64):

1. ``torch.autograd.grad`` with respect to the sharded parameters (what ``genunlearn.methods.gradients.grad``
   calls);
2. ``loss.backward()`` and the sharded ``.grad`` (FSDP's reduce-scatter), and the global dot product and norms
   of two such gradients computed on the shards (what S's projection needs);
3. an exact Hessian-vector product: ``backward(create_graph=True)`` followed by a second backward through the
   sharded gradients (what UNO's exact gradient needs);
4. a finite-difference Hessian-vector product from two first-order ``backward()`` calls with the shards moved
   along ``v`` (what ``uno-fd`` needs);
5. LoRA on a sharded, frozen base: peft LoRA layers whose ``base_layer`` is sharded by FSDP (all-gathered in the
   forward, no gradients) while the adapter matrices stay whole on every rank: ``torch.autograd.grad`` over the
   adapter, exact Hessian-vector products through it, and genunlearn's all-reduce of the ranks' shares (what
   the engine does in a data-parallel run) against the single-process values.

Each check records ``ok`` (and the relative error against the single-process value) or the error PyTorch
raised. Results go to ``--out`` with provenance; ``docs/scale.md`` quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

OUT = Path(__file__).parent / "results" / "fsdp_probe.json"


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    y = torch.randn(8, 3, generator=g, dtype=torch.float64)
    xf = torch.randn(8, 6, generator=g, dtype=torch.float64) + 1.0
    yf = torch.randn(8, 3, generator=g, dtype=torch.float64)
    return x, y, xf, yf


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).sum()  # summed over the batch: the ranks' losses add up to the global loss


def lora_model() -> nn.Module:
    from peft import LoraConfig, get_peft_model

    model = make_model()
    torch.manual_seed(2)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=["0", "2", "4"]))
    with torch.no_grad():  # B away from zero, so that every adapter gradient is non-trivial
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, dtype=p.dtype))
    return peft_model


def lora_reference() -> dict[str, list[torch.Tensor]]:
    model = lora_model()
    x, y, xf, yf = data()
    params = [p for p in model.parameters() if p.requires_grad]
    g_r = torch.autograd.grad(loss_fn(model, x, y), params, create_graph=True)
    g_f = torch.autograd.grad(loss_fn(model, xf, yf), params)
    hv = torch.autograd.grad(g_r, params, grad_outputs=[t.detach() for t in g_f])
    return {"g_r": [t.detach() for t in g_r], "g_f": [t.detach() for t in g_f], "hv": list(hv)}


def reference() -> dict[str, list[torch.Tensor]]:
    model = make_model()
    x, y, xf, yf = data()
    params = list(model.parameters())
    g_r = torch.autograd.grad(loss_fn(model, x, y), params, create_graph=True)
    g_f = torch.autograd.grad(loss_fn(model, xf, yf), params)
    v = [t.detach() for t in g_f]
    hv = torch.autograd.grad(g_r, params, grad_outputs=v)
    return {"g_r": [t.detach() for t in g_r], "g_f": [t.detach() for t in g_f], "hv": list(hv)}


def _full(t) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _rel(a: list, b: list[torch.Tensor]) -> float:
    num = sum(float((_full(x).detach() - y).pow(2).sum()) for x, y in zip(a, b, strict=True)) ** 0.5
    den = sum(float(y.pow(2).sum()) for y in b) ** 0.5
    return num / max(den, 1e-300)


def worker(rank: int, world: int, init: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results: dict[str, dict] = {}
    ref = reference()
    try:
        mesh = init_device_mesh("cpu", (world,))
        model = make_model()
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        x, y, xf, yf = data()
        half = slice(rank * 4, rank * 4 + 4)
        xr_, yr_, xf_, yf_ = x[half], y[half], xf[half], yf[half]
        params = list(model.parameters())
        results["parameters"] = {"type": type(params[0]).__name__, "local_shape_0": list(params[0].to_local().shape)}

        def check(name, fn):
            try:
                results[name] = {"ok": True, **fn()}
            except Exception as exc:  # the probe records what fails
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                if os.environ.get("FSDP_PROBE_TRACE"):
                    traceback.print_exc()

        def autograd_grad():
            gs = torch.autograd.grad(loss_fn(model, xr_, yr_), params, allow_unused=True)
            unused = sum(g is None for g in gs)
            return {"unused": unused, "of": len(gs)} | (
                {"rel_error": _rel(gs, ref["g_r"]) * 0 + _rel([_full(g) * 1 for g in gs], ref["g_r"])}
                if not unused
                else {}
            )

        check("autograd_grad", autograd_grad)

        def backward_grads():
            model.zero_grad(set_to_none=True)
            loss_fn(model, xr_, yr_).backward()
            g_r = [p.grad.detach().clone() for p in params]
            model.zero_grad(set_to_none=True)
            loss_fn(model, xf_, yf_).backward()
            g_f = [p.grad.detach().clone() for p in params]
            model.zero_grad(set_to_none=True)
            # FSDP averages the ranks' gradients (divides by the world size): the global sum is world x that
            g_r = [g * world for g in g_r]
            g_f = [g * world for g in g_f]
            dot = sum(torch.sum(a * b) for a, b in zip(g_r, g_f, strict=True))  # DTensor: partial sums reduced
            ref_dot = sum(float(torch.sum(a * b)) for a, b in zip(ref["g_r"], ref["g_f"], strict=True))
            return {
                "rel_error_g_r": _rel(g_r, ref["g_r"]),
                "rel_error_g_f": _rel(g_f, ref["g_f"]),
                "dot_rel_error": abs(float(_full(dot)) - ref_dot) / abs(ref_dot),
                "grad_type": type(g_r[0]).__name__,
            }

        check("backward_sharded_grads_and_dot", backward_grads)

        def exact_hvp():
            model.zero_grad(set_to_none=True)
            loss_fn(model, xr_, yr_).backward(create_graph=True)
            g = [p.grad for p in params]
            v = [_v for _v in ref["g_f"]]
            from torch.distributed.tensor import distribute_tensor

            v_sh = [distribute_tensor(t, mesh, p.placements) for t, p in zip(v, params, strict=True)]
            s = sum(torch.sum(a * b) for a, b in zip(g, v_sh, strict=True))
            hv = torch.autograd.grad(_full(s) if not isinstance(s, torch.Tensor) else s, params, allow_unused=True)
            if any(h is None for h in hv):
                return {"unused": sum(h is None for h in hv)}
            return {"rel_error": _rel([h * world for h in hv], ref["hv"])}

        check("double_backward_hvp", exact_hvp)

        def fd_hvp():
            from torch.distributed.tensor import distribute_tensor

            eps = 1e-6
            v = [distribute_tensor(t, mesh, p.placements) for t, p in zip(ref["g_f"], params, strict=True)]
            model.zero_grad(set_to_none=True)
            loss_fn(model, xr_, yr_).backward()
            g0 = [p.grad.detach().clone() for p in params]
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for p, d in zip(params, v, strict=True):
                    p.add_(d, alpha=eps)
            loss_fn(model, xr_, yr_).backward()
            g1 = [p.grad.detach().clone() for p in params]
            with torch.no_grad():
                for p, d in zip(params, v, strict=True):
                    p.add_(d, alpha=-eps)
            model.zero_grad(set_to_none=True)
            hv = [(b - a) * (world / eps) for a, b in zip(g0, g1, strict=True)]
            return {"rel_error": _rel(hv, ref["hv"]), "eps": eps}

        check("finite_difference_hvp", fd_hvp)

        def lora_on_sharded_base(keep_gathered: bool):
            from genunlearn.distributed import DataParallel

            ref_l = lora_reference()
            peft_model = lora_model()
            units = []
            for name, module in peft_model.named_modules():
                if name.endswith("base_layer"):  # frozen base weights: sharded, all-gathered in the forward
                    fully_shard(module, mesh=mesh, reshard_after_forward=not keep_gathered)
                    units.append(module)
            sharded = sum(1 for p in peft_model.parameters() if type(p).__name__ == "DTensor")
            if keep_gathered:  # the second backward needs the gathered weights the first one's graph saved
                for module in units:
                    module.set_reshard_after_backward(False)
            adapter = [p for p in peft_model.parameters() if p.requires_grad]
            dp = DataParallel()
            g_r = torch.autograd.grad(loss_fn(peft_model, xr_, yr_), adapter, create_graph=True)
            g_f = torch.autograd.grad(loss_fn(peft_model, xf_, yf_), adapter)
            hv_local = torch.autograd.grad(g_r, adapter, grad_outputs=ref_l["g_f"])
            g_r_global = dp.all_reduce([g.detach() for g in g_r])
            g_f_global = dp.all_reduce(list(g_f))
            hv = dp.all_reduce(list(hv_local))
            for module in units:
                module.reshard()
            return {
                "sharded_base_tensors": sharded,
                "adapter_tensors": len(adapter),
                "rel_error_g_r": _rel(g_r_global, ref_l["g_r"]),
                "rel_error_g_f": _rel(g_f_global, ref_l["g_f"]),
                "rel_error_hvp": _rel(hv, ref_l["hv"]),
            }

        check("lora_adapter_on_sharded_frozen_base", lambda: lora_on_sharded_base(False))
        check("lora_adapter_on_sharded_frozen_base_kept_gathered", lambda: lora_on_sharded_base(True))
    finally:
        if rank == 0:
            Path(out).write_text(json.dumps(results))
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    from genunlearn.checkpoints import atomic_write_json
    from genunlearn.provenance import record_start, run_record

    record_start()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        res_path = Path(tmp) / "res.json"
        mp.spawn(worker, args=(2, str(Path(tmp) / "init"), str(res_path)), nprocs=2, join=True)
        results = json.loads(res_path.read_text())
    report = {
        "setup": "2 gloo processes on CPU, FSDP2 fully_shard per Linear layer and at the root, float64 tanh MLP "
        "(6-8-8-3), summed squared-error loss, 4 examples per rank; compared with one process on all 8",
        "torch": torch.__version__,
        "checks": results,
        "provenance": run_record(vars(args)),
    }
    atomic_write_json(args.out, report)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
