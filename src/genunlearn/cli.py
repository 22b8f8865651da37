"""The ``genunlearn`` command line (click).

Every user error is reported as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from genunlearn.config import _parse_str_list, config_options
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


#: ``--[no-]independent-classifier-bn`` of every command with an independent MNIST classifier (the rule behind the
#: default: :func:`genunlearn.experiments.audit.independent_bn`).
_independent_bn_option = click.option(
    "--independent-classifier-bn/--no-independent-classifier-bn",
    default=None,
    help="Read the independent MNIST classifier with bn1 applied or skipped (default: as its file records; applied "
    "when it records nothing, as for the UNO authors').",
)


@cli.command()
@click.option("--evaluate", is_flag=True, help="Also measure test ELBO / accuracy of bundled and authors' weights.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="With --evaluate: write evaluation.json (with provenance) and evaluation.md here.",
)
def models(evaluate: bool, out: str | None) -> None:
    """List the registered models (and optionally evaluate their weights)."""
    from genunlearn.models.registry import MODELS

    for spec in MODELS.values():
        click.echo(f"{spec.name:20s} {spec.kind:10s} {spec.description}")
    if out is not None and not evaluate:
        raise click.UsageError("--out needs --evaluate")
    if evaluate:
        from genunlearn.experiments.model_eval import evaluate_models, render_evaluation, write_evaluation

        rows = evaluate_models()
        click.echo("")
        click.echo(render_evaluation(rows))
        if out is not None:
            write_evaluation(out, rows)
            click.echo(f"written {Path(out) / 'evaluation.json'} and evaluation.md")


@cli.command()
def methods() -> None:
    """List the registered unlearning methods."""
    from genunlearn.methods import METHODS

    for name, cls in METHODS.items():
        flag = " [classifier]" if cls.uses_classifier else ""
        click.echo(f"{name:10s} {cls.summary}{flag}")


@cli.command()
@click.argument("model", type=click.Choice(["vae", "classifier", "dit", "i2i"]))
@click.option("--dataset", default="mnist", show_default=True, help="IDX dataset name, or celeba64.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Directory with the IDX files.")
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Default: 200 (vae), 20 (classifier), 12 (dit), 3 (i2i); celeba64: 25 (vae), 12 (classifier).",
)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option(
    "--lr", type=float, default=None, help="Default: 1e-3 (vae, classifier; Adam), 5e-4 (dit; AdamW), 2e-3 (i2i; Adam)."
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default=None,
    help="Default: constant (vae), cosine (classifier; dit after a 500-step warm-up); celeba64: cosine.",
)
@click.option("--bn/--no-bn", "use_bn", default=True, show_default=True, help="Classifier: apply bn1.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--exclude-class",
    "exclude_class",
    default=None,
    help="Train without these classes ('1' or '1,7'): the retrained gold standard of class unlearning.",
)
@click.option(
    "--exclude-ids",
    type=click.Path(dir_okay=False),
    default=None,
    help="File of training-set indices to leave out (one per line or a JSON list): sample unlearning's gold standard.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory (resumable); required for IDX datasets, celeba64: $GENUNLEARN_CACHE/celeba64-<model>.",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue a run of the same config found in --out (after Ctrl-C or a crash: the result is the same).",
)
@click.option("--overwrite", is_flag=True, help="Replace a run that --out holds (its files only).")
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
@click.option(
    "--recon-vae",
    type=click.Path(dir_okay=False),
    default=None,
    help="celeba64 classifier: also train on this face VAE's reconstructions (so it sees the VAE's blurry faces).",
)
@click.option("--recon-share", type=float, default=None, help="celeba64 classifier: share of reconstructions [0.5].")
@click.option(
    "--task",
    type=click.Choice(["inpaint", "outpaint"]),
    default=None,
    help="i2i: inpaint (centre square hidden) or outpaint (all but the centre square hidden) [inpaint].",
)
@click.option("--mask-size", type=int, default=None, help="i2i: side of the centre square [14].")
def train(
    model: str,
    dataset: str,
    data_dir: str | None,
    epochs: int | None,
    batch_size: int,
    lr: float | None,
    lr_schedule: str | None,
    use_bn: bool,
    seed: int,
    device: str,
    exclude_class: str | None,
    exclude_ids: str | None,
    out: str | None,
    resume: bool,
    overwrite: bool,
    threads: int | None,
    framing: str | None,
    celeba_dir: str | None,
    hflip: bool | None,
    widths: str | None,
    checkpoint_every: int | None,
    recon_vae: str | None,
    recon_share: float | None,
    task: str | None,
    mask_size: int | None,
) -> None:
    """Train an original model: the paper's MNIST VAE or classifier, the class-conditional MNIST DiT, the MNIST
    image-to-image (inpainting / outpainting) model, or the CelebA 64x64 VAE or attribute classifier.

    \b
    genunlearn train vae --out runs/vae                          # the bundled model's recipe
    genunlearn train vae --exclude-class 1 --out runs/vae-no1    # retrained without digit 1
    genunlearn train vae --exclude-ids forget.txt --out runs/r   # retrained without those images
    genunlearn train i2i --task outpaint --out runs/i2i-out      # the bundled outpainting model's recipe
    """
    from genunlearn.errors import ConfigError

    if model != "i2i" and (task is not None or mask_size is not None):
        raise ConfigError("--task and --mask-size apply to the i2i model only")
    if exclude_ids and model in ("i2i", "dit"):
        raise ConfigError(
            f"--exclude-ids is implemented for the IDX VAE and classifier only; {model} takes --exclude-class"
        )
    if (exclude_class or exclude_ids) and dataset == "celeba64":
        raise ConfigError("--exclude-class / --exclude-ids are implemented for IDX datasets only")
    if dataset == "celeba64":
        if data_dir is not None:
            raise ConfigError("--data-dir is for IDX datasets; use --celeba-dir for celeba64")
        _train_celeba(
            model,
            epochs,
            batch_size,
            lr or 1e-3,
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
            recon_vae,
            recon_share,
        )
        return
    given = {"--framing": framing, "--celeba-dir": celeba_dir, "--hflip": hflip, "--widths": widths}
    given.update({"--checkpoint-every": checkpoint_every, "--recon-vae": recon_vae, "--recon-share": recon_share})
    for name, value in given.items():
        if value is not None:
            raise ConfigError(f"{name} applies to --dataset celeba64 only")
    if out is None:
        ctx = click.get_current_context()
        raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "out"))
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads must be >= 1")
        import torch

        torch.set_num_threads(threads)
    if model == "dit":
        from genunlearn.train_dit import DiTTrainConfig, train_dit

        dit_config = DiTTrainConfig(
            dataset=dataset,
            data_dir=data_dir,
            epochs=epochs or 12,
            batch_size=batch_size,
            lr=lr or 5e-4,
            lr_schedule=lr_schedule or "cosine",
            seed=seed,
            device=device,
            exclude_classes=_parse_classes(exclude_class) if exclude_class else (),
        )
        record = train_dit(dit_config, out, resume=resume)
        click.echo(json.dumps(record["final"]))
        click.echo(f"weights (EMA): {Path(out) / 'model.safetensors'}")
        return
    if model == "i2i":
        from genunlearn.train_i2i import I2ITrainConfig, train_i2i

        i2i_config = I2ITrainConfig(
            task=task or "inpaint",
            mask_size=mask_size or 14,
            dataset=dataset,
            data_dir=data_dir,
            epochs=epochs or 3,
            batch_size=batch_size,
            lr=lr or 2e-3,
            seed=seed,
            exclude_classes=_parse_classes(exclude_class) if exclude_class else (),
            device=device,
        )
        record = train_i2i(i2i_config, out, resume=resume, overwrite=overwrite)
        click.echo(json.dumps(record["final"]))
        click.echo(f"weights: {Path(out) / 'model.safetensors'}")
        return
    from genunlearn.train import TrainConfig
    from genunlearn.train import train as run_train

    is_vae = model == "vae"
    config = TrainConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs or (200 if is_vae else 20),
        batch_size=batch_size,
        lr=lr or 1e-3,
        seed=seed,
        use_bn=use_bn,
        lr_schedule=lr_schedule or ("constant" if is_vae else "cosine"),
        device=device,
        exclude_classes=_parse_classes(exclude_class) if exclude_class else (),
        exclude_ids=exclude_ids,
    )
    record = run_train(config, out, resume=resume, overwrite=overwrite)
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
    recon_vae: str | None = None,
    recon_share: float | None = None,
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
        recon_vae=recon_vae,
        recon_share=recon_share,
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
        shown = {"test_mean_accuracy": round(final["test_mean_accuracy"], 4), "test_accuracy": acc}
        if "test_recon" in final:
            rec = final["test_recon"]
            shown["test_recon_accuracy"] = {a: round(rec[a]["accuracy"], 4) for a in KEY_ATTRIBUTES if a in rec}
        click.echo(json.dumps(shown))
    click.echo(f"weights: {out_dir / 'model.safetensors'}")


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML run config ([model], [adapter], [data], [objective], [unlearn], [monitor], [run]); options below "
    "override it.",
)
@config_options
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the unfinished run of the same config in --out from its last checkpoint (the result equals an "
    "uninterrupted run).",
)
@click.option("--overwrite", is_flag=True, help="Replace the run that --out holds (its files only).")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Save a resumable checkpoint (checkpoint.pt) every N updates (0: only at the end or on Ctrl-C).",
)
def unlearn(
    config_file: str | None,
    out: str,
    quiet: bool,
    resume: bool,
    overwrite: bool,
    checkpoint_every: int,
    **options: Any,
) -> None:
    """Make a model forget a class (or replace it); writes summary.json, config.toml, log.csv and model.safetensors.

    \b
    Examples:
      genunlearn unlearn --forget 1 --method rep --out runs/rep1
      genunlearn unlearn --config run.toml --steps 100 --out runs/x
      genunlearn unlearn --model my_model:factory --config run.toml --out runs/mine
      genunlearn unlearn --forget 1 --method uno --out runs/uno1 --resume   # after Ctrl-C or a crash
    """
    from dataclasses import replace

    from genunlearn.config import load_config, overrides_from_cli
    from genunlearn.distributed import finish, init_from_env
    from genunlearn.experiments.session import run_to_dir

    cfg = load_config(config_file, overrides_from_cli(options))
    command = " ".join(shlex.quote(a) for a in ["genunlearn", *sys.argv[1:]])
    started, device = init_from_env(cfg.run.device)  # under torchrun: one process per rank, data parallel
    if device != cfg.run.device:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    try:
        summary = run_to_dir(
            cfg,
            out,
            progress=not quiet,
            command=command,
            resume=resume,
            overwrite=overwrite,
            checkpoint_every=checkpoint_every,
        )
    finally:
        rank = finish(started)
    if rank != 0:
        return
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
    written = ", ".join(Path(p).name for p in summary.get("outputs", []))
    click.echo(f"outputs in {out}/ (summary.json, config.toml, log.csv, {written})")
    if summary["status"].startswith("diverged"):
        raise GenUnlearnError(summary["status"])


def _int_list(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers like '10,50,100', got {value!r}") from None
    if not out:
        raise click.BadParameter("expected at least one integer")
    return out


@cli.command()
@click.option(
    "--model", "model_name", default="mnist-vae", show_default=True, help="Registered model or module:factory."
)
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False), default=None, help="The original weights (default: the model's)."
)
@click.option("--dataset", default=None, help="Training data by name (default: the model's).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--forget", default="1", show_default=True, help="The forgotten class(es), e.g. 1 or 1,7.")
@click.option(
    "--replace-with",
    default=None,
    help="Conditional replacement: the class that replaced the forgotten one (class-conditional models, e.g. 7).",
)
@click.option(
    "--forget-attr",
    default=None,
    help="Feature unlearning (celeba64-vae): the forgotten attribute(s), e.g. Male or Male,Eyeglasses.",
)
@click.option("--attr-mode", type=click.Choice(["any", "all"]), default="any", show_default=True)
@click.option(
    "--unlearned",
    "unlearned",
    multiple=True,
    metavar="NAME=PATH",
    help="An unlearned model: its weights or a `genunlearn unlearn` output folder (repeatable).",
)
@click.option("--retrained", type=click.Path(), default=None, help="A model retrained without the forgotten class.")
@click.option("--classifier-checkpoint", type=click.Path(dir_okay=False), default=None, help="The attacked detector.")
@click.option("--classifier-bn/--no-classifier-bn", default=None, help="Its bn1 (MNIST classifier).")
@click.option(
    "--independent-classifier",
    type=click.Path(dir_okay=False),
    default=None,
    help="A second detector that re-measures everything (default: the UNO authors' MNIST classifier when found).",
)
@_independent_bn_option
@click.option("--starts", type=click.IntRange(min=1), default=256, show_default=True, help="Input search starts.")
@click.option("--search-steps", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--grid", type=click.IntRange(min=0), default=201, show_default=True, help="Grid points per axis (2-d).")
@click.option("--relearn-at", default="10,50,100", show_default=True, help="Update counts k of relearning.")
@click.option("--relearn-forget", default="0,1,10", show_default=True, help="Forget examples per relearning batch.")
@click.option("--relearn-seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--relearn-lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Adam lr."
)
@click.option(
    "--prior-samples",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Fixed prior inputs of the prior check and the relearning measurements.",
)
@click.option(
    "--embedding-starts",
    type=click.IntRange(min=0),
    default=22,
    show_default=True,
    help="Class-conditional models: starts of the class-embedding search (0: skip).",
)
@click.option(
    "--embedding-radius",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Class-embedding ball: this multiple of the largest norm of the model's real label embeddings.",
)
@click.option("--sampler", type=click.Choice(["ddim", "dpm++"]), default=None, help="mnist-dit: sampler (dpm++).")
@click.option("--sampler-steps", type=click.IntRange(min=1), default=None, help="mnist-dit: sampler steps (10).")
@click.option("--guidance", type=float, default=None, help="mnist-dit: classifier-free guidance scale (2).")
@click.option("--confidence", type=float, default=0.9, show_default=True)
@click.option(
    "--fraction-limit",
    type=float,
    default=None,
    help="Verdict: forget fractions must stay below this (default 0.02; set it from the detector's false positives).",
)
@click.option(
    "--share-limit",
    type=float,
    default=None,
    help="Verdict: at most this share of search starts / prior mass may end confident (default 0.01).",
)
@click.option(
    "--rejudge",
    is_flag=True,
    help="Recompute the verdicts of the audit in --out with --fraction-limit/--share-limit; measures nothing.",
)
@click.option("--why", default=None, help="With --rejudge: the reason for the limits, written into audit.md.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--allow-pickle", is_flag=True, help="Read torch checkpoints holding pickled objects (trusted files only)."
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--resume", is_flag=True, help="Reuse the per-model results of an earlier audit in --out.")
@click.option("--overwrite", is_flag=True, help="Replace the audit that --out holds.")
@click.option("--title", default=None)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def audit(
    model_name: str,
    checkpoint: str | None,
    dataset: str | None,
    data_dir: str | None,
    forget: str,
    replace_with: str | None,
    forget_attr: str | None,
    attr_mode: str,
    unlearned: tuple[str, ...],
    retrained: str | None,
    classifier_checkpoint: str | None,
    classifier_bn: bool | None,
    independent_classifier: str | None,
    independent_classifier_bn: bool | None,
    starts: int,
    search_steps: int,
    grid: int,
    relearn_at: str,
    relearn_forget: str,
    relearn_seeds: int,
    relearn_lr: float,
    prior_samples: int,
    embedding_starts: int,
    embedding_radius: float,
    sampler: str | None,
    sampler_steps: int | None,
    guidance: float | None,
    confidence: float,
    fraction_limit: float | None,
    share_limit: float | None,
    rejudge: bool,
    why: str | None,
    seed: int,
    device: str,
    allow_pickle: bool,
    out: str,
    resume: bool,
    overwrite: bool,
    title: str | None,
    quiet: bool,
) -> None:
    """Try to bring the forgotten class back: input search and relearning, with a pass/fail verdict per model.

    \b
    Example (docs/audit.md):
      genunlearn audit --forget 1 --unlearned rep=runs/rep1 --unlearned s=runs/s1 --out audits/mnist1
      genunlearn audit --model mnist-dit --forget 1 --replace-with 7 --unlearned s=runs/s/model.safetensors \\
        --starts 32 --search-steps 30 --out audits/dit1
      genunlearn audit --model celeba64-vae --forget-attr Male --unlearned uno=runs/male/model.safetensors \\
        --independent-classifier ~/.cache/genunlearn/celeba64-classifier-indep/model.safetensors --out audits/male
      genunlearn audit --rejudge --fraction-limit 0.2 --why "monitor FPR 15%" --out audits/male
    """
    from genunlearn.errors import ConfigError
    from genunlearn.experiments.audit import rejudge_audit, run_audit_command

    ctx = click.get_current_context()
    if rejudge:
        allowed = {"rejudge", "fraction_limit", "share_limit", "why", "out", "quiet"}
        given = [
            n
            for n in ctx.params
            if n not in allowed and ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise ConfigError(
                f"--rejudge measures nothing: it takes --out, --fraction-limit, --share-limit and --why only "
                f"(got --{given[0].replace('_', '-')})"
            )
        data = rejudge_audit(out, fraction_threshold=fraction_limit, share_margin=share_limit, why=why)
        _echo_verdicts(data, out)
        return
    if why is not None:
        raise ConfigError("--why goes with --rejudge")
    limits = {"fraction_threshold": fraction_limit, "share_margin": share_limit}

    options = {"sampler": sampler, "sampler_steps": sampler_steps, "guidance_scale": guidance}

    data = run_audit_command(
        model_name=model_name,
        checkpoint=checkpoint,
        dataset=dataset,
        data_dir=data_dir,
        forget=_parse_classes(forget),
        replace_with=_parse_classes(replace_with) if replace_with else (),
        forget_attr=_parse_str_list(forget_attr) or (),
        attr_mode=attr_mode,
        model_options={k: v for k, v in options.items() if v is not None},
        unlearned=unlearned,
        retrained=retrained,
        classifier_checkpoint=classifier_checkpoint,
        classifier_bn=classifier_bn,
        independent_classifier=independent_classifier,
        independent_classifier_bn=independent_classifier_bn,
        settings_overrides={
            "starts": starts,
            "search_steps": search_steps,
            "grid": grid,
            "relearn_at": _int_list(relearn_at),
            "relearn_forget": _int_list(relearn_forget),
            "relearn_seeds": relearn_seeds,
            "relearn_lr": relearn_lr,
            "prior_samples": prior_samples,
            "embedding_starts": embedding_starts,
            "embedding_radius": embedding_radius,
            "confidence": confidence,
            "seed": seed,
            **{k: v for k, v in limits.items() if v is not None},
        },
        device=device,
        allow_pickle=allow_pickle,
        out=out,
        resume=resume,
        overwrite=overwrite,
        title=title,
        progress=not quiet,
    )
    _echo_verdicts(data, out)


def _echo_verdicts(data: dict, out: str) -> None:
    """One line per audited model: its verdict and the checks it fails."""
    for m in data["models"]:
        v = m["verdict"]
        status = "reference" if m["kind"] == "original" else ("pass" if v["pass"] else "fail")
        failed = [k for k, c in v["checks"].items() if c["pass"] is False]
        click.echo(f"{m['name']:16s} {m['kind']:10s} {status}" + (f" (fails: {', '.join(failed)})" if failed else ""))
    click.echo(f"report: {Path(out) / 'audit.md'}")


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
@click.option(
    "--dataset", default="mnist", show_default=True, help="Any IDX dataset (with --checkpoint and a classifier)."
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Directory with the IDX files.")
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
    dataset: str,
    data_dir: str | None,
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
        dataset=dataset,
        data_dir=data_dir,
        device=device,
    )
    entries = [m.strip() for m in methods.split(",")] if methods else None
    default_title = f"MNIST, forget digit {forget}" if dataset == "mnist" else f"{dataset}, forget class {forget}"
    result = run_bench(out, spec=spec, settings=settings, entries=entries, title=title or default_title)
    click.echo(result["table"])


@bench.command("compare")
@click.option("--model", default="mnist-vae", show_default=True, help="A registered model (genunlearn models).")
@click.option("--forget", default="1", show_default=True, help="Class(es) to forget.")
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--methods", default=None, help="Comma-separated entries (default: all; see --list).")
@click.option(
    "--retrained",
    default=None,
    help="Comma-separated weights of models retrained without the forget data (genunlearn train vae --exclude-class).",
)
@click.option(
    "--independent-classifier",
    type=click.Path(dir_okay=False),
    default=None,
    help="A second classifier re-measuring the forget fraction (e.g. the UNO authors' MNIST classifier).",
)
@_independent_bn_option
@click.option(
    "--forget-ids",
    type=click.Path(dir_okay=False),
    default=None,
    help="Sample unlearning: a file of training-set indices to forget (then --forget is ignored).",
)
@click.option(
    "--shadows",
    default=None,
    help="Sample unlearning: comma-separated shadow-model run directories (train vae --exclude-ids) for LiRA.",
)
@click.option("--steps", type=int, default=None, help="K (default 530; samples: 100; --quick: 12 / 5).")
@click.option("--fid-samples", type=int, default=None, help="Default 25,000 (samples: 10,000; --quick: 1,000).")
@click.option("--gold-samples", type=int, default=None, help="Shared latents of the final measures (default 10,000).")
@click.option("--quick", is_flag=True, help="A small smoke run: 1 seed, 12 updates, small samples.")
@click.option("--list", "list_entries", is_flag=True, help="List the entries and exit.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory (resumable).")
def bench_compare(
    model: str,
    forget: str,
    seeds: int,
    methods: str | None,
    retrained: str | None,
    independent_classifier: str | None,
    independent_classifier_bn: bool | None,
    forget_ids: str | None,
    shadows: str | None,
    steps: int | None,
    fid_samples: int | None,
    gold_samples: int | None,
    quick: bool,
    list_entries: bool,
    device: str,
    out: str | None,
) -> None:
    """Every method side by side against the retrained model: results.json, table.md/csv, figures/ in --out.

    \b
    genunlearn bench compare --model mnist-vae --forget 1 --seeds 5 \\
        --retrained runs/retrain/vae-no1-seed0/model.safetensors,runs/retrain/vae-no1-seed1/model.safetensors \\
        --independent-classifier ../shared/anchors/uno-paper-mnist/classifier.safetensors --out results/compare/x
    """
    from dataclasses import replace

    from genunlearn.errors import ConfigError
    from genunlearn.experiments.compare import ENTRIES, FAMILIES, CompareSettings, run_compare

    if list_entries:
        for e in ENTRIES:
            click.echo(f"{e.key:12s} {FAMILIES.get(e.key, ''):20s} {e.label}")
        return
    if out is None:
        raise ConfigError("--out is required")
    paths = [p.strip() for p in retrained.split(",") if p.strip()] if retrained else []
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"{p}: retrained weights not found")
    command = " ".join(shlex.quote(a) for a in ["genunlearn", *sys.argv[1:]])
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    if forget_ids is not None:
        from genunlearn.experiments.samples import SampleSettings, render_samples, run_samples

        sample_settings = SampleSettings.quick() if quick else SampleSettings(seeds=seeds)
        for name, value in (("steps", steps), ("fid_samples", fid_samples), ("generated", gold_samples)):
            if value is not None:
                sample_settings = replace(sample_settings, **{name: value})
        result = run_samples(
            out,
            forget_ids=forget_ids,
            model=model,
            retrained=paths,
            shadows=[d.strip() for d in shadows.split(",") if d.strip()] if shadows else None,
            settings=sample_settings,
            entries=chosen,
            device=device,
            command=command,
        )
        click.echo(render_samples(result))
        return
    settings = CompareSettings.quick() if quick else CompareSettings(seeds=seeds)
    for name, value in (("steps", steps), ("fid_samples", fid_samples), ("gold_samples", gold_samples)):
        if value is not None:
            settings = replace(settings, **{name: value})
    result = run_compare(
        out,
        model=model,
        forget=_parse_classes(forget),
        retrained=paths,
        independent_classifier=independent_classifier,
        independent_classifier_bn=independent_classifier_bn,
        settings=settings,
        entries=chosen,
        device=device,
        command=command,
    )
    from genunlearn.experiments.compare import render_table

    click.echo(render_table(result))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--check", is_flag=True, help="Write nothing; print the first difference and exit with status 1.")
@click.option(
    "--root", type=click.Path(file_okay=False), default=None, help="Repository root (default: found above the cwd)."
)
@click.option("--list", "list_generators", is_flag=True, help="List the generators of marked blocks and exit.")
def report(paths: tuple[str, ...], check: bool, root: str | None, list_generators: bool) -> None:
    """Regenerate committed tables and quoted numbers from committed data (see genunlearn.report).

    \b
    genunlearn report            # rewrite every table.md, summary.md, generated block and quoted value
    genunlearn report --check    # the test suite's check: exit 1 at the first mismatch
    genunlearn report results/mnist/README.md
    """
    from genunlearn.report import GENERATORS, run_report

    if list_generators:
        for name, (_, usage) in sorted(GENERATORS.items()):
            click.echo(f"{name:20s} {usage}")
        return
    diffs = run_report(root, paths, check=check)
    if check:
        if diffs:
            click.echo(str(diffs[0]), err=True)
            click.echo(f"{len(diffs)} file(s) differ from their data", err=True)
            sys.exit(1)
        click.echo("every generated file, block and quoted value matches its data")
        return
    for d in diffs:
        click.echo(f"updated {d.path}")
    if not diffs:
        click.echo("nothing to update")


def _lora_bench_options(func):
    """``--lora-rank`` / ``--lora-targets`` of the benches that can train a LoRA adapter instead of the weights."""
    func = click.option(
        "--lora-targets", default=None, help="Layers the adapter adapts: all (default) or names, e.g. to_q,to_k,to_v."
    )(func)
    return click.option(
        "--lora-rank",
        type=click.IntRange(min=0),
        default=None,
        help="Train a LoRA adapter of this rank instead of the weights (peft, base frozen; default 0: full).",
    )(func)


@bench.command("mnist-dit")
@click.option("--seeds", type=int, default=None, help="Default 3 (--quick: 1).")
@click.option("--methods", default=None, help="Comma-separated methods (default: s,uno,uno-s,uno-fd,a,sa,d).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="DiT weights (default: bundled).")
@click.option("--forget", type=int, default=None, help="Digit to replace (default 1).")
@click.option("--replace-with", "target", type=int, default=None, help="Target digit (default 7).")
@click.option("--steps", type=int, default=None, help="Updates per run (default 100, the paper's K).")
@click.option("--lr", type=float, default=None, help="Default 1e-4 (the paper's).")
@click.option("--batch-size", type=int, default=None, help="Default 10 (the paper's).")
@click.option("--beta-o", type=float, default=None, help="Default 2e-2 (the paper's DiT value).")
@click.option("--monitor-samples", type=int, default=None, help="Default 200.")
@click.option("--monitor-every", type=int, default=None, help="Default 5 updates.")
@click.option("--sampler-steps", type=int, default=None, help="Default 10.")
@click.option("--sampler", type=click.Choice(["ddim", "dpm++"]), default=None, help="Default dpm++ (DPM-Solver++ 2M).")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale (default 2).")
@click.option("--class-samples", type=int, default=None, help="Per class, before/after (default 100).")
@click.option("--fid-samples", type=int, default=None, help="Kept classes' samples for FID (default 1000).")
@click.option(
    "--preserve-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Weight of a retain term over the other labels (genunlearn; default 0: the paper's L^R).",
)
@click.option(
    "--preserve-target",
    type=click.Choice(["data", "original"]),
    default=None,
    help="What that term asks of the other labels: their denoising loss (data, the default) or the frozen "
    "original's predictions (original: a distillation).",
)
@click.option(
    "--early-stop",
    is_flag=True,
    help="Stop each run at the first monitor reading below the threshold (measures the model there).",
)
@_lora_bench_options
@click.option(
    "--trainable",
    default=None,
    help="Train only the parameters these comma-separated patterns select (e.g. class_embedder: the label "
    "embeddings); default: all.",
)
@click.option(
    "--retrained",
    type=click.Path(dir_okay=False),
    default=None,
    help="The DiT trained without the forget label (train dit --exclude-class): the gold standard; every run's "
    "distance to it joins the table.",
)
@click.option("--ewc-lambda", type=click.FloatRange(min=0), default=None, help="amnesia: EWC weight (default 100).")
@click.option("--replay-weight", type=click.FloatRange(min=0), default=None, help="amnesia: replay weight (default 1).")
@click.option(
    "--independent-classifier",
    type=click.Path(dir_okay=False),
    default=None,
    help="A second MNIST classifier re-reading the same final samples (e.g. the UNO authors'); default: none.",
)
@_independent_bn_option
@click.option("--quick", is_flag=True, help="A smoke run: 1 seed, 4 updates, tiny samples.")
@click.option(
    "--no-memory", is_flag=True, help="Skip the per-method peak-memory measurement (the CPU profiler is slow)."
)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory (resumable).")
def bench_mnist_dit(
    seeds,
    methods,
    checkpoint,
    forget,
    target,
    steps,
    lr,
    batch_size,
    beta_o,
    monitor_samples,
    monitor_every,
    sampler_steps,
    sampler,
    guidance,
    class_samples,
    fid_samples,
    preserve_weight,
    preserve_target,
    early_stop,
    lora_rank,
    lora_targets,
    trainable,
    retrained,
    ewc_lambda,
    replay_weight,
    independent_classifier,
    independent_classifier_bn,
    quick,
    no_memory,
    device,
    out,
) -> None:
    """The paper's DiT replacement experiment on the MNIST DiT: table.md, results.json, figures/ in --out."""
    from dataclasses import replace

    from genunlearn.experiments.dit_bench import DiTBenchSettings, run_dit_bench

    settings = DiTBenchSettings.quick() if quick else DiTBenchSettings()
    given = {
        "seeds": seeds,
        "forget": forget,
        "target": target,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "beta_o": beta_o,
        "monitor_samples": monitor_samples,
        "monitor_every": monitor_every,
        "sampler_steps": sampler_steps,
        "sampler": sampler,
        "guidance_scale": guidance,
        "class_samples": class_samples,
        "fid_samples": fid_samples,
        "preserve_weight": preserve_weight,
        "preserve_target": preserve_target,
        "lora_rank": lora_rank,
        "lora_targets": _parse_str_list(lora_targets),
        "trainable": _parse_str_list(trainable),
        "retrained": retrained,
        "ewc_lambda": ewc_lambda,
        "replay_weight": replay_weight,
        "independent_classifier": independent_classifier,
        "independent_classifier_bn": independent_classifier_bn,
    }
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
    if no_memory:
        settings = replace(settings, measure_memory=False)
    if early_stop:
        settings = replace(settings, early_stop=True)
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    result = run_dit_bench(out, settings=settings, checkpoint=checkpoint, methods=chosen, device=device)
    click.echo(result["table"])


@bench.command("i2i")
@click.option("--tasks", default=None, help="Comma-separated I2I tasks (default: inpaint,outpaint).")
@click.option("--methods", default=None, help="Comma-separated methods (default: i2i,i2i-proxy,s,uno,gdiff).")
@click.option(
    "--dataset",
    default=None,
    help="28x28 IDX dataset of the models (default mnist; others need --checkpoint and --classifier).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="IDX files of --dataset.")
@click.option(
    "--classifier", type=click.Path(dir_okay=False), default=None, help="Classifier weights trained on --dataset."
)
@click.option("--forget", type=int, default=None, help="Class (digit) to forget (default 1).")
@click.option("--seeds", type=int, default=None, help="Default 3 (--quick: 1).")
@click.option("--steps", type=int, default=None, help="Updates per run (default 100).")
@click.option("--lr", type=float, default=None, help="Adam learning rate (default 1e-3).")
@click.option("--batch-size", type=int, default=None, help="Retain and forget batch size (default 32).")
@click.option("--alpha", type=float, default=None, help="i2i: weight of the forget (noise-embedding) term (default 1).")
@click.option("--gdiff-weight", type=float, default=None, help="gdiff: lambda (default 1).")
@click.option("--beta-o", type=float, default=None, help="uno: orthogonality weight (default 1e3).")
@click.option(
    "--proxy",
    default=None,
    help="Retain-free proxy data: another IDX dataset's name (default fashion-mnist) or 'test' (spare test images).",
)
@click.option("--proxy-dir", type=click.Path(file_okay=False), default=None, help="IDX files of the proxy dataset.")
@click.option("--eval-forget", type=int, default=None, help="Forget-digit test images measured (default 500).")
@click.option("--eval-retain", type=int, default=None, help="Other-digit test images measured (default 1000).")
@click.option(
    "--retrained",
    multiple=True,
    metavar="TASK=PATH",
    help="Weights of a model retrained without the forget digit (genunlearn train i2i --exclude-class), per task.",
)
@click.option("--checkpoint", multiple=True, metavar="TASK=PATH", help="Original weights per task (default: bundled).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--quick", is_flag=True, help="A smoke run: inpaint, 1 seed, 2 updates, tiny samples.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory (resumable).")
def bench_i2i(
    tasks,
    methods,
    dataset,
    data_dir,
    classifier,
    forget,
    seeds,
    steps,
    lr,
    batch_size,
    alpha,
    gdiff_weight,
    beta_o,
    proxy,
    proxy_dir,
    eval_forget,
    eval_retain,
    retrained,
    checkpoint,
    threads,
    quick,
    out,
) -> None:
    """Image-to-image unlearning (Li et al., ICLR 2024) on the MNIST I2I models: table.md, results.json, figures/.

    \b
    genunlearn bench i2i --threads 1 --out results/i2i
    genunlearn bench i2i --retrained inpaint=runs/no1/model.safetensors --tasks inpaint --out runs/b
    genunlearn bench i2i --dataset fashion-mnist --classifier fc/model.safetensors --proxy mnist \\
        --checkpoint inpaint=fi/model.safetensors --checkpoint outpaint=fo/model.safetensors --out runs/f
    """
    from dataclasses import replace

    from genunlearn.errors import ConfigError
    from genunlearn.experiments.i2i_bench import I2IBenchSettings, run_bench

    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads must be >= 1")
        import torch

        torch.set_num_threads(threads)

    def pairs(values: tuple[str, ...], name: str) -> dict[str, str]:
        out_: dict[str, str] = {}
        for v in values:
            task, sep, path = v.partition("=")
            if not sep or not path:
                raise ConfigError(f"{name} takes TASK=PATH, got {v!r}")
            out_[task.strip()] = path.strip()
        return out_

    settings = I2IBenchSettings.quick() if quick else I2IBenchSettings()
    given = {
        "tasks": tuple(t.strip() for t in tasks.split(",")) if tasks else None,
        "methods": tuple(m.strip() for m in methods.split(",")) if methods else None,
        "dataset": dataset,
        "data_dir": data_dir,
        "classifier": classifier,
        "forget": forget,
        "seeds": seeds,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "alpha": alpha,
        "gdiff_weight": gdiff_weight,
        "beta_o": beta_o,
        "proxy": proxy,
        "proxy_dir": proxy_dir,
        "eval_forget": eval_forget,
        "eval_retain": eval_retain,
        "retrained": pairs(retrained, "--retrained") or None,
        "checkpoint": pairs(checkpoint, "--checkpoint") or None,
    }
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
    data = run_bench(settings, out)
    from genunlearn.experiments.i2i_bench import render_table

    click.echo(render_table(data))


def _celeba_model_options(func):
    """The face VAE, attribute classifier and CelebA folder options of the CelebA benches."""
    for option in reversed(
        [
            click.option(
                "--checkpoint", type=click.Path(dir_okay=False), default=None, help="Face VAE (default: the cache)."
            ),
            click.option(
                "--classifier-checkpoint", type=click.Path(dir_okay=False), default=None, help="Attribute classifier."
            ),
            click.option(
                "--celeba-dir", type=click.Path(file_okay=False), default=None, help="images.zip + attributes.csv."
            ),
        ]
    ):
        func = option(func)
    return func


@bench.command("celeba64")
@click.option("--attr", "attributes", default="Male", show_default=True, help="Feature(s) to forget: Male, Eyeglasses.")
@click.option("--attr-mode", type=click.Choice(["any", "all"]), default="any", show_default=True)
@click.option("--seeds", type=int, default=None, help="Default 3 (--quick: 1).")
@click.option(
    "--methods", default=None, help="Comma-separated (default: s,uno,uno-s,s-hat,uno-hat,uno-s-hat,h,rep,uno-fd)."
)
@click.option(
    "--framing", type=click.Choice(["aligned", "detector-crop", "all"]), default=None, help="Faces [aligned]."
)
@click.option("--steps", type=int, default=None, help="Cap on updates (default 200; the paper's K is 659).")
@click.option("--threshold", type=float, default=None, help="Forgotten below this share (default 0.05).")
@click.option("--monitor-every", type=int, default=None, help="Updates between monitor readings (default 5).")
@click.option(
    "--monitor-samples",
    type=click.IntRange(min=2),
    default=None,
    help="Latents per monitor reading (default 1024; more for a rare feature such as eyeglasses).",
)
@click.option("--fid-samples", type=int, default=None, help="Default 2000.")
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam learning rate (the paper's 1e-3)."
)
@click.option("--batch-size", type=click.IntRange(min=2), default=None, help="The paper's 128.")
@_celeba_model_options
@click.option("--independent-classifier", type=click.Path(dir_okay=False), default=None, help="A second one.")
@_lora_bench_options
@click.option("--quick", is_flag=True, help="A smoke run: 1 seed, 3 updates, small samples.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory (resumable).")
def bench_celeba64(
    attributes,
    attr_mode,
    seeds,
    methods,
    framing,
    steps,
    threshold,
    monitor_every,
    monitor_samples,
    fid_samples,
    lr,
    batch_size,
    checkpoint,
    classifier_checkpoint,
    independent_classifier,
    celeba_dir,
    lora_rank,
    lora_targets,
    quick,
    device,
    out,
) -> None:
    """The paper's CelebA feature unlearning: table.md, results.json, figures/ in --out."""
    from dataclasses import replace

    from genunlearn.experiments.celeba_bench import CelebABenchSettings, run_celeba_bench

    attrs = _parse_str_list(attributes)
    base = CelebABenchSettings.quick() if quick else CelebABenchSettings()
    given = {"seeds": seeds, "steps": steps, "threshold": threshold, "monitor_every": monitor_every}
    given.update(monitor_samples=monitor_samples, fid_samples=fid_samples, framing=framing, lr=lr)
    given.update(batch_size=batch_size, lora_rank=lora_rank)
    given.update(lora_targets=_parse_str_list(lora_targets))
    settings = replace(base, attributes=attrs, attr_mode=attr_mode, **{k: v for k, v in given.items() if v is not None})
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    result = run_celeba_bench(
        out,
        settings=settings,
        checkpoint=checkpoint,
        classifier=classifier_checkpoint,
        independent_classifier=independent_classifier,
        celeba_dir=celeba_dir,
        methods=chosen,
        device=device,
    )
    click.echo(result["table"])


@bench.command("celeba64-original")
@_celeba_model_options
@click.option("--samples", type=click.IntRange(min=2), default=10_000, show_default=True, help="Generated faces.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--inception-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="A local Inception checkpoint: FID with Inception features (torchmetrics) instead of the classifier's.",
)
@click.option(
    "--show-originals", is_flag=True, help="Also write held-out CelebA faces next to reconstructions (*.local.png)."
)
@click.option(
    "--independent-classifier", type=click.Path(dir_okay=False), default=None, help="A second attribute classifier."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
def bench_celeba64_original(
    checkpoint,
    classifier_checkpoint,
    celeba_dir,
    samples,
    seed,
    inception_weights,
    show_originals,
    independent_classifier,
    quiet,
    out,
) -> None:
    """What the original face VAE and attribute classifier reach: README.md, summary.json, CSVs, figures in --out."""
    from genunlearn.experiments.celeba import original_report, render_report

    summary = original_report(
        out,
        vae_checkpoint=checkpoint,
        classifier_checkpoint=classifier_checkpoint,
        celeba_dir=celeba_dir,
        samples=samples,
        seed=seed,
        inception_weights=inception_weights,
        independent_classifier=independent_classifier,
        show_originals=show_originals,
        progress=not quiet,
    )
    click.echo(render_report(summary))


def main() -> None:
    """Entry point: run the CLI, turning genunlearn errors into one line and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort as exc:
        cause = exc.__cause__  # click turns KeyboardInterrupt into Abort; keep the run's message
        click.echo(
            f"interrupted: {cause}" if isinstance(cause, KeyboardInterrupt) and str(cause) else "aborted", err=True
        )
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except GenUnlearnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        click.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
