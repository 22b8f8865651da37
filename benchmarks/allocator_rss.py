"""Is the explicit UNO's extra resident memory the C allocator? Peak RSS growth with and without glibc tuning.

Runs ``step_cost.py``'s memory measurement (one step in a fresh process per method: growth of the resident
set, and the live-tensor peak from the profiler) for S, UNO and their naive versions, once with the default
environment and once with ``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`` (large blocks mapped
and returned at once, no trimming threshold).

Usage: python benchmarks/allocator_rss.py [--out benchmarks/results/allocator_rss.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import step_cost

from genunlearn.checkpoints import atomic_write_text
from genunlearn.experiments.records import dumps_compact
from genunlearn.provenance import run_record

SETTINGS = {"default": {}, "malloc tuned": {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="s,uno,naive-s,naive-uno")
    ap.add_argument("--model", default="mnist-vae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "allocator_rss.json"))
    args = ap.parse_args()
    data = {"model": args.model, "batch": args.batch, "threads": args.threads, "settings": {}}
    provenance = run_record(args)  # before the measurement: the code it runs
    saved = dict(os.environ)
    for name, env in SETTINGS.items():
        os.environ.clear()
        os.environ.update({k: v for k, v in saved.items() if k not in SETTINGS["malloc tuned"]} | env)
        try:
            mem = step_cost.measure_memory(args.model, args.methods.split(","), "cpu", args.batch, args.threads)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        data["settings"][name] = {"env": env, **mem}
        for m in args.methods.split(","):
            rss, tensor = mem["rss"][m] / 2**20, mem["tensor"][m] / 2**20
            print(f"{name:13s} {m:10s} rss {rss:7.1f} MiB  tensors {tensor:7.1f} MiB")
    data["provenance"] = provenance
    atomic_write_text(args.out, dumps_compact(data))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
