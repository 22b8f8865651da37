"""Does the general engine (issue 11) cost anything on the MNIST VAE? Interleaved before/after step times.

A revision of genunlearn (``--before``, default: the last commit before the issue-11 engine) is checked out into
a temporary git worktree; child processes alternate between that code and the working tree, each timing
``unlearn()`` on the MNIST VAE (bundled weights, digit 1, batch 128, Adam, no monitor) for S, UNO and ``rep``:

- ``step``: the median step time the engine itself reports (its timed region), and
- ``wall``: wall-clock per update of the whole ``unlearn()`` call (batches, modes, snapshot, logging included).

Usage: python benchmarks/engine_overhead.py [--before REV] [--rounds 6] [--steps 60] [--threads 2]
Writes benchmarks/results/engine_overhead.json (with the provenance of the run) and prints the ratios
after/before (medians over rounds). Run it on a quiet machine: the two versions share it in turns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "7739541"  # issue 10 done, before the issue-11 engine

CHILD = r"""
import json, statistics, sys, time
import os
# The editable install's .pth puts the checkout's src/ on sys.path too, and an old revision without
# genunlearn/__init__.py (a namespace package) would lose to it: keep only the src/ under test.
src = sys.argv[4]
sys.path[:] = [p for p in sys.path if p == src or not os.path.isdir(os.path.join(p or ".", "genunlearn"))]
import torch
torch.set_num_threads(int(sys.argv[1]))
import genunlearn.loop as loop
from genunlearn.data import ForgetSplit, load_dataset
from genunlearn.models import load_model
from genunlearn.objectives import LatentReplacement, StandardTask, vae_objective
steps = int(sys.argv[2])
train = load_dataset("mnist", "train")
split = ForgetSplit.by_class(train.labels, 1)
x = train.flat_float()
retain, forget = x[split.retain], x[split.forget]
rep = LatentReplacement.for_vae(load_model("mnist-vae"), retain, forget)
out = {"file": loop.__file__}
for method in sys.argv[3].split(","):
    cfg = loop.UnlearnConfig(method=method, steps=steps, stop_at=None, seed=0)
    warm = loop.UnlearnConfig(method=method, steps=5, stop_at=None, seed=1)
    kw = {"replacement": rep} if method == "rep" else {}
    task = StandardTask(vae_objective("sum"))
    loop.unlearn(load_model("mnist-vae"), task, retain, forget, warm, progress=False, **kw)
    model = load_model("mnist-vae")
    t0 = time.perf_counter()
    res = loop.unlearn(model, StandardTask(vae_objective("sum")), retain, forget, cfg, progress=False, **kw)
    wall = (time.perf_counter() - t0) / steps
    out[method] = {"step": statistics.median(r["step_time_s"] for r in res.log[1:]), "wall": wall}
print(json.dumps(out))
"""


def run_child(src: Path, threads: int, steps: int, methods: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(steps), methods, str(src)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(res.stdout.strip().splitlines()[-1])
    if not data["file"].startswith(str(src)):
        raise SystemExit(f"child imported {data['file']}, not the code under {src}")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of the 'before' code")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="s,uno,rep")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_overhead.json"))
    args = ap.parse_args()
    from genunlearn.checkpoints import atomic_write_json
    from genunlearn.provenance import run_record

    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), args.before], check=True)
        try:
            versions = {"before": wt / "src", "after": ROOT / "src"}
            rounds: list[dict] = []
            for r in range(args.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                row = {v: run_child(versions[v], args.threads, args.steps, args.methods) for v in order}
                rounds.append(row)
                print(json.dumps({"round": r, **{v: {m: row[v][m] for m in args.methods.split(",")} for v in row}}))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], check=False)
    summary = {}
    for m in args.methods.split(","):
        summary[m] = {}
        for kind in ("step", "wall"):
            before = statistics.median(rd["before"][m][kind] for rd in rounds)
            after = statistics.median(rd["after"][m][kind] for rd in rounds)
            ratios = [rd["after"][m][kind] / rd["before"][m][kind] for rd in rounds]
            summary[m][kind] = {
                "before_ms": 1e3 * before,
                "after_ms": 1e3 * after,
                "ratio_of_medians": after / before,
                "ratio_per_round_median": statistics.median(ratios),
                "ratio_per_round_range": [min(ratios), max(ratios)],
            }
            print(
                f"{m:4s} {kind:4s}: before {1e3 * before:7.2f} ms  after {1e3 * after:7.2f} ms  "
                f"after/before {after / before:.3f} (per round {min(ratios):.3f}-{max(ratios):.3f})"
            )
    out = {
        "what": "MNIST VAE step time before/after the general engine, interleaved child processes",
        "before_revision": args.before,
        "settings": vars(args),
        "summary": summary,
        "rounds": rounds,
    }
    out["provenance"] = run_record(vars(args))
    atomic_write_json(args.out, out)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
