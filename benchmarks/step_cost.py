"""Cost of one unlearning step for every method, and the straightforward baselines, in one process.

Usage:  python benchmarks/step_cost.py [--repeats 30] [--threads 2] [--device cpu] [--no-memory]

Times are medians over interleaved repetitions (every method once per round, in rotating order), so
slow drifts of the machine affect all methods alike. Ratios are computed from medians measured in this
same run. Peak memory of a step is measured in a fresh subprocess per method, two ways: live tensors
(CPU: the profiler's memory timeline; CUDA: torch.cuda.max_memory_allocated) and, on CPU, the growth of
the resident set (what the process costs, allocator caching included). Results go to
benchmarks/results/step_cost.json (or --out), with their provenance (command line, options, git commit,
versions, machine, date: ``genunlearn.provenance``); benchmarks/NOTES.md's tables are generated from it by
``genunlearn report``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from genunlearn.eval.memory import peak_live_tensor_bytes
from genunlearn.loop import attention_kernels
from genunlearn.methods import METHODS, MethodParams, StepContext, get_method
from genunlearn.models import load_model, vae_loss
from genunlearn.objectives import HatTerm, LatentReplacement
from genunlearn.provenance import run_record
from genunlearn.runinfo import versions


class ConvVAE(nn.Module):
    """A larger model for the benchmark: a convolutional VAE on 28x28 images (about 3.4M parameters)."""

    def __init__(self, latent: int = 16) -> None:
        super().__init__()
        self.latent_dim = latent
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 512),
            nn.ReLU(),
        )
        self.mu, self.logvar = nn.Linear(512, latent), nn.Linear(512, latent)
        self.dec = nn.Sequential(
            nn.Linear(latent, 512),
            nn.ReLU(),
            nn.Linear(512, 64 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z)).reshape(z.shape[0], -1)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        h = self.enc(x.reshape(-1, 1, 28, 28))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if noise is None else noise)
        return self.dec(z).reshape(x.shape[0], -1), mu, logvar


def conv_loss(model: ConvVAE, x: torch.Tensor) -> torch.Tensor:
    logits, mu, logvar = model(x)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce + 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum()


def setup_dit(device: torch.device, batch: int):
    """The MNIST DiT (bundled weights if present, else the same architecture untrained: the cost is the same) on
    the replacement task 1 -> 7 of the DiT bench; no hat or replacement term (not applicable)."""
    from genunlearn.errors import CheckpointError
    from genunlearn.models.mnist_dit import MnistDiT
    from genunlearn.objectives import DiffusionObjective, ReplacementTask

    try:
        model: nn.Module = load_model("mnist-dit", device=device)
    except CheckpointError:
        torch.manual_seed(0)
        model = MnistDiT().to(device)
    model.train()
    g = torch.Generator().manual_seed(0)
    obj = DiffusionObjective(model.make_scheduler(), prediction="epsilon", preprocess=lambda x: x * 2 - 1)
    task = ReplacementTask(obj.conditional, 1, 7)
    xr = (torch.rand(batch, 1, 28, 28, generator=g).to(device), torch.full((batch,), 7, device=device))
    xf = (torch.rand(batch, 1, 28, 28, generator=g).to(device), torch.full((batch,), 1, device=device))
    return model, (lambda m, x: task.retain_loss(m, x)), (lambda m, x: task.forget_loss(m, x)), xr, xf, None, None


def setup(model_name: str, device: torch.device, batch: int):
    """``(model, retain_loss_fn, forget_loss_fn, retain_batch, forget_batch, hat, rep)`` of a benchmark model."""
    if model_name == "mnist-dit":
        return setup_dit(device, batch)
    g = torch.Generator().manual_seed(0)
    if model_name == "mnist-vae":
        model: nn.Module = load_model("mnist-vae", device=device)
        loss_fn = lambda m, x: vae_loss(m, x, reduction="sum")  # noqa: E731
        latent = 2
    else:
        torch.manual_seed(0)
        model = ConvVAE().to(device)
        loss_fn = conv_loss
        latent = model.latent_dim
    model.train()
    xr = torch.rand(batch, 784, generator=g).round().to(device)
    xf = torch.rand(batch, 784, generator=g).round().to(device)
    clf = load_model("mnist-classifier", device=device)
    hat = HatTerm(
        generate=lambda m, n: m.decode(torch.randn(n, latent, device=device)),
        classifier=clf,
        forget_classes=[1],
        samples=batch,
    )
    # rep's replacement term at its real cost: forget-region latents decoded towards retained targets
    rep = LatentReplacement(
        mu=torch.randn(batch, latent, generator=g).to(device),
        std=torch.full((batch, latent), 0.1, device=device),
        targets=xr,
        neighbours=torch.randint(0, batch, (batch, 1), generator=g).to(device),
        decode_loss=lambda m, z, x: F.binary_cross_entropy(m.decode(z), x, reduction="none").sum(dim=1),
        samples=batch,
    )
    return model, loss_fn, loss_fn, xr, xf, hat, rep


# --- the straightforward implementations kept for comparison ---------------------------------------
def naive_s(params, l_r_fn, l_f_fn):
    """autograd.grad on each loss, flatten, project, unflatten into .grad."""
    g_r = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_r_fn(), params)])
    g_f = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_f_fn(), params)])
    d = g_r - (g_r @ g_f) / (g_f @ g_f) * g_f
    return [x.view_as(p) for x, p in zip(torch.split(d, [p.numel() for p in params]), params, strict=True)]


def naive_uno(params, l_r_fn, l_f_fn, beta_o=1e3):
    """Differentiate L_r + beta_o cos^2 through the flattened, concatenated gradients (double backward)."""
    l_r = l_r_fn()
    g_r = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_r, params, create_graph=True)])
    g_f = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_f_fn(), params, create_graph=True)])
    cos = (g_r @ g_f) / (g_r.norm() * g_f.norm())
    return list(torch.autograd.grad(l_r + beta_o * cos**2, params))


def make_steps(model, retain_fn, forget_fn, xr, xf, hat, rep):
    """One callable per applicable method of the paper and genunlearn (and the naive baselines) computing a step's
    direction; steps that differentiate through gradients run with the MATH attention kernel, as the loop selects
    it. Peer methods with their own terms are left out (their costs: ``bench``'s per-step times)."""
    params = [p for p in model.parameters() if p.requires_grad]
    l_r_fn = lambda: retain_fn(model, xr)  # noqa: E731
    l_f_fn = lambda: forget_fn(model, xf)  # noqa: E731
    steps = {}
    for name in METHODS:
        method = get_method(name)
        if (method.uses_classifier and hat is None) or (method.uses_replacement and rep is None) or method.terms:
            continue  # the peer methods' own terms (relabel, EWC, replay ...) are not set up here
        counter = {"k": 0}

        def step(method=method, counter=counter, name=name):
            ctx = StepContext(
                params=params,
                retain_loss=l_r_fn,
                forget_loss=l_f_fn,
                hat_loss=(lambda: hat(model)) if method.uses_classifier else None,
                replace_loss=(lambda: rep(model)) if method.uses_replacement else None,
                step=counter["k"],
                hp=MethodParams(beta_o=1e3, beta_h=1e3),
            )
            counter["k"] += 1
            with attention_kernels(method.needs_double_backward(ctx)):
                return method.compute(ctx).direction

        steps[name] = step
    steps["naive-s"] = lambda: naive_s(params, l_r_fn, l_f_fn)

    def naive_uno_step():
        with attention_kernels(True):
            return naive_uno(params, l_r_fn, l_f_fn)

    steps["naive-uno"] = naive_uno_step
    return steps, params


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(steps, params, device, repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        snapshot = [p.detach().clone() for p in params]
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            direction = steps[n]()
            for p, d in zip(params, direction, strict=True):  # the optimizer's share: a plain SGD update
                p.data.add_(d, alpha=-1e-9)
            sync(device)
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
            with torch.no_grad():
                for p, s in zip(params, snapshot, strict=True):
                    p.copy_(s)
    return times


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _tensor_peak_cpu(step) -> int:
    """Peak bytes of live tensors during one call of ``step`` (CPU), from the profiler's memory timeline."""
    return peak_live_tensor_bytes(step, "cpu")


def memory_child(model_name: str, method: str, device: str, batch: int) -> None:
    """Run in a subprocess: print the peak memory of ``method``'s step, two ways.

    ``tensor``: peak bytes of live tensors (CUDA: max_memory_allocated over three steps; CPU: the
    profiler's memory timeline of one step after a warm-up step). ``rss`` (CPU only): growth of the
    resident set over the set-up during three steps, sampled every 0.2 ms by a thread; this includes what
    the C allocator keeps after frees (per-thread arenas), so it is what the process costs, not what the
    tensors need.
    """
    import threading

    dev = torch.device(device)
    steps, _ = make_steps(*setup(model_name, dev, batch))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(3):
            steps[method]()
        out = {"tensor": torch.cuda.max_memory_allocated() - base}
    else:
        base, peak, stop = _rss(), [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.0002)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        for _ in range(3):
            steps[method]()
        stop.set()
        t.join()
        out = {"rss": max(0, peak[0] - base), "tensor": _tensor_peak_cpu(steps[method])}
    print(json.dumps(out))


def measure_memory(
    model_name: str, methods: list[str], device: str, batch: int, threads: int
) -> dict[str, dict[str, int]]:
    """``{kind: {method: bytes}}`` with kind ``tensor`` (and ``rss`` on CPU), each method in a fresh process."""
    out: dict[str, dict[str, int]] = {}
    for m in methods:
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                model_name,
                m,
                "--device",
                device,
                "--batch",
                str(batch),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        for kind, v in json.loads(res.stdout.strip().splitlines()[-1]).items():
            out.setdefault(kind, {})[m] = v
    return out


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="mnist-vae,conv-vae", help="any of mnist-vae, conv-vae, mnist-dit")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_cost.json"))
    ap.add_argument("--memory-child", nargs=2, metavar=("MODEL", "METHOD"))
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (medians and quartiles)")
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.device, args.batch)
        return
    device = torch.device(args.device)
    report = {
        "device": str(device),
        "threads": args.threads,
        "batch": args.batch,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "versions": versions(),
        "provenance": run_record(vars(args)),
        "models": {},
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    for model_name in args.models.split(","):
        steps, params = make_steps(*setup(model_name, device, args.batch))
        times = time_steps(steps, params, device, args.repeats)
        med = {n: statistics.median(v) for n, v in times.items()}
        ratios = {
            "uno/s": med["uno"] / med["s"],
            "naive-uno/naive-s": med["naive-uno"] / med["naive-s"],
            "s/naive-s": med["s"] / med["naive-s"],
            "uno/naive-uno": med["uno"] / med["naive-uno"],
            "uno-s/s": med["uno-s"] / med["s"],
            "uno-fd/s": med["uno-fd"] / med["s"],
            "uno-fd/uno": med["uno-fd"] / med["uno"],
        }
        entry = {
            "parameters": sum(p.numel() for p in params),
            "median_s": med,
            "iqr_s": {n: _quartiles(v) for n, v in times.items()},
            "ratios": ratios,
        }
        if not args.no_memory:
            mem = measure_memory(
                model_name, ["s", "uno", "uno-fd", "naive-s", "naive-uno"], args.device, args.batch, args.threads
            )
            entry["peak_memory_bytes"] = mem
            for kind, m in mem.items():
                entry["ratios"][f"memory ({kind}) uno/s"] = m["uno"] / max(m["s"], 1)
                entry["ratios"][f"memory ({kind}) naive-uno/naive-s"] = m["naive-uno"] / max(m["naive-s"], 1)
                entry["ratios"][f"memory ({kind}) uno-fd/s"] = m["uno-fd"] / max(m["s"], 1)
        report["models"][model_name] = entry
        print(
            f"\n{model_name}: {entry['parameters']:,} parameters, batch {args.batch}, {device}, "
            f"{args.threads} threads, median of {args.repeats} interleaved rounds"
        )
        print(f"{'method':12s} {'median ms':>10s}")
        for n, v in sorted(med.items(), key=lambda kv: kv[1]):
            print(f"{n:12s} {1e3 * v:10.2f}")
        for k, v in entry["ratios"].items():
            print(f"ratio {k:22s} {v:6.2f}")
        for kind, m in entry.get("peak_memory_bytes", {}).items():
            for k, v in m.items():
                print(f"peak memory ({kind:6s}) {k:10s} {v / 2**20:8.1f} MiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
