"""LoRA (peft) against full fine-tuning: step cost over ranks, and what it does to unlearning (issue 16).

Usage:
    python benchmarks/lora.py --part cost      # step time and peak live-tensor memory, MNIST VAE + CelebA-size VAE
    python benchmarks/lora.py --part cost --models mnist-dit --methods s,uno   # the same for the MNIST DiT
    python benchmarks/lora.py --part unlearn   # rep on the bundled MNIST VAE: updates to unlearn, retained FID
    python benchmarks/lora.py                  # both; results in benchmarks/results/lora.json (resumable)

**Cost.** One engine step (the method's direction plus the Adam update over the trainable set) of ``s``,
``uno`` and ``rep``, for full fine-tuning and LoRA ranks 1-16 on every layer peft can adapt
(``--target-modules all``), on two models: the bundled MNIST VAE (batch 128) and a convolutional VAE of the
CelebA size (the UNO paper's face VAE architecture, 8.7M parameters, 64x64x3 inputs, latent 512, *untrained*:
step cost does not depend on the weights; batch ``--celeba-batch``); and, with ``--models mnist-dit``, the bundled
class-conditional MNIST DiT on the DiT bench's replacement task 1 -> 7 (batch ``--dit-batch``, 10 as in the bench;
``rep`` does not apply; second-order steps run with the MATH attention kernel, as the engine selects it).
Times are medians of interleaved rounds (every configuration once per round, rotating order), so a drifting
machine affects every configuration alike; compare them as ratios within one run. Peak memory is the peak of
live tensors during one step after a warm-up step (the PyTorch profiler's memory timeline, as
``benchmarks/step_cost.py`` measures it: parameters, gradients, activations and the optimizer state the step
touches), one fresh process per configuration.

**Unlearning.** ``rep`` (the method that unlearns the bundled VAE; UNO and S do not reach 2% within 530
updates there) forgets digit 1 for ``--steps`` updates without early stopping, per seed, learning rate and
configuration: updates until the robust monitor (1,024 latents, eval mode) first reads below 2%, the final
forget fraction, whether it stays below for the next 100 updates, the collateral change (share of the
monitor's latents the original decoded as a retained digit that changed digit) at the first reading below 2% and
after the last update, and FID (classifier features, ``--fid-samples`` samples) against all digits and against the
retained digits after the last update. The trained face VAE (``--model celeba64-vae``) is not measured yet.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from step_cost import _tensor_peak_cpu

from genunlearn.checkpoints import atomic_write_json
from genunlearn.experiments.bench import first_below, held_below
from genunlearn.loop import attention_kernels, make_optimizer
from genunlearn.lora import AdapterConfig, adapt
from genunlearn.methods import MethodParams, StepContext, get_method
from genunlearn.models import load_model
from genunlearn.models.celeba_vae import CelebAVAE
from genunlearn.objectives import LatentReplacement, VAEObjective
from genunlearn.provenance import record_start, run_record

OUT = Path(__file__).parent / "results" / "lora.json"
HOLD = 100  # updates after the first reading below 2% that must stay below ("held")


def config_names(ranks: list[int]) -> list[str]:
    return ["full"] + [f"lora-r{r}" for r in ranks]


def adapter_config(name: str, alpha: float | None = None) -> AdapterConfig | None:
    if name == "full":
        return None
    return AdapterConfig(kind="lora", rank=int(name.removeprefix("lora-r")), alpha=alpha, target_modules=("all",))


def cost_setup(model_name: str, batch: int):
    """``(model, retain_fn, forget_fn, xr, xf, rep)`` of the cost measurement (weights do not matter for cost).

    ``retain_fn(net, xr)`` is the retain loss of a (wrapped) copy ``net``; ``rep`` is ``None`` where it does not apply.
    """
    if model_name == "mnist-dit":
        from step_cost import setup_dit

        model, retain_fn, forget_fn, xr, xf, _, _ = setup_dit(torch.device("cpu"), batch)
        return model, retain_fn, forget_fn, xr, xf, None
    g = torch.Generator().manual_seed(0)
    if model_name == "mnist-vae":
        model: nn.Module = load_model("mnist-vae")
        objective = VAEObjective("bernoulli", "sum")
        xr = torch.rand(batch, 784, generator=g).round()
        xf = torch.rand(batch, 784, generator=g).round()
        likelihood, latent = "bernoulli", 2
    else:
        torch.manual_seed(0)
        model = CelebAVAE()  # the paper's face VAE architecture, untrained
        objective = VAEObjective("mse", "sum")
        xr = torch.rand(batch, 3, 64, 64, generator=g)
        xf = torch.rand(batch, 3, 64, 64, generator=g)
        likelihood, latent = "mse", model.latent_dim
    from genunlearn.objectives.vae import reconstruction_loss

    rep = LatentReplacement(
        mu=torch.randn(batch, latent, generator=g),
        std=torch.full((batch, latent), 0.1),
        targets=xr,
        neighbours=torch.randint(0, batch, (batch, 1), generator=g),
        decode_loss=lambda m, z, x: reconstruction_loss(m, z, x, likelihood),
        samples=batch,
    )
    return model.train(), objective, objective, xr, xf, rep


def make_step(model: nn.Module, retain_fn, forget_fn, xr, xf, rep, config_name: str, method_name: str):
    """A step function of the engine (direction + Adam update) on a LoRA-wrapped or plain copy of ``model``."""
    adapter = adapt(copy.deepcopy(model), adapter_config(config_name))
    net = adapter.model.train()
    params = adapter.trainable_parameters()
    opt = make_optimizer("adam", params, 1e-3)
    method = get_method(method_name)
    hp = MethodParams(beta_o=1e3, beta_r=10.0)
    snapshot = [p.detach().clone() for p in params]
    counter = {"k": 0}

    def step() -> list[torch.Tensor]:
        ctx = StepContext(
            params=params,
            retain_loss=lambda: retain_fn(net, xr),
            forget_loss=lambda: forget_fn(net, xf),
            replace_loss=(lambda: rep(net)) if method.uses_replacement else None,
            step=counter["k"],
            hp=hp,
        )
        counter["k"] += 1
        with attention_kernels(method.needs_double_backward(ctx)):
            out = method.compute(ctx)
        for p, d in zip(params, out.direction, strict=True):
            p.grad = d.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.direction

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(params, snapshot, strict=True):
                p.copy_(s)

    return step, restore, sum(p.numel() for p in params), getattr(adapter, "targets", None)


def time_configs(steps: dict[str, Any], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            step, restore = steps[n]
            t0 = time.perf_counter()
            step()
            dt = time.perf_counter() - t0
            restore()
            if r >= warmup:
                times[n].append(dt)
    return times


def memory_child(model_name: str, config_name: str, methods: list[str], batch: int) -> None:
    """In a fresh process: peak live-tensor bytes of one step of each method (after a warm-up step)."""
    model, retain_fn, forget_fn, xr, xf, rep = cost_setup(model_name, batch)
    out = {}
    for m in applicable(methods, rep):
        step, restore, _, _ = make_step(model, retain_fn, forget_fn, xr, xf, rep, config_name, m)
        step()  # warm-up: the optimizer state exists from here on, as in a run
        out[m] = _tensor_peak_cpu(step)
        restore()
    print(json.dumps(out))


def applicable(methods: list[str], rep) -> list[str]:
    """The methods that apply to a model (``rep`` needs its replacement term)."""
    return [m for m in methods if rep is not None or not get_method(m).uses_replacement]


def model_batch(args, model_name: str) -> int:
    return {"mnist-vae": args.batch, "mnist-dit": args.dit_batch}.get(model_name, args.celeba_batch)


def part_cost(args, report: dict[str, Any], save) -> None:
    names = config_names(args.ranks)
    for model_name in args.models.split(","):
        batch = model_batch(args, model_name)
        model, retain_fn, forget_fn, xr, xf, rep = cost_setup(model_name, batch)
        methods = applicable(args.methods.split(","), rep)
        entry: dict[str, Any] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch": batch,
            "configs": {},
        }
        steps: dict[str, Any] = {}
        for c in names:
            for m in methods:
                step, restore, trainable, targets = make_step(model, retain_fn, forget_fn, xr, xf, rep, c, m)
                steps[f"{c}|{m}"] = (step, restore)
                entry["configs"].setdefault(c, {"trainable_parameters": trainable, "targets": targets})
        print(f"{model_name}: timing {len(steps)} configuration x method cells, {args.repeats} rounds", flush=True)
        times = time_configs(steps, args.repeats)
        for key, ts in times.items():
            c, m = key.split("|")
            cfg = entry["configs"][c]
            cfg.setdefault("median_s", {})[m] = statistics.median(ts)
            q = statistics.quantiles(ts, n=4)
            cfg.setdefault("iqr_s", {})[m] = [q[0], q[2]]
        del steps
        if not args.no_memory:
            for c in names:
                res = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--memory-child",
                        model_name,
                        c,
                        "--methods",
                        args.methods,
                        "--threads",
                        str(args.threads),
                        "--batch",
                        str(batch),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                entry["configs"][c]["peak_tensor_bytes"] = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"  memory {c}: {entry['configs'][c]['peak_tensor_bytes']}", flush=True)
        full = entry["configs"]["full"]
        for cfg in entry["configs"].values():
            cfg["time_vs_full"] = {m: cfg["median_s"][m] / full["median_s"][m] for m in methods}
            if "peak_tensor_bytes" in cfg:
                cfg["memory_vs_full"] = {m: cfg["peak_tensor_bytes"][m] / full["peak_tensor_bytes"][m] for m in methods}
        costs = report.setdefault("cost", {})
        for earlier in costs.values():  # rows of an earlier run keep that run's provenance
            if "provenance" not in earlier and "cost_provenance" in report:
                earlier["provenance"] = report["cost_provenance"]
        entry["provenance"] = run_record(vars(args))
        costs[model_name] = entry
        report["cost_provenance"] = entry["provenance"]  # the latest cost run (older readers)
        save()


def part_unlearn(args, report: dict[str, Any], save) -> None:
    from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
    from genunlearn.experiments.session import UnlearnSession
    from genunlearn.loop import UnlearnConfig
    from genunlearn.objectives import ObjectiveConfig

    session = UnlearnSession(ModelConfig(), DataConfig(forget=(1,)), MonitorConfig(samples=1024), device="cpu")
    section = report.setdefault("unlearn", {"model": "mnist-vae (bundled), forget digit 1", "rows": []})
    section.update(
        method="rep",
        steps=args.steps,
        fid_samples=args.fid_samples,
        monitor="1,024 latents per seed, eval mode",
        threshold=0.02,
    )
    original = section.setdefault("original", {})
    for seed in range(args.seeds):
        if str(seed) not in original:
            original[str(seed)] = session.fid(session.fresh_model(), args.fid_samples, seed)
            save()
    done = {(r["config"], r["lr"], r["seed"]) for r in section["rows"]}
    for seed in range(args.seeds):
        for lr in args.lrs:
            for c in config_names(args.ranks):
                if (c, lr, seed) in done:
                    continue
                cfg = UnlearnConfig(method="rep", steps=args.steps, lr=lr, seed=seed, early_stop=False)
                t0 = time.perf_counter()
                monitor = session.monitor(seed)
                monitor.set_reference(session.fresh_model())  # every reading also measures the collateral change
                model, result = session.run(
                    cfg, ObjectiveConfig(), monitor=monitor, progress=False, adapter=adapter_config(c)
                )
                fid = session.fid(model, args.fid_samples, seed)
                ff = [r.get("forget_fraction", float("nan")) for r in result.log]
                first = first_below(ff, 0.02)
                final = monitor.measure(model)
                row = {
                    "config": c,
                    "lr": lr,
                    "seed": seed,
                    "trainable_parameters": result.trainable_parameters,
                    "updates_to_unlearn": result.updates_to_unlearn,
                    "forget_fraction_initial": result.forget_fraction_initial,
                    "forget_fraction_final": result.forget_fraction_final,
                    "time_per_step_s": result.time_per_step_s,
                    **fid,
                    "fid_retain_change": fid["fid_retain"] - original[str(seed)]["fid_retain"],
                    "held": held_below(ff, 0.02, HOLD),
                    "collateral_at_first": None if first is None else result.log[first].get("collateral"),
                    "collateral_final": final.collateral,
                    "retained_tv_final": final.retained_tv,
                    "wall_s": time.perf_counter() - t0,
                }
                section["rows"].append(row)
                section["provenance"] = run_record(vars(args))
                print(json.dumps(row), flush=True)
                save()
    section["summary"] = summarise(section["rows"], config_names(args.ranks), args.lrs)
    save()


def summarise(rows: list[dict[str, Any]], names: list[str], lrs: list[float]) -> list[dict[str, Any]]:
    """Per configuration and learning rate: seeds, updates to unlearn per seed and median, FID changes."""
    out = []
    for lr in lrs:
        for c in names:
            rs = sorted((r for r in rows if r["config"] == c and r["lr"] == lr), key=lambda r: r["seed"])
            if not rs:
                continue
            ups = [r["updates_to_unlearn"] for r in rs]
            coll = [r["collateral_at_first"] for r in rs if r.get("collateral_at_first") is not None]
            reached = sorted(u for u in ups if u is not None)
            median = statistics.median([u if u is not None else float("inf") for u in ups])
            out.append(
                {
                    "config": c,
                    "lr": lr,
                    "seeds": len(rs),
                    "trainable_parameters": rs[0]["trainable_parameters"],
                    "updates_to_unlearn": ups,
                    "reached": len(reached),
                    "median_updates": None if median == float("inf") else median,
                    "forget_fraction_final": [r["forget_fraction_final"] for r in rs],
                    "median_fid_retain_change": statistics.median(r["fid_retain_change"] for r in rs),
                    "median_fid_retain": statistics.median(r["fid_retain"] for r in rs),
                    "median_time_per_step_s": statistics.median(r["time_per_step_s"] for r in rs),
                    "held": sum(bool(r.get("held")) for r in rs),
                    "median_collateral_at_first": statistics.median(coll) if coll else None,
                    "median_collateral_final": statistics.median(
                        r["collateral_final"] for r in rs if r.get("collateral_final") is not None
                    )
                    if any(r.get("collateral_final") is not None for r in rs)
                    else None,
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["cost", "unlearn", "all"], default="all")
    ap.add_argument("--models", default="mnist-vae,celeba-size-vae")
    ap.add_argument("--ranks", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8, 16])
    ap.add_argument("--methods", default="s,uno,rep")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--celeba-batch", type=int, default=32)
    ap.add_argument("--dit-batch", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=530)
    ap.add_argument("--lrs", type=lambda s: [float(v) for v in s.split(",")], default=[1e-3, 1e-2])
    ap.add_argument("--fid-samples", type=int, default=5000)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--memory-child", nargs=2, metavar=("MODEL", "CONFIG"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.methods.split(","), args.batch)
        return
    record_start()
    out = Path(args.out)
    report: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}

    def save() -> None:
        report["provenance"] = run_record(vars(args))
        atomic_write_json(out, report)

    if args.part in ("cost", "all"):
        part_cost(args, report, save)
    if args.part in ("unlearn", "all"):
        part_unlearn(args, report, save)
    print(f"written {out}")


if __name__ == "__main__":
    main()
