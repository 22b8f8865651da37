"""``genunlearn demo``: forget digit 1 from the bundled MNIST VAE and show what happened.

Runs genunlearn's classifier-free latent replacement (``rep``, the fastest classifier-free method of our
MNIST benchmark), and the paper's UNO and gradient surgery S for comparison, with the robust monitor
(1,024 latents fixed by the seed, eval mode), and writes a markdown report with the before/after grid and
class histograms.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from genunlearn.checkpoints import atomic_write_json, atomic_write_text, save_weights
from genunlearn.eval.figures import before_after_grid, class_histogram
from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec
from genunlearn.loop import UnlearnConfig
from genunlearn.provenance import run_record
from genunlearn.runinfo import versions

DEMO_METHODS = ("rep", "uno", "s")


def run_demo(
    out: str | Path = "genunlearn-demo",
    *,
    forget: int = 1,
    seed: int = 0,
    steps: int = 530,
    fid_samples: int = 5000,
    methods: tuple[str, ...] = DEMO_METHODS,
    progress: bool = True,
) -> list[dict]:
    """Run the demo; returns one summary dict per method and writes ``report.md`` into ``out``."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup = MnistSetup(MnistUnlearnSpec(forget=(forget,), monitor_samples=1024, monitor_mode="eval", device="cpu"))
    original = setup.fresh_model()
    monitor = setup.monitor(seed)
    monitor.set_reference(original)  # measures the collateral change of every unlearned model
    before = monitor.measure(original)
    fid_before = setup.fid(original, fid_samples, seed)
    grid_z = torch.randn(100, 2, generator=torch.Generator().manual_seed(seed))
    rows = []
    for name in methods:
        config = UnlearnConfig(method=name, steps=steps, seed=seed)
        model, result = setup.run(config, log_path=out / f"{name}-log.csv", progress=progress)
        after = monitor.measure(model)
        fid_after = setup.fid(model, fid_samples, seed)
        with torch.no_grad():
            before_after_grid(
                original.decode(grid_z),
                model.decode(grid_z),
                out / f"{name}-grid.png",
                title=f"{name}: forget digit {forget} (identical latents)",
            )
        class_histogram(
            before.class_counts,
            after.class_counts,
            out / f"{name}-histogram.png",
            forget=[forget],
            title=f"{name}: classes of 1,024 generated samples",
        )
        save_weights(model, out / f"{name}-model.safetensors", metadata={"unlearn_config": asdict(config)})
        rows.append(
            {
                "method": name,
                **result.summary(),
                "fid_original": fid_before["fid"],
                "fid_final": fid_after["fid"],
                "fid_retain_original": fid_before["fid_retain"],
                "fid_retain_final": fid_after["fid_retain"],
                "collateral": after.collateral,
                "retained_tv": after.retained_tv,
                "config": asdict(config),
            }
        )
    atomic_write_json(
        out / "summary.json",
        {
            "forget": forget,
            "seed": seed,
            "fid_samples": fid_samples,
            "runs": rows,
            "versions": versions(),
            "wall_time_s": time.perf_counter() - t0,
            "provenance": run_record({"forget": forget, "seed": seed, "fid_samples": fid_samples}),
        },
    )
    atomic_write_text(out / "report.md", _report(rows, forget, fid_samples))
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of the demo's runs."""

    def f(v, fmt):
        return "never" if v is None else format(v, fmt)

    lines = [
        "| method | updates to unlearn | time to unlearn (s) | time/step (ms) | forget fraction before -> after "
        "| FID (all digits) before -> after | FID (retain digits) before -> after "
        "| collateral: retained-digit samples that changed digit | retained digits' TV |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tps = None if r["time_per_step_s"] is None else 1000 * r["time_per_step_s"]
        lines.append(
            f"| {r['method']} | {f(r['updates_to_unlearn'], 'd')} | {f(r['time_to_unlearn_s'], '.2f')} | "
            f"{f(tps, '.1f')} | {r['forget_fraction_initial']:.3f} -> {r['forget_fraction_final']:.3f} | "
            f"{r['fid_original']:.2f} -> {r['fid_final']:.2f} | {r['fid_retain_original']:.2f} -> "
            f"{r['fid_retain_final']:.2f} | {100 * r['collateral']:.1f}% | {100 * r['retained_tv']:.1f}% |"
        )
    return "\n".join(lines)


def _report(rows: list[dict], forget: int, fid_samples: int) -> str:
    parts = [
        f"# genunlearn demo: forget digit {forget} from the bundled MNIST VAE",
        "",
        "Forget fraction: share of 1,024 samples (latents fixed by the seed, model in eval mode) that the "
        f"bundled MNIST classifier assigns to digit {forget}; 'unlearned' = below 2%. Time counts only loss, "
        f"gradient and update computation. FID: classifier features, {fid_samples} generated samples, against "
        "all real training digits and against the retained digits only. Each run stops at the first reading "
        "below 2%; on our 10-seed benchmark `rep` stays below for the next 100 updates in 8 of 10 seeds "
        "(results/mnist/bundled/table.md in the repository), and UNO and S do not reach 2% on this model. "
        "Collateral: among the same latents, the share of those the original decoded to a retained digit that "
        "now decode to another digit (ideal 0; FID does not see it); retained digits' TV: total-variation "
        "distance of the retained digits' proportions from the original's.",
        "",
        format_table(rows),
        "",
    ]
    for r in rows:
        parts += [
            f"## {r['method']}",
            "",
            f"![grid]({r['method']}-grid.png)",
            "",
            f"![histogram]({r['method']}-histogram.png)",
            "",
        ]
    return "\n".join(parts)
