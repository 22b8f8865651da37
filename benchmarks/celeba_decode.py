"""CelebA 64x64 decode throughput on one core: can a training or unlearning step wait for data?

    python benchmarks/celeba_decode.py [--celeba-dir DIR] [--n 4096]

Measures, with ``torch.set_num_threads(1)``: (1) ``dataset[i]`` (lazy JPEG decode from the zip + float
conversion) over ``n`` images in order, (2) the same in random order, (3) a ``DataLoader`` with one worker
process, batch 128, (4) ``load_all`` into a uint8 tensor (what ``genunlearn train`` does). Prints JSON with
images per second and the load average (other jobs on the machine slow every number).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch.utils.data import DataLoader

from genunlearn.data.celeba import CelebA64
from genunlearn.runinfo import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--celeba-dir", default=None)
    ap.add_argument("--n", type=int, default=4096)
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
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
