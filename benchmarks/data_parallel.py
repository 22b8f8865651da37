"""Communication of data-parallel unlearning per update, measured: 2 gloo processes on CPU against one process.

Usage:  python benchmarks/data_parallel.py [--steps 20] [--batch 128] [--out benchmarks/results/data_parallel.json]

For each method (``s``, ``uno``, ``uno-s``, ``uno-fd``, ``rep``) the engine runs ``--steps`` updates of the
bundled MNIST VAE (632,788 parameters, BatchNorm in train mode, so each update also averages the BatchNorm
running statistics) on a batch of ``--batch`` retain and forget examples: once in one process, and once data
parallel in two gloo processes (each rank half of every batch), the two right after each other per method (rank 0
runs the single-process reference while rank 1 waits). From the per-update logs it records the
collectives the data-parallel layer issued (gradient-sized all-reduces, scalar all-reduces, others), the floats
they carried, the seconds spent in them (waiting for the other rank included) and the step times (median over
the updates after the first). One thread per process; on a shared 2-core machine the times are only
comparable as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

OUT = Path(__file__).parent / "results" / "data_parallel.json"
METHODS = ["s", "uno", "uno-s", "uno-fd", "rep"]


def run_method(method: str, steps: int, batch: int, data_parallel: bool) -> dict[str, Any]:
    from torch.nn import functional as F

    from genunlearn.loop import UnlearnConfig, unlearn
    from genunlearn.models import load_model
    from genunlearn.objectives import LatentReplacement, StandardTask, VAEObjective

    g = torch.Generator().manual_seed(0)
    retain = torch.rand(4 * batch, 784, generator=g).round()
    forget = torch.rand(4 * batch, 784, generator=g).round()
    model = load_model("mnist-vae")
    rep = LatentReplacement(
        mu=torch.randn(batch, 2, generator=g),
        std=torch.full((batch, 2), 0.1),
        targets=retain,
        neighbours=torch.randint(0, len(retain), (batch, 1), generator=g),
        decode_loss=lambda m, z, x: F.binary_cross_entropy_with_logits(m.decode_logits(z), x, reduction="none").sum(1),
        samples=batch,
    )
    cfg = UnlearnConfig(method=method, steps=steps, batch_size=batch, stop_at=None, diagnostics=False)
    result = unlearn(
        model,
        StandardTask(VAEObjective("bernoulli", "sum")),
        retain,
        forget,
        cfg,
        replacement=rep if method == "rep" else None,
        progress=False,
        data_parallel=data_parallel,
    )
    rows = result.log[2:]  # updates after the first (allocations, optimizer state)
    entry: dict[str, Any] = {"median_step_s": statistics.median(r["step_time_s"] for r in rows)}
    if "phase" in rows[0]:
        for ph in (0.0, 1.0):
            entry[f"median_step_s_phase{int(ph)}"] = statistics.median(
                r["step_time_s"] for r in rows if r["phase"] == ph
            )
    if data_parallel:
        for key in ("comm_grad_allreduces", "comm_scalar_allreduces", "comm_other", "comm_floats"):
            entry[key.removeprefix("comm_") + "_per_update"] = sorted({int(r[key]) for r in rows})
        entry["median_comm_s"] = statistics.median(r["comm_s"] for r in rows)
        entry["median_comm_share"] = statistics.median(r["comm_s"] / r["step_time_s"] for r in rows)
    return entry


def worker(rank: int, world: int, init: str, res: str, steps: int, batch: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        out: dict[str, Any] = {"single": {}, "parallel": {}}
        for method in METHODS:
            if rank == 0:  # the reference, right before the data-parallel run of the same method
                out["single"][method] = run_method(method, steps, batch, False)
            dist.barrier()
            out["parallel"][method] = run_method(method, steps, batch, True)
        if rank == 0:
            Path(res).write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    from genunlearn.checkpoints import atomic_write_json
    from genunlearn.provenance import record_start, run_record

    record_start()
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "res.json"
        mp.spawn(worker, args=(2, str(Path(tmp) / "init"), str(res), args.steps, args.batch), nprocs=2, join=True)
        both = json.loads(res.read_text())
    single, parallel = both["single"], both["parallel"]
    params = 632_788
    rows = []
    for m in METHODS:
        p, s = parallel[m], single[m]
        rows.append(
            {
                "method": m,
                "gradient_allreduces": p["grad_allreduces_per_update"],
                "scalar_allreduces": p["scalar_allreduces_per_update"],
                "other_collectives": p["other_per_update"],
                "floats_per_update": p["floats_per_update"],
                "gradient_floats": params,
                "median_step_s_single": s["median_step_s"],
                "median_step_s_parallel": p["median_step_s"],
                "median_comm_s": p["median_comm_s"],
                "median_comm_share": p["median_comm_share"],
                "parallel_over_single": p["median_step_s"] / s["median_step_s"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "setup": f"bundled MNIST VAE ({params:,} parameters, BatchNorm train mode), batch {args.batch} retain + "
        f"{args.batch} forget, {args.steps} updates, gloo on CPU, 2 processes x 1 thread vs 1 process x 1 thread",
        "rows": rows,
        "single": single,
        "parallel": parallel,
        "provenance": run_record(vars(args)),
    }
    atomic_write_json(args.out, report)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
