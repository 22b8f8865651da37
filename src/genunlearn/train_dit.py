"""Training of the class-conditional MNIST DiT (``genunlearn train dit``), resumable and reproducible.

AdamW with a linear warm-up and cosine decay of the learning rate per step, label dropout to the null
label for classifier-free guidance, and an exponential moving average (EMA) of the weights
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``) that is the model used for sampling.
Each epoch's data order, timesteps, noise and label dropout come from a generator seeded with
``(seed, epoch)``, and everything is saved at the end of every epoch, so a run resumed from its last
checkpoint continues exactly as an uninterrupted one (same device and thread count).

The output directory holds ``model.safetensors`` (the EMA weights with their build options: what
``load_model("mnist-dit", path)`` reads), ``raw.safetensors`` (the trained, non-averaged weights),
``ema_state.pt`` (the EMA's update counter), ``optimizer.pt``, ``state.json`` (last finished epoch, config,
history) and ``record.json`` (config, versions, per-epoch losses and timings, final quality).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write, atomic_write_json, load_into, save_weights
from genunlearn.data import load_dataset
from genunlearn.errors import CheckpointError, ConfigError
from genunlearn.models.mnist_dit import MnistDiT, MnistDiTConfig, diffusion_loss, sample
from genunlearn.models.registry import count_parameters
from genunlearn.runinfo import resolve_device, versions
from genunlearn.train import training_mask


@dataclass(frozen=True)
class DiTTrainConfig:
    """Options of ``genunlearn train dit``.

    Attributes:
        dataset, data_dir: the image dataset (28x28 grey images, 10 classes for the defaults).
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak AdamW learning rate; ``weight_decay``: AdamW's.
        warmup_steps: linear warm-up of the learning rate; then cosine decay to 0 at the last step
            (``lr_schedule="cosine"``) or constant (``"constant"``).
        label_dropout: probability of training a step's example with the null label.
        loss_target: ``"v"`` (velocity MSE, the default) or ``"eps"`` (epsilon MSE), see
            :func:`genunlearn.models.mnist_dit.diffusion_loss`.
        ema_decay: decay of the exponential moving average of the weights.
        seed: seed of initialisation, data order, timesteps, noise and label dropout.
        arch: architecture and noise schedule (:class:`MnistDiTConfig` as a dict; ``{}`` for the defaults).
        eval_samples: guided samples classified by the bundled MNIST classifier at the end (0: skip;
            only for ``dataset="mnist"``); ``eval_steps``, ``eval_guidance``: their sampler settings.
        val_images: test images of the per-epoch validation loss of the EMA model (fixed t and noise).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        exclude_classes: train without every example of these classes (the retrained gold standard of class
            unlearning; their label rows stay at their initialisation). The validation loss still uses every
            test class.
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 12
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    lr_schedule: str = "cosine"
    label_dropout: float = 0.1
    loss_target: str = "v"
    ema_decay: float = 0.999
    seed: int = 0
    arch: dict | None = None
    eval_samples: int = 1000
    eval_steps: int = 25
    eval_guidance: float = 2.0
    val_images: int = 1024
    device: str = "auto"
    exclude_classes: tuple[int, ...] = ()

    def validate(self) -> DiTTrainConfig:
        """Raise :class:`ConfigError` on invalid values; returns ``self``."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be >= 1")
        if not (0.0 <= self.label_dropout < 1.0):
            raise ConfigError("label_dropout must be in [0, 1)")
        if not (0.0 < self.ema_decay < 1.0):
            raise ConfigError("ema_decay must be in (0, 1)")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r} (cosine or constant)")
        if self.loss_target not in ("v", "eps"):
            raise ConfigError(f"unknown loss target {self.loss_target!r} (v or eps)")
        try:
            MnistDiTConfig(**(self.arch or {})).validate()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid DiT architecture: {exc}") from None
        return self


def _gen(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def lr_at(config: DiTTrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def validation_loss(
    model: MnistDiT,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    batch_size: int = 512,
    target: str = "eps",
) -> float:
    """Mean diffusion loss on ``images`` (in [0, 1]) with timesteps and noise fixed by ``seed`` (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = _gen(seed, 10**6, device)
    sched = model.make_scheduler()
    total = 0.0
    for xb, yb in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        xb = xb.to(device)
        total += float(diffusion_loss(model, xb, yb, sched, generator=g, reduction="sum", target=target))
    model.train(was_training)
    return total / images.numel()


def class_accuracy(
    model: MnistDiT,
    classifier: torch.nn.Module,
    per_class: int,
    *,
    steps: int,
    guidance_scale: float,
    sampler: str = "ddim",
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Generate ``per_class`` guided samples of each class from fixed noise and classify them.

    Returns ``{"accuracy": overall, "per_class": {c: accuracy}, "samples": n}``.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    noise = torch.randn(labels.shape[0], model.in_channels, model.sample_size, model.sample_size, generator=g)
    images = sample(
        model, labels, noise, steps=steps, guidance_scale=guidance_scale, sampler=sampler, progress=progress
    )
    device = next(classifier.parameters()).device
    with torch.no_grad():
        pred = classifier.eval()(images.to(device)).argmax(1).cpu()
    correct = pred == labels
    return {
        "accuracy": float(correct.float().mean()),
        "per_class": {int(c): float(correct[labels == c].float().mean()) for c in range(model.num_classes)},
        "samples": int(labels.shape[0]),
    }


def train_dit(
    config: DiTTrainConfig,
    out: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    max_steps_per_epoch: int | None = None,
) -> dict:
    """Train the DiT and write checkpoints and a JSON record into ``out``; returns the record.

    With ``resume`` a run found in ``out`` (same config) continues from its last finished epoch;
    ``stop_after`` ends this call after that many epochs (the run can be resumed later);
    ``max_steps_per_epoch`` truncates epochs (tests and smoke runs; it is recorded).
    """
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    train_set = load_dataset(config.dataset, "train", config.data_dir)
    test_set = load_dataset(config.dataset, "test", config.data_dir)
    torch.manual_seed(config.seed)
    model = MnistDiT(**(config.arch or {})).to(device)
    n_classes = len(train_set.classes)
    if max(train_set.classes) >= model.num_classes:
        raise ConfigError(f"dataset {config.dataset!r} has labels >= num_classes {model.num_classes}")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = model.make_scheduler()
    paths = {k: out / v for k, v in _FILES.items()}
    history: list[dict] = []
    start_epoch = 0
    # as state.json holds it (JSON: the tuple of excluded classes is a list there)
    run_key = {
        "config": {**asdict(config), "exclude_classes": list(config.exclude_classes)},
        "max_steps_per_epoch": max_steps_per_epoch,
    }
    if resume and paths["state"].is_file():
        state = json.loads(paths["state"].read_text())
        # runs started before exclude_classes existed excluded nothing
        state["config"] = {"exclude_classes": [], **(state.get("config") or {})}
        if {k: state.get(k) for k in run_key} != run_key:
            raise CheckpointError(f"{paths['state']}: a run with a different config is in this directory")
        load_into(model, paths["raw"])
        load_into(ema.module, paths["ema"])
        ema.n_averaged.copy_(torch.load(paths["ema_state"], map_location=device, weights_only=True)["n_averaged"])
        opt.load_state_dict(torch.load(paths["opt"], map_location=device, weights_only=True))
        start_epoch, history = state["epoch"], state["history"]
    keep = training_mask(config, train_set.labels)
    x_all = train_set.flat_float()[keep].to(device)
    y_all = train_set.labels[keep].to(device)
    n = x_all.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    if max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    g_val = torch.Generator().manual_seed(config.seed + 1)
    val_idx = torch.randperm(len(test_set), generator=g_val)[: config.val_images]
    val_x, val_y = test_set.flat_float(val_idx), test_set.labels[val_idx]
    meta = _metadata(config, model, n_classes)
    t_session = time.perf_counter()
    bar = tqdm(
        total=total_steps,
        initial=start_epoch * steps_per_epoch,
        desc="train dit",
        disable=not progress,
        smoothing=0.05,
    )
    for epoch in range(start_epoch, config.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        model.train()
        g = _gen(config.seed, epoch, device)
        perm = torch.randperm(n, generator=g, device=device)
        running, step_times = 0.0, []
        t_epoch = time.perf_counter()
        for i in range(steps_per_epoch):
            t0 = time.perf_counter()
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(config, step, total_steps)
            idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
            loss = diffusion_loss(
                model,
                x_all[idx],
                y_all[idx],
                sched,
                label_dropout=config.label_dropout,
                generator=g,
                target=config.loss_target,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(model)
            running += float(loss.detach())
            step_times.append(time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / (i + 1):.4f}")
        entry = {
            "epoch": epoch + 1,
            "steps": (epoch + 1) * steps_per_epoch,
            "train_loss": running / steps_per_epoch,
            "val_loss_ema": validation_loss(ema.module, val_x, val_y, seed=config.seed, target=config.loss_target),
            "lr_end": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t_epoch,
            "median_step_s": statistics.median(step_times),
        }
        history.append(entry)
        bar.write(json.dumps(entry))
        _save(paths, model, ema, opt, meta, history)
        atomic_write_json(paths["state"], {"epoch": epoch + 1, **run_key, "history": history})
    bar.close()
    complete = len(history) == config.epochs
    final: dict = {"val_loss_ema": history[-1]["val_loss_ema"] if history else None}
    if complete and config.eval_samples > 0 and config.dataset == "mnist":
        from genunlearn.models.registry import load_model

        clf = load_model("mnist-classifier", device=device)
        acc = class_accuracy(
            ema.module,
            clf,
            max(1, config.eval_samples // model.num_classes),
            steps=config.eval_steps,
            guidance_scale=config.eval_guidance,
            seed=config.seed,
            progress=progress,
        )
        final["sample_accuracy"] = acc
        final["sample_settings"] = {"sampler": "ddim", "steps": config.eval_steps, "guidance": config.eval_guidance}
    record = {
        "config": asdict(config),
        "model_config": asdict(model.config),
        "noise_schedule": model.noise_schedule,
        "parameters": count_parameters(model),
        "steps_per_epoch": steps_per_epoch,
        "max_steps_per_epoch": max_steps_per_epoch,
        "excluded_examples": int((~keep).sum()),
        "epochs_done": len(history),
        "complete": complete,
        "final": final,
        "history": history,
        "train_seconds_total": sum(h["seconds"] for h in history),
        "seconds_this_session": time.perf_counter() - t_session,
        "weights": "model.safetensors holds the EMA weights (used for sampling); raw.safetensors the trained ones",
        "versions": versions(),
    }
    if history:
        save_weights(ema.module, paths["ema"], metadata={**meta, "final": final})
    atomic_write_json(out / "record.json", record)
    return record


_FILES = {
    "ema": "model.safetensors",
    "raw": "raw.safetensors",
    "ema_state": "ema_state.pt",
    "opt": "optimizer.pt",
    "state": "state.json",
}


def _save(paths: dict, model: MnistDiT, ema: AveragedModel, opt: torch.optim.Optimizer, meta: dict, history) -> None:
    meta = {**meta, "epochs_done": len(history)}
    save_weights(model, paths["raw"], metadata=meta)
    save_weights(ema.module, paths["ema"], metadata=meta)
    atomic_write(paths["ema_state"], lambda tmp: torch.save({"n_averaged": ema.n_averaged.detach().cpu()}, tmp))
    atomic_write(paths["opt"], lambda tmp: torch.save(opt.state_dict(), tmp))


def _metadata(config: DiTTrainConfig, model: MnistDiT, n_classes: int) -> dict:
    return {
        "build_options": asdict(model.config),
        "noise_schedule": model.noise_schedule,
        "train_config": asdict(config),
        "dataset_classes": n_classes,
    }
