"""Quality of the class-conditional MNIST DiT: class accuracy and classifier-feature FID of guided samples.

For each sampler setting (sampler, steps, guidance scale[, samples per digit]) it generates images of every
digit from fixed noise (the same noise in every setting), classifies them with the bundled MNIST
classifier (accuracy per digit and overall: the share assigned to the requested digit) and computes FID on
the classifier's 200-d features (:class:`genunlearn.eval.fid.ClassifierFID`) against all 60,000 real
training images. Reference rows at the same sample counts give the scale: real test digits against the
training images (FID's small-sample floor) and samples of the bundled MNIST VAE.

Run ``python -m genunlearn.experiments.dit_eval --out results/mnist-dit/original``; it writes
``results.json`` (command line, git commit, machine, versions, every number), ``table.md`` and
``samples.png`` (one row per digit). Finished settings are kept in ``results.partial.json`` while it runs;
rerunning an interrupted command skips them, and the file is removed once ``results.json`` is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from genunlearn.checkpoints import atomic_write_json, atomic_write_text, read_metadata
from genunlearn.data import load_dataset
from genunlearn.errors import GenUnlearnError
from genunlearn.eval.fid import ClassifierFID
from genunlearn.models import count_parameters, load_model
from genunlearn.models.mnist_dit import MnistDiT, sample
from genunlearn.models.registry import bundled_weights
from genunlearn.runinfo import versions


@dataclass(frozen=True)
class Setting:
    """One sampler configuration; ``per_class``: samples per digit (``None``: the run's default)."""

    sampler: str
    steps: int
    guidance: float
    per_class: int | None = None

    @property
    def key(self) -> str:
        n = "" if self.per_class is None else f"-n{self.per_class}"
        return f"{self.sampler}-{self.steps}-g{self.guidance:g}{n}"

    @property
    def evaluations(self) -> int:
        """Network evaluations per image (classifier-free guidance doubles them unless the scale is 0 or 1)."""
        return self.steps * (1 if self.guidance in (0.0, 1.0) else 2)


DEFAULT_SETTINGS = "ddim:5:2,ddim:10:1,ddim:10:2,ddim:10:4,ddim:25:2,ddim:50:2,dpm++:10:2,ddim:10:2:300"


def parse_settings(text: str) -> list[Setting]:
    """``"ddim:25:2,dpm++:10:2:300"`` -> settings (sampler:steps:guidance[:samples per digit])."""
    out = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) not in (3, 4):
            raise ValueError(f"setting {part!r}: expected sampler:steps:guidance[:per_class]")
        per_class = int(fields[3]) if len(fields) == 4 else None
        out.append(Setting(fields[0], int(fields[1]), float(fields[2]), per_class))
    return out


def git_commit() -> dict[str, str | bool | None]:
    """The checkout's commit and whether it has uncommitted changes (``None`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=here,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def machine() -> dict[str, str | int]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def evaluate_dit(
    model: MnistDiT,
    settings: list[Setting],
    *,
    samples_per_class: int = 100,
    seed: int = 0,
    grid: Setting | None = None,
    grid_columns: int = 12,
    out: str | Path | None = None,
    progress: bool = True,
    reference_images: torch.Tensor | None = None,
    done: dict[str, dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Accuracy and FID for every setting (see the module docstring); writes ``samples.png`` into ``out``.

    Every setting uses the same noise: sample ``i`` of digit ``c`` starts from the same noise image in every
    setting (settings with more samples per digit extend the set). ``reference_images``: the real images of
    FID (default: the 60,000 MNIST training images). ``done``: rows already measured, by setting key (they
    are reused, for resuming); ``on_row`` is called with the rows so far after each setting.
    """
    device = next(model.parameters()).device
    clf = load_model("mnist-classifier", device=device)
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    k = model.num_classes
    fid = ClassifierFID(clf).to(device)
    real = train.flat_float() if reference_images is None else reference_images.reshape(-1, 784)
    fid.update_batches(real, real=True)
    counts = sorted({s.per_class or samples_per_class for s in settings})
    g = torch.Generator().manual_seed(seed)
    noise_all = torch.randn(k, counts[-1], model.in_channels, model.sample_size, model.sample_size, generator=g)

    def fid_of(images: torch.Tensor) -> float:
        fid.reset()
        fid.update_batches(images.reshape(images.shape[0], -1), real=False)
        return float(fid.compute())

    references: dict[str, dict] = {}
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    vae = load_model("mnist-vae", device=device)
    z_all = torch.randn(k * counts[-1], vae.latent_dim, generator=torch.Generator().manual_seed(seed))
    for per in counts:
        n = per * k
        with torch.no_grad():
            vae_images = vae.sample(z_all[:n].to(device)).cpu()
        references[f"n{n}"] = {
            "samples": n,
            "real_test_images_fid": fid_of(test.flat_float(perm[:n])),
            "mnist_vae_bundled_fid": fid_of(vae_images),
        }

    rows: list[dict] = []
    done = done or {}
    for s in settings:
        if s.key in done:
            rows.append(done[s.key])
            continue
        per = s.per_class or samples_per_class
        labels = torch.arange(k).repeat_interleave(per)
        noise = noise_all[:, :per].reshape(k * per, *noise_all.shape[2:])
        t0 = time.perf_counter()
        images = sample(
            model, labels, noise, steps=s.steps, guidance_scale=s.guidance, sampler=s.sampler, progress=progress
        )
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            pred = clf(images.to(device)).argmax(1).cpu()
        correct = pred == labels
        rows.append(
            {
                "setting": s.key,
                "sampler": s.sampler,
                "steps": s.steps,
                "guidance": s.guidance,
                "network_evaluations_per_image": s.evaluations,
                "accuracy": float(correct.float().mean()),
                "per_class": {int(c): float(correct[labels == c].float().mean()) for c in range(k)},
                "fid": fid_of(images),
                "samples": k * per,
                "seconds": seconds,
                "ms_per_image": 1000 * seconds / (k * per),
            }
        )
        if progress:
            r = rows[-1]
            click.echo(f"{s.key:18s} acc {r['accuracy']:.4f}  fid {r['fid']:.3f}  {seconds:.0f}s", err=True)
        if on_row is not None:
            on_row(rows)
    result = {
        "samples_per_class": samples_per_class,
        "noise_seed": seed,
        "fid_reference_images": int(real.shape[0]),
        "references": references,
        "settings": rows,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        grid = grid or settings[0]
        gl = torch.arange(k).repeat_interleave(grid_columns)
        gn = torch.randn(
            gl.shape[0],
            model.in_channels,
            model.sample_size,
            model.sample_size,
            generator=torch.Generator().manual_seed(seed + 1),
        )
        images = sample(model, gl, gn, steps=grid.steps, guidance_scale=grid.guidance, sampler=grid.sampler)
        _grid_png(images, k, out / "samples.png", f"MNIST DiT, {grid.key} (one row per digit)")
        result["grid"] = {"file": "samples.png", "setting": grid.key, "columns": grid_columns, "noise_seed": seed + 1}
    return result


def _grid_png(images: torch.Tensor, rows: int, path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    side = images.shape[-1]
    cols = images.shape[0] // rows
    pad, label_w, title_h = 2, 18, 16
    arr = (images.reshape(rows, cols, side, side).numpy() * 255).round().astype(np.uint8)
    canvas = Image.new("L", (label_w + cols * (side + pad) + pad, title_h + rows * (side + pad) + pad), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill=0)
    for r in range(rows):
        draw.text((4, title_h + r * (side + pad) + side // 2 - 5), str(r), fill=0)
        for c in range(cols):
            tile = Image.fromarray(255 - arr[r, c])  # dark digits on white, as in the other figures
            canvas.paste(tile, (label_w + pad + c * (side + pad), title_h + pad + r * (side + pad)))
    canvas = canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST)
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)


def markdown_table(result: dict) -> str:
    """The results as a markdown table (accuracy per class and overall, FID)."""
    lines = [
        "Accuracy: share of the samples the bundled MNIST classifier (98.14% on real test digits) assigns to "
        "the requested digit, overall and per digit (%). FID: classifier features (200-d) against "
        f"{result['fid_reference_images']:,} MNIST training images; it falls with the sample count, so compare "
        "rows with the same count and with the reference rows below. Every row starts from the same noise.",
        "",
        "| sampler | steps | guidance | NFE/image | samples | accuracy | "
        + " | ".join(str(c) for c in range(10))
        + " | FID | ms/image |",
        "|---|---|---|---|---|---|" + "---|" * 10 + "---|---|",
    ]
    for r in result["settings"]:
        per = " | ".join(f"{100 * r['per_class'][c]:.0f}" for c in sorted(r["per_class"], key=int))
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {r['network_evaluations_per_image']} | "
            f"{r['samples']} | {100 * r['accuracy']:.1f}% | {per} | {r['fid']:.2f} | {r['ms_per_image']:.1f} |"
        )
    lines += ["", "| reference | samples | FID |", "|---|---|---|"]
    for ref in result["references"].values():
        lines.append(f"| real test digits | {ref['samples']} | {ref['real_test_images_fid']:.2f} |")
        lines.append(f"| bundled MNIST VAE samples | {ref['samples']} | {ref['mnist_vae_bundled_fid']:.2f} |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="DiT weights (default: bundled).")
@click.option(
    "--settings", default=DEFAULT_SETTINGS, show_default=True, help="sampler:steps:guidance, comma-separated."
)
@click.option("--samples-per-class", type=int, default=100, show_default=True, help="Unless a setting says.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option("--grid", "grid_setting", default="ddim:25:2", show_default=True, help="Setting of samples.png.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Reuse settings already measured.")
def main(
    checkpoint: str | None,
    settings: str,
    samples_per_class: int,
    seed: int,
    grid_setting: str,
    threads: int | None,
    device: str,
    out: str,
    resume: bool,
) -> None:
    """Measure the DiT's sample quality; writes results.json, table.md and samples.png into --out."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        path = Path(checkpoint) if checkpoint else bundled_weights("mnist-dit")
        model = load_model("mnist-dit", path, device=device)
    except GenUnlearnError as exc:
        raise click.ClickException(str(exc)) from None
    t0 = time.perf_counter()
    meta = read_metadata(path)
    head = {
        "checkpoint": str(path),
        "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "noise_seed": seed,
        "samples_per_class": samples_per_class,
    }
    partial_path = Path(out) / "results.partial.json"
    done: dict[str, dict] = {}
    if resume and partial_path.is_file():
        partial = json.loads(partial_path.read_text())
        if {k: partial.get(k) for k in head} == head:
            done = {r["setting"]: r for r in partial["settings"]}

    def save_partial(rows: list[dict]) -> None:
        atomic_write_json(partial_path, {**head, "settings": rows})

    result = evaluate_dit(
        model,
        parse_settings(settings),
        samples_per_class=samples_per_class,
        seed=seed,
        grid=parse_settings(grid_setting)[0],
        out=out,
        done=done,
        on_row=save_partial,
    )
    record = {
        "command": "python -m genunlearn.experiments.dit_eval " + shlex.join(sys.argv[1:]),
        "git": git_commit(),
        "machine": machine(),
        "versions": versions(),
        **head,
        "parameters": count_parameters(model),
        "model_config": meta.get("build_options"),
        "train_config": meta.get("train_config"),
        "seconds": time.perf_counter() - t0,
        **result,
    }
    atomic_write_json(Path(out) / "results.json", record)
    atomic_write_text(Path(out) / "table.md", markdown_table(record))
    partial_path.unlink(missing_ok=True)  # only needed to resume an interrupted run
    click.echo(markdown_table(record))


if __name__ == "__main__":
    main()
