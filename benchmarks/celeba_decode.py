"""CelebA 64x64 decode throughput on one core: can a training or unlearning step wait for data?

    python benchmarks/celeba_decode.py [--celeba-dir DIR] [--n 4096]

Measures, with ``torch.set_num_threads(1)``: (1) ``dataset[i]`` (lazy JPEG decode from the zip + float
conversion) over ``n`` images in order, (2) the same in random order, (3) a ``DataLoader`` with one worker
process, batch 128, (4) ``load_all`` into a uint8 tensor (what ``genunlearn train`` does), and (5) the median
time of an S step of the paper-size CelebA VAE (batch 128 of retained + 128 of forget images, ``--step-threads``
threads) through ``genunlearn.loop.unlearn``: the loader keeps up when it delivers the step's 256 images faster
than the step takes. Prints JSON with images per second and the load average (other jobs on the machine slow
every number) and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader

from genunlearn.checkpoints import atomic_write_json
from genunlearn.data.celeba import CelebA64
from genunlearn.provenance import run_record
from genunlearn.runinfo import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--celeba-dir", default=None)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--step-threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = CelebA64(args.celeba_dir, split="all", framing="all")
    n = min(args.n, len(ds))
    out: dict = {"images": n, "load_average_before": os.getloadavg(), "machine": machine()}

    t = time.perf_counter()
    for i in range(n):
        ds[i]
    out["getitem_sequential_per_s"] = n / (time.perf_counter() - t)

    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist()
    t = time.perf_counter()
    for i in order:
        ds[i]
    out["getitem_random_per_s"] = n / (time.perf_counter() - t)

    loader = DataLoader(torch.utils.data.Subset(ds, order), batch_size=128, num_workers=1)
    t = time.perf_counter()
    seen = sum(b[0].shape[0] for b in loader)
    out["dataloader_1_worker_per_s"] = seen / (time.perf_counter() - t)

    t = time.perf_counter()
    ds.load_all(order)
    out["load_all_uint8_per_s"] = n / (time.perf_counter() - t)
    out["seconds_per_batch_of_128"] = 128 / out["getitem_random_per_s"]
    out["s_step_celeba_vae_s"] = s_step_seconds(ds, order, args.step_threads, args.steps)
    out["step_threads"] = args.step_threads
    out["images_per_s_step_needs"] = 256 / out["s_step_celeba_vae_s"]
    out["loader_1_worker_over_step_need"] = out["dataloader_1_worker_per_s"] / out["images_per_s_step_needs"]
    out["load_average_after"] = os.getloadavg()
    out["provenance"] = run_record(vars(args))
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=2))
    if args.out:
        atomic_write_json(args.out, out)


def s_step_seconds(ds: CelebA64, order: list[int], threads: int, steps: int) -> float:
    """Median engine-timed S step of the CelebA VAE on real faces (the first images of ``order``)."""
    from genunlearn.loop import UnlearnConfig, unlearn
    from genunlearn.models.celeba_vae import CelebAVAE
    from genunlearn.objectives import StandardTask
    from genunlearn.objectives.vae import VAEObjective

    torch.set_num_threads(threads)
    x = ds.load_all(order[:512]).float().div_(255.0)
    torch.manual_seed(0)
    cfg = UnlearnConfig(method="s", steps=steps, stop_at=None, seed=0, batch_size=128)
    res = unlearn(CelebAVAE(), StandardTask(VAEObjective("mse", "sum")), x[:256], x[256:], cfg, progress=False)
    torch.set_num_threads(1)
    return statistics.median(r["step_time_s"] for r in res.log[1:])


if __name__ == "__main__":
    main()
