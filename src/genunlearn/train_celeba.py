"""Training of the CelebA 64x64 models (face VAE, attribute classifier), resumable and reproducible.

The images of the chosen framing are decoded once into memory (uint8). Each epoch's order and flips come
from a generator seeded with ``(seed, epoch)``, each step's reparameterisation noise (VAE) or dropout masks
(classifier) from one seeded with ``(seed, epoch, step)``, so a run resumed from any checkpoint (end of an
epoch, or every ``checkpoint_every`` steps inside one) continues exactly as an uninterrupted run. The output directory
(default ``<cache>/celeba64-vae`` or ``<cache>/celeba64-classifier``, see :func:`genunlearn.paths.cache_dir`)
holds ``model.safetensors`` (weights + metadata), ``optimizer.pt``, ``state.json`` and ``record.json``
(config, versions, per-epoch losses and held-out metrics, final metrics, time).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write, atomic_write_json, load_into, save_weights
from genunlearn.data.celeba import CelebA64
from genunlearn.errors import CheckpointError, ConfigError
from genunlearn.models.celeba_classifier import DEFAULT_WIDTHS as CLF_WIDTHS
from genunlearn.models.celeba_classifier import CelebAClassifier
from genunlearn.models.celeba_vae import DEFAULT_WIDTHS as VAE_WIDTHS
from genunlearn.models.celeba_vae import CelebAVAE, celeba_vae_loss
from genunlearn.models.registry import count_parameters
from genunlearn.paths import cache_dir
from genunlearn.runinfo import resolve_device, versions

#: attributes whose held-out metrics are printed and logged per epoch.
KEY_ATTRIBUTES = ("Male", "Eyeglasses", "Smiling", "Young", "Blond_Hair")


@dataclass(frozen=True)
class CelebATrainConfig:
    """Options of ``genunlearn train vae|classifier --dataset celeba64``.

    Attributes:
        model: ``"vae"`` or ``"classifier"``.
        framing: ``"aligned"``, ``"detector-crop"`` or ``"all"`` (training images; held-out the same framing).
        epochs, batch_size, lr, lr_schedule: Adam with ``"constant"`` lr or ``"cosine"`` decay to 0.
        seed: seed of initialisation, data order, flips and noise.
        hflip: random horizontal flips (probability 1/2) of training images.
        widths: channel widths (VAE: encoder convolutions; classifier: convolution blocks).
        latent_dim: VAE latent size.
        kl_weight: VAE KL weight (eq. 13: 1).
        recon_vae: classifier only: a face VAE checkpoint; each training image is replaced, with probability
            ``recon_share``, by that VAE's reconstruction of it (posterior mean, eval mode), so that the classifier
            also recognises attributes in the VAE's blurry outputs (a classifier trained on real faces alone
            calls most of them female: docs/celeba64.md). Held-out metrics are then also reported on
            reconstructions.
        recon_share: probability of the reconstruction (with ``recon_vae``).
        checkpoint_every: also checkpoint every this many steps inside an epoch (0: only at epoch ends).
        celeba_dir, threads, device: where the data is, torch threads, device (do not change results'
            definition; a run may be resumed with other values).
    """

    model: str
    dataset: str = "celeba64"
    framing: str = "aligned"
    epochs: int = 25
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    seed: int = 0
    hflip: bool = True
    widths: tuple[int, ...] = field(default=VAE_WIDTHS)
    latent_dim: int = 512
    kl_weight: float = 1.0
    recon_vae: str | None = None
    recon_share: float = 0.5
    checkpoint_every: int = 50
    celeba_dir: str | None = None
    threads: int | None = None
    device: str = "auto"

    def validate(self) -> CelebATrainConfig:
        """Check option values (one-line :class:`ConfigError`)."""
        if self.model not in ("vae", "classifier"):
            raise ConfigError(f"unknown model {self.model!r}; use 'vae' or 'classifier'")
        if self.framing not in ("aligned", "detector-crop", "all"):
            raise ConfigError(f"unknown framing {self.framing!r}; use aligned, detector-crop or all")
        if self.recon_vae is not None and self.model != "classifier":
            raise ConfigError("--recon-vae (a VAE whose reconstructions to train on) is for `train classifier`")
        if not 0 <= self.recon_share <= 1:
            raise ConfigError(f"--recon-share must be in [0, 1], got {self.recon_share}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("need --epochs >= 1, --batch-size >= 2 and --lr > 0")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("--threads must be >= 1")
        return self

    @classmethod
    def defaults(cls, model: str, **overrides: Any) -> CelebATrainConfig:
        """The default configuration of ``model`` (see docs/celeba64.md), with ``overrides`` applied."""
        base: dict[str, Any] = (
            {"framing": "aligned", "epochs": 25, "widths": VAE_WIDTHS}
            if model == "vae"
            else {"framing": "all", "epochs": 12, "widths": CLF_WIDTHS}
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, **base)

    def identity(self) -> dict[str, Any]:
        """The fields that define the run's result (compared when resuming)."""
        d = json.loads(json.dumps(asdict(self)))
        for k in ("celeba_dir", "threads", "device", "checkpoint_every"):
            d.pop(k)
        if self.recon_vae is None:  # runs from before these options keep their identity
            d.pop("recon_vae")
            d.pop("recon_share")
        return d


def default_out(model: str) -> Path:
    """Default output directory of ``genunlearn train <model> --dataset celeba64``."""
    return cache_dir() / f"celeba64-{model}"


def build_model(config: CelebATrainConfig, num_attributes: int = 40) -> nn.Module:
    """An untrained model for ``config`` (the classifier predicts ``num_attributes`` attributes)."""
    if config.model == "vae":
        return CelebAVAE(latent_dim=config.latent_dim, widths=config.widths)
    return CelebAClassifier(num_attributes=num_attributes, widths=config.widths)


def build_options(config: CelebATrainConfig, num_attributes: int = 40) -> dict[str, Any]:
    """Constructor options stored in the checkpoint metadata (read by the registry)."""
    if config.model == "vae":
        return {"latent_dim": config.latent_dim, "widths": list(config.widths)}
    return {"widths": list(config.widths), "num_attributes": num_attributes}


def _gen(*key: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    g.manual_seed(seed)
    return g


def _as_float(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images_u8.to(device).float().div_(255.0)


@torch.no_grad()
def evaluate_vae(
    model: CelebAVAE, images_u8: torch.Tensor, *, seed: int = 0, batch_size: int = 256
) -> dict[str, float]:
    """Mean eq.-13 loss per image (and its two terms) on uint8 images, eval mode, fixed noise."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = _gen(seed, 10**6)
    sq = kl = 0.0
    for start in range(0, images_u8.shape[0], batch_size):
        x = _as_float(images_u8[start : start + batch_size], device)
        noise = torch.randn(x.shape[0], model.latent_dim, generator=g).to(device)
        x_mean, mu, logvar = model(x, noise)
        sq += float((x_mean - x).pow(2).sum())
        kl += float(0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum())
    model.train(was_training)
    n = images_u8.shape[0]
    return {"loss": (sq + kl) / n, "squared_error": sq / n, "kl": kl / n}


@torch.no_grad()
def predict_attributes(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Boolean predictions ``(N, A)`` (logit > 0) for uint8 or float images, eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        b = images[start : start + batch_size]
        x = _as_float(b, device) if b.dtype == torch.uint8 else b.to(device)
        out.append((model(x) > 0).cpu())
    model.train(was_training)
    return torch.cat(out)


def attribute_metrics(pred: torch.Tensor, target: torch.Tensor, names: list[str]) -> dict[str, dict[str, float]]:
    """Per attribute: accuracy, balanced accuracy, false-positive and false-negative rates, prevalence."""
    out: dict[str, dict[str, float]] = {}
    t = target.bool()
    for j, name in enumerate(names):
        p, y = pred[:, j], t[:, j]
        pos, neg = int(y.sum()), int((~y).sum())
        tpr = float((p & y).sum()) / pos if pos else float("nan")
        fpr = float((p & ~y).sum()) / neg if neg else float("nan")
        out[name] = {
            "accuracy": float((p == y).float().mean()),
            "balanced_accuracy": 0.5 * (tpr + 1 - fpr),
            "false_positive_rate": fpr,
            "false_negative_rate": 1 - tpr,
            "prevalence": pos / len(y),
            "predicted_rate": float(p.float().mean()),
            "positives": pos,
            "n": len(y),
        }
    return out


@torch.no_grad()
def reconstruct(
    vae: nn.Module, images_u8: torch.Tensor, *, batch_size: int = 256, progress: bool = False
) -> torch.Tensor:
    """The VAE's reconstructions (decoded posterior means, eval mode) of uint8 images, as uint8."""
    device = next(vae.parameters()).device
    was = vae.training
    vae.eval()
    out = []
    for start in tqdm(range(0, images_u8.shape[0], batch_size), desc="reconstruct", disable=not progress, leave=False):
        x = _as_float(images_u8[start : start + batch_size], device)
        mu, _ = vae.encode(x)  # type: ignore[operator]
        out.append(vae.decode(mu).mul(255).round().clamp(0, 255).to(torch.uint8).cpu())  # type: ignore[operator]
    vae.train(was)
    return torch.cat(out)


def _load_split(config: CelebATrainConfig, split: str, progress: bool) -> tuple[CelebA64, torch.Tensor]:
    ds = CelebA64(config.celeba_dir, split=split, framing=config.framing)  # type: ignore[arg-type]
    return ds, ds.load_all(progress=progress)


def train_celeba(
    config: CelebATrainConfig,
    out: str | Path | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train ``config.model`` on CelebA 64x64 and write checkpoints and ``record.json`` into ``out``.

    With ``resume`` a run found in ``out`` (same :meth:`CelebATrainConfig.identity`) continues from its last
    checkpoint; ``stop_after_steps`` ends this call after that many optimizer steps (resumable later).
    Returns the record.
    """
    config.validate()
    out = Path(out) if out is not None else default_out(config.model)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    t_load = time.perf_counter()
    train_ds, train_u8 = _load_split(config, "train", progress)
    test_ds, test_u8 = _load_split(config, "test", progress)
    load_seconds = time.perf_counter() - t_load
    names = train_ds.attribute_names
    train_y = train_ds.attributes.float()
    train_rec = test_rec = None
    if config.recon_vae is not None:
        from genunlearn.models.registry import load_model

        recon_model = load_model("celeba64-vae", config.recon_vae, device=device)
        train_rec = reconstruct(recon_model, train_u8, progress=progress)
        test_rec = reconstruct(recon_model, test_u8, progress=progress)
        del recon_model
    torch.manual_seed(config.seed)
    is_vae = config.model == "vae"
    model = build_model(config, len(names)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    state_path, weights_path, opt_path = out / "state.json", out / "model.safetensors", out / "optimizer.pt"
    n = train_u8.shape[0]
    steps_per_epoch = sum(1 for s in range(0, n, config.batch_size) if n - s >= 2)
    history: list[dict] = []
    epoch, step_in_epoch, running, seconds = 0, 0, 0.0, 0.0
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("identity") != config.identity():
            raise CheckpointError(f"{state_path}: a run with a different config is in this directory")
        load_into(model, weights_path)
        opt.load_state_dict(torch.load(opt_path, map_location=device, weights_only=True))
        epoch, step_in_epoch, running = state["epoch"], state["step_in_epoch"], state["running"]
        history, seconds = state["history"], state.get("train_seconds", 0.0)

    def checkpoint(final: dict | None = None) -> None:
        meta = {
            "train_config": asdict(config),
            "build_options": build_options(config, len(names)),
            "epochs_done": len(history),
            "attribute_names": names,
        }
        if final:
            meta["final"] = final
        save_weights(model, weights_path, metadata=meta)
        atomic_write(opt_path, lambda tmp: torch.save(opt.state_dict(), tmp))
        atomic_write_json(
            state_path,
            {
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "running": running,
                "history": history,
                "train_seconds": seconds,
                "identity": config.identity(),
            },
        )

    total = config.epochs * steps_per_epoch
    bar = tqdm(
        total=total,
        initial=min(total, epoch * steps_per_epoch + step_in_epoch),
        desc=f"train celeba64 {config.model}",
        disable=not progress,
        unit="step",
    )
    steps_this_call = 0
    stopped = False
    while epoch < config.epochs and not stopped:
        model.train()
        if config.lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * epoch / config.epochs))
        g = _gen(config.seed, epoch)
        perm = torch.randperm(n, generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        if train_rec is not None:
            use_rec = torch.rand(n, generator=_gen(config.seed, epoch, 1_000_003)) < config.recon_share
        starts = [s for s in range(0, n, config.batch_size) if n - s >= 2]
        while step_in_epoch < len(starts):
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                stopped = True
                break
            t0 = time.perf_counter()
            idx = perm[starts[step_in_epoch] : starts[step_in_epoch] + config.batch_size]
            x_u8 = train_u8[idx]
            if train_rec is not None:
                x_u8 = torch.where(use_rec[idx][:, None, None, None], train_rec[idx], x_u8)
            x = _as_float(x_u8, device)
            if config.hflip:
                f = flips[idx].to(device)
                x = torch.where(f[:, None, None, None], x.flip(-1), x)
            if is_vae:
                noise = torch.randn(x.shape[0], config.latent_dim, generator=_gen(config.seed, epoch, step_in_epoch))
                loss = celeba_vae_loss(
                    model,  # type: ignore[arg-type]
                    x,
                    reduction="mean",
                    noise=noise.to(device),
                    kl_weight=config.kl_weight,
                )
            else:
                torch.manual_seed(_gen(config.seed, epoch, step_in_epoch).initial_seed())  # dropout masks
                loss = F.binary_cross_entropy_with_logits(model(x), train_y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
            step_in_epoch += 1
            steps_this_call += 1
            seconds += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / step_in_epoch:.4g}")
            if config.checkpoint_every and step_in_epoch % config.checkpoint_every == 0:
                checkpoint()
        if stopped:
            break
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": running / len(starts), "train_seconds": seconds}
        if is_vae:
            row["test"] = evaluate_vae(model, test_u8, seed=config.seed)  # type: ignore[arg-type]
        else:
            m = attribute_metrics(predict_attributes(model, test_u8), test_ds.attributes, names)
            row["test_mean_accuracy"] = sum(v["accuracy"] for v in m.values()) / len(m)
            row["test_accuracy"] = {a: m[a]["accuracy"] for a in KEY_ATTRIBUTES if a in m}
            if test_rec is not None:
                mr = attribute_metrics(predict_attributes(model, test_rec), test_ds.attributes, names)
                row["test_recon_accuracy"] = {a: mr[a]["accuracy"] for a in KEY_ATTRIBUTES if a in mr}
        history.append(row)
        epoch, step_in_epoch, running = epoch + 1, 0, 0.0
        checkpoint()
    bar.close()
    checkpoint()
    complete = epoch >= config.epochs
    final: dict[str, Any] = {}
    if complete:
        model.eval()
        if is_vae:
            final = {
                "test": evaluate_vae(model, test_u8, seed=config.seed),  # type: ignore[arg-type]
                "train": evaluate_vae(model, train_u8, seed=config.seed),  # type: ignore[arg-type]
            }
        else:
            m = attribute_metrics(predict_attributes(model, test_u8), test_ds.attributes, names)
            final = {"test_mean_accuracy": sum(v["accuracy"] for v in m.values()) / len(m), "test": m}
            if test_rec is not None:
                final["test_recon"] = attribute_metrics(predict_attributes(model, test_rec), test_ds.attributes, names)
        checkpoint(final)
    record = {
        "config": asdict(config),
        "parameters": count_parameters(model),
        "train_images": n,
        "test_images": test_u8.shape[0],
        "steps_per_epoch": steps_per_epoch,
        "epochs_done": len(history),
        "complete": complete,
        "final": final,
        "history": history,
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, len(history) * steps_per_epoch + step_in_epoch),
        "data_load_seconds": load_seconds,
        "versions": versions(),
    }
    atomic_write_json(out / "record.json", record)
    return record
