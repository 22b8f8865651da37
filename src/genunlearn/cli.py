"""The ``genunlearn`` command line (click).

Every user error is reported as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from genunlearn.errors import GenUnlearnError


def _parse_classes(value: str) -> tuple[int, ...]:
    try:
        classes = tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError:
        raise click.BadParameter(f"expected class labels like '1' or '1,7', got {value!r}") from None
    if not classes:
        raise click.BadParameter("no forget class given")
    return classes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genunlearn")
def cli() -> None:
    """genunlearn: make a trained generative model forget a class, feature or samples.

    \b
    Typical use:
      genunlearn demo                                  # the main job on the bundled MNIST VAE
      genunlearn unlearn --forget 1 --method uno --out runs/uno
      genunlearn methods                               # the registered algorithms
    """


@cli.command()
@click.option("--evaluate", is_flag=True, help="Also measure test ELBO / accuracy of bundled and authors' weights.")
def models(evaluate: bool) -> None:
    """List the registered models (and optionally evaluate their weights)."""
    from genunlearn.models.registry import MODELS

    for spec in MODELS.values():
        click.echo(f"{spec.name:20s} {spec.kind:10s} {spec.description}")
    if evaluate:
        from genunlearn.experiments.model_eval import evaluate_all

        click.echo("")
        click.echo(evaluate_all())


@cli.command()
def methods() -> None:
    """List the registered unlearning methods."""
    from genunlearn.methods import METHODS

    for name, cls in METHODS.items():
        flag = " [classifier]" if cls.uses_classifier else ""
        click.echo(f"{name:10s} {cls.summary}{flag}")


@cli.command()
@click.argument("model", type=click.Choice(["vae", "classifier"]))
@click.option("--dataset", default="mnist", show_default=True, help="IDX dataset name, or celeba64.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Directory with the IDX files.")
@click.option(
    "--epochs", type=int, default=None, help="Default: 200 (vae), 20 (classifier); celeba64: 25 (vae), 12 (classifier)."
)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default=None,
    help="Default: constant (vae), cosine (classifier); celeba64: cosine.",
)
@click.option("--bn/--no-bn", "use_bn", default=True, show_default=True, help="Classifier: apply bn1.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory (resumable); required for IDX datasets, celeba64: $GENUNLEARN_CACHE/celeba64-<model>.",
)
@click.option("--resume/--no-resume", default=True, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option(
    "--framing",
    type=click.Choice(["aligned", "detector-crop", "all"]),
    default=None,
    help="celeba64: training images (default: aligned for vae, all for classifier).",
)
@click.option("--celeba-dir", type=click.Path(file_okay=False), default=None, help="celeba64: images.zip + CSV.")
@click.option("--hflip/--no-hflip", default=None, help="celeba64: random horizontal flips [on].")
@click.option("--widths", default=None, help="celeba64: channel widths, e.g. 32,64,128,256,512 (vae).")
@click.option("--checkpoint-every", type=int, default=None, help="celeba64: checkpoint every N steps [50].")
def train(
    model: str,
    dataset: str,
    data_dir: str | None,
    epochs: int | None,
    batch_size: int,
    lr: float,
    lr_schedule: str | None,
    use_bn: bool,
    seed: int,
    device: str,
    out: str | None,
    resume: bool,
    threads: int | None,
    framing: str | None,
    celeba_dir: str | None,
    hflip: bool | None,
    widths: str | None,
    checkpoint_every: int | None,
) -> None:
    """Train an original model (the paper's MNIST VAE or classifier; CelebA 64x64 VAE or attribute classifier)."""
    from genunlearn.errors import ConfigError

    if dataset == "celeba64":
        if data_dir is not None:
            raise ConfigError("--data-dir is for IDX datasets; use --celeba-dir for celeba64")
        _train_celeba(
            model,
            epochs,
            batch_size,
            lr,
            lr_schedule,
            seed,
            device,
            out,
            resume,
            threads,
            framing,
            celeba_dir,
            hflip,
            widths,
            checkpoint_every,
        )
        return
    given = {"--framing": framing, "--celeba-dir": celeba_dir, "--hflip": hflip, "--widths": widths}
    given["--checkpoint-every"] = checkpoint_every
    for name, value in given.items():
        if value is not None:
            raise ConfigError(f"{name} applies to --dataset celeba64 only")
    if out is None:
        ctx = click.get_current_context()
        raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "out"))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from genunlearn.train import TrainConfig
    from genunlearn.train import train as run_train

    is_vae = model == "vae"
    config = TrainConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs or (200 if is_vae else 20),
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        use_bn=use_bn,
        lr_schedule=lr_schedule or ("constant" if is_vae else "cosine"),
        device=device,
    )
    record = run_train(config, out, resume=resume)
    click.echo(json.dumps(record["final"]))
    click.echo(f"weights: {Path(out) / 'model.safetensors'}")


def _train_celeba(
    model: str,
    epochs: int | None,
    batch_size: int,
    lr: float,
    lr_schedule: str | None,
    seed: int,
    device: str,
    out: str | None,
    resume: bool,
    threads: int | None,
    framing: str | None,
    celeba_dir: str | None,
    hflip: bool | None,
    widths: str | None,
    checkpoint_every: int | None,
) -> None:
    from genunlearn.train_celeba import KEY_ATTRIBUTES, CelebATrainConfig, default_out, train_celeba

    try:
        width_tuple = tuple(int(w) for w in widths.split(",")) if widths else None
    except ValueError:
        raise click.BadParameter(f"--widths expects integers like 32,64,128, got {widths!r}") from None
    config = CelebATrainConfig.defaults(
        model,
        framing=framing,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        seed=seed,
        hflip=hflip,
        widths=width_tuple,
        checkpoint_every=checkpoint_every,
        celeba_dir=celeba_dir,
        threads=threads,
        device=device,
    ).validate()
    out_dir = Path(out) if out is not None else default_out(model)
    record = train_celeba(config, out_dir, resume=resume)
    final = record["final"]
    if not record["complete"]:
        click.echo(f"stopped after {record['epochs_done']} of {config.epochs} epochs; rerun to resume")
    elif model == "vae":
        click.echo(json.dumps({"test": final["test"], "train": final["train"]}))
    else:
        acc = {a: round(final["test"][a]["accuracy"], 4) for a in KEY_ATTRIBUTES if a in final["test"]}
        click.echo(json.dumps({"test_mean_accuracy": round(final["test_mean_accuracy"], 4), "test_accuracy": acc}))
    click.echo(f"weights: {out_dir / 'model.safetensors'}")


@cli.command()
@click.option("--model", "model_name", default="mnist-vae", show_default=True, help="Registered model name.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Weights (default: bundled).")
@click.option("--forget", "forget", default="1", show_default=True, help="Class(es) to forget, e.g. 1 or 1,7.")
@click.option("--method", default="uno", show_default=True, help="See `genunlearn methods`.")
@click.option("--steps", type=int, default=530, show_default=True, help="Maximum number of updates.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--beta-o", type=float, default=1e3, show_default=True, help="Orthogonality weight.")
@click.option("--beta-h", type=float, default=1e3, show_default=True, help="Classifier-term weight (hat methods).")
@click.option("--alpha", type=float, default=1e-8, show_default=True, help="Threshold of the hat KL (eq. 9).")
@click.option(
    "--hat-kind",
    type=click.Choice(["bernoulli", "categorical"]),
    default="bernoulli",
    show_default=True,
    help="Paper eq. 9 or the reference code's categorical KL.",
)
@click.option("--orthogonality", type=click.Choice(["cos", "dot"]), default="cos", show_default=True)
@click.option("--ascent-weight", type=float, default=1.0, show_default=True, help="s-asc: relative ascent norm.")
@click.option("--forget-cap", type=float, default=1.5, show_default=True, help="s-asc: stop ascent at this x L_f(0).")
@click.option("--beta-r", type=float, default=10.0, show_default=True, help="rep: weight of the replacement term.")
@click.option(
    "--replace-neighbors", type=int, default=1, show_default=True, help="rep: retained targets per forget example."
)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "sgd"]),
    default="adam",
    show_default=True,
    help="adam: reference code; sgd: the paper's update rules.",
)
@click.option(
    "--loss-reduction",
    type=click.Choice(["sum", "mean"]),
    default="sum",
    show_default=True,
    help="sum: reference code; mean: the paper's equations.",
)
@click.option(
    "--bn-mode",
    type=click.Choice(["train", "eval"]),
    default="train",
    show_default=True,
    help="BatchNorm during unlearning (train: reference code).",
)
@click.option("--stop-at", type=float, default=0.02, show_default=True, help="Forget-fraction threshold.")
@click.option("--early-stop/--no-early-stop", default=True, show_default=True)
@click.option("--monitor-samples", type=int, default=1024, show_default=True, help="Fixed latents of the monitor.")
@click.option("--monitor-mode", type=click.Choice(["train", "eval"]), default="eval", show_default=True)
@click.option("--classifier-checkpoint", type=click.Path(dir_okay=False), default=None)
@click.option("--fid-samples", type=int, default=0, show_default=True, help="Samples for FID (0: skip).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Autocast of losses and gradients (weights stay float32).",
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def unlearn(
    model_name: str,
    checkpoint: str | None,
    forget: str,
    method: str,
    steps: int,
    lr: float,
    beta_o: float,
    beta_h: float,
    alpha: float,
    hat_kind: str,
    orthogonality: str,
    ascent_weight: float,
    forget_cap: float,
    beta_r: float,
    replace_neighbors: int,
    batch_size: int,
    optimizer: str,
    loss_reduction: str,
    bn_mode: str,
    stop_at: float,
    early_stop: bool,
    monitor_samples: int,
    monitor_mode: str,
    classifier_checkpoint: str | None,
    fid_samples: int,
    seed: int,
    device: str,
    precision: str,
    out: str,
    quiet: bool,
) -> None:
    """Make a model forget a class; writes summary.json, log.csv and model.safetensors into --out."""
    from genunlearn.errors import ConfigError
    from genunlearn.experiments.mnist import MnistUnlearnSpec, unlearn_to_dir
    from genunlearn.loop import UnlearnConfig

    if model_name != "mnist-vae":
        raise ConfigError(f"unlearn supports --model mnist-vae for now, got {model_name!r}")
    if monitor_samples < 1:
        raise ConfigError("--monitor-samples must be >= 1")
    spec = MnistUnlearnSpec(
        forget=_parse_classes(forget),
        checkpoint=checkpoint,
        classifier_checkpoint=classifier_checkpoint,
        monitor_samples=monitor_samples,
        monitor_mode=monitor_mode,
        fid_samples=fid_samples,
        device=device,
    )
    config = UnlearnConfig(
        method=method,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        loss_reduction=loss_reduction,
        bn_mode=bn_mode,
        beta_o=beta_o,
        beta_h=beta_h,
        orthogonality=orthogonality,
        ascent_weight=ascent_weight,
        forget_cap=forget_cap,
        beta_r=beta_r,
        replace_neighbors=replace_neighbors,
        hat_kind=hat_kind,
        alpha=alpha,
        stop_at=stop_at,
        early_stop=early_stop,
        seed=seed,
        precision=precision,
    ).validate()
    summary = unlearn_to_dir(spec, config, out, progress=not quiet)
    keys = [
        "method",
        "status",
        "steps_run",
        "updates_to_unlearn",
        "time_to_unlearn_s",
        "time_per_step_s",
        "forget_fraction_initial",
        "forget_fraction_final",
        "fid_original",
        "fid_final",
    ]
    for k in keys:
        v = summary.get(k)
        click.echo(f"{k:24s} {v:.4g}" if isinstance(v, float) else f"{k:24s} {v}")
    click.echo(f"outputs in {out}/ (summary.json, log.csv, model.safetensors)")
    if summary["status"].startswith("diverged"):
        raise GenUnlearnError(summary["status"])


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="genunlearn-demo", show_default=True)
@click.option("--forget", type=int, default=1, show_default=True, help="Digit to forget.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fid-samples", type=int, default=5000, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: str, forget: int, seed: int, fid_samples: int, quiet: bool) -> None:
    """The main job: forget a digit from the bundled MNIST VAE with rep, UNO and S, and report."""
    from genunlearn.experiments.demo import format_table, run_demo

    rows = run_demo(out, forget=forget, seed=seed, fid_samples=fid_samples, progress=not quiet)
    click.echo(format_table(rows))
    click.echo(f"report: {Path(out) / 'report.md'}")


@cli.group()
def bench() -> None:
    """Benchmarks that reproduce the paper's tables."""


@bench.command("mnist")
@click.option("--seeds", type=int, default=10, show_default=True)
@click.option("--methods", default=None, help="Comma-separated bench entries (default: all; see --list).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="VAE weights (default: bundled).")
@click.option(
    "--classifier-checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Monitor/FID classifier (default: bundled).",
)
@click.option("--classifier-bn/--classifier-no-bn", default=None, help="Override the classifier's bn1 use.")
@click.option("--forget", default="1", show_default=True)
@click.option("--steps", type=int, default=None, help="K (default 530; --quick: 12).")
@click.option("--fid-samples", type=int, default=None, help="Default 25,000 (--quick: 1,000).")
@click.option("--quick", is_flag=True, help="A small smoke run: 2 seeds, 12 updates, small FID.")
@click.option("--list", "list_entries", is_flag=True, help="List the bench entries and exit.")
@click.option("--title", default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory (resumable).")
def bench_mnist(
    seeds: int,
    methods: str | None,
    checkpoint: str | None,
    classifier_checkpoint: str | None,
    classifier_bn: bool | None,
    forget: str,
    steps: int | None,
    fid_samples: int | None,
    quick: bool,
    list_entries: bool,
    title: str | None,
    device: str,
    out: str | None,
) -> None:
    """The paper's MNIST Tables 1 and 3 over seeds: table.md/csv, results.json, figures/ in --out."""
    from dataclasses import replace

    from genunlearn.errors import ConfigError
    from genunlearn.experiments.bench import ENTRIES, BenchSettings, run_bench
    from genunlearn.experiments.mnist import MnistUnlearnSpec

    if list_entries:
        for e in ENTRIES:
            click.echo(f"{e.key:16s} table {e.table}  {e.label}")
        return
    if out is None:
        raise ConfigError("--out is required")
    settings = BenchSettings.quick() if quick else BenchSettings()
    settings = replace(settings, seeds=seeds if not quick else min(seeds, settings.seeds))
    if steps is not None:
        settings = replace(settings, steps=steps)
    if fid_samples is not None:
        settings = replace(settings, fid_samples=fid_samples)
    spec = MnistUnlearnSpec(
        forget=_parse_classes(forget),
        checkpoint=checkpoint,
        classifier_checkpoint=classifier_checkpoint,
        classifier_bn=classifier_bn,
        device=device,
    )
    entries = [m.strip() for m in methods.split(",")] if methods else None
    result = run_bench(
        out, spec=spec, settings=settings, entries=entries, title=title or f"MNIST, forget digit {forget}"
    )
    click.echo(result["table"])


@bench.command("celeba64-original")
@click.option("--vae-checkpoint", type=click.Path(dir_okay=False), default=None, help="Default: the cache's.")
@click.option("--classifier-checkpoint", type=click.Path(dir_okay=False), default=None, help="Default: the cache's.")
@click.option("--celeba-dir", type=click.Path(file_okay=False), default=None, help="images.zip + attributes.csv.")
@click.option("--samples", type=int, default=10_000, show_default=True, help="Generated faces (>= 1024).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--inception-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local torchmetrics Inception weights for standard FID (default: classifier features).",
)
@click.option(
    "--show-originals", is_flag=True, help="Also write the real held-out faces (git-ignored *.local.png; license)."
)
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
def bench_celeba64_original(
    vae_checkpoint: str | None,
    classifier_checkpoint: str | None,
    celeba_dir: str | None,
    samples: int,
    seed: int,
    inception_weights: str | None,
    show_originals: bool,
    threads: int | None,
    out: str,
) -> None:
    """Measure the original CelebA VAE and classifier: losses, attribute rates, FID, sample grids."""
    from genunlearn.errors import ConfigError
    from genunlearn.experiments.celeba import original_report

    if samples < 1024:
        raise ConfigError("--samples must be >= 1024")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    original_report(
        out,
        vae_checkpoint=vae_checkpoint,
        classifier_checkpoint=classifier_checkpoint,
        celeba_dir=celeba_dir,
        samples=samples,
        seed=seed,
        inception_weights=inception_weights,
        show_originals=show_originals,
    )
    click.echo((Path(out) / "README.md").read_text())


def main() -> None:
    """Entry point: run the CLI, turning genunlearn errors into one line and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except GenUnlearnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
