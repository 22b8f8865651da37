"""A diffusers ``DiTPipeline`` (transformer + AutoencoderKL + scheduler) from local files, unlearned in latent space.

``genunlearn unlearn --model diffusers:<local pipeline folder> --data-dir <image folder> --forget 207
--replace-with 208 ...`` loads the pipeline with ``local_files_only=True`` (nothing is downloaded; a missing or
incomplete folder is one clear line), wraps the transformer and the autoencoder in :class:`LatentDiT`, freezes
the autoencoder (``ModelAdapter(frozen=["vae"])``: eval mode, no gradients), and unlearns with the denoising
objective in latent space: each batch of images is encoded by the frozen autoencoder
(``latent = vae.encode(2x - 1).sample() * scaling_factor``), noised on the training DDPM schedule of the
pipeline's scheduler config, and the transformer's noise prediction (the first half of its output channels
when it also predicts a variance, as DiT-XL/2 does) is regressed on the noise. The unlearned transformer is
written in diffusers format into ``<out>/transformer`` (``DiTTransformer2DModel.from_pretrained`` reads it; put
it into the pipeline folder in place of ``transformer/`` to use it).

Data: ``--data-dir`` is an image folder with one sub-folder per class index (``207/``, ``208/``; see
:class:`~genunlearn.data.imagefolder.ImageFolder`), resized to the pipeline's image size. There is no monitor
unless the factory is given a classifier (the paper's ImageNet classifier cannot be downloaded here): pass
``[model.options] classifier = "module:function"`` returning a classifier of images in [0, 1].

Factory options (``[model.options]``): ``sampler_steps`` (25), ``guidance_scale`` (4.0, DiT's), ``classifier``,
``num_classes`` (1000), ``gradient_checkpointing`` (false).
"""

from __future__ import annotations

import copy
import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genunlearn.adapters import ModelAdapter
from genunlearn.errors import CheckpointError, ConfigError
from genunlearn.models.bundle import BuildContext, ConditionalDiffusionSampler, ModelBundle, TrainingData


class LatentDiT(nn.Module):
    """A DiT transformer and its (frozen) autoencoder: ``forward(x_t, t, labels)`` on latents.

    Attributes:
        transformer: a diffusers ``DiTTransformer2DModel``.
        vae: a diffusers ``AutoencoderKL``.
        scaling_factor: the autoencoder's latent scale.
        null_label: the class index of the unconditional embedding (``num_embeds_ada_norm``).
    """

    def __init__(self, transformer: nn.Module, vae: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.null_label = int(transformer.config.num_embeds_ada_norm)
        self.latent_channels = int(transformer.config.in_channels)
        self.latent_size = int(transformer.config.sample_size)
        self.image_size = self.latent_size * 2 ** (len(vae.config.block_out_channels) - 1)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timesteps, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        return self.transformer(x_t, timestep=t, class_labels=labels, return_dict=False)[0]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(B, 3, H, W)`` -> scaled latents (a sample of the autoencoder's posterior)."""
        return self.vae.encode(images * 2.0 - 1.0).latent_dist.sample() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1]."""
        return ((self.vae.decode(latents / self.scaling_factor).sample + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def sample_latent_dit(
    model: LatentDiT,
    labels: torch.Tensor,
    noise: torch.Tensor,
    *,
    scheduler_config: Any,
    steps: int = 25,
    guidance_scale: float = 4.0,
) -> torch.Tensor:
    """Images of classes ``labels`` from initial latent ``noise``, deterministic (DDIM, eta 0, CFG), in [0, 1]."""
    from diffusers import DDIMScheduler

    from genunlearn.adapters import eval_mode

    with eval_mode(model):
        sched = DDIMScheduler.from_config(scheduler_config)
        sched.set_timesteps(steps, device=noise.device)
        x = noise * sched.init_noise_sigma
        null = torch.full_like(labels, model.null_label)
        c = model.latent_channels
        for t in sched.timesteps:
            x_in = sched.scale_model_input(x, t)
            if guidance_scale == 1.0:
                eps = model(x_in, t, labels)[:, :c]
            else:
                eps_c, eps_u = model(torch.cat([x_in, x_in]), t, torch.cat([labels, null]))[:, :c].chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = sched.step(eps, t, x, return_dict=False)[0]
        return model.decode(x)


def save_transformer(model: nn.Module, out: Path) -> list[Path]:
    """Write ``model.transformer`` in diffusers format into ``out/transformer`` (atomically: a sibling temp dir)."""
    target = Path(out) / "transformer"
    tmp = Path(tempfile.mkdtemp(prefix=".transformer.", dir=out))
    try:
        model.transformer.save_pretrained(tmp, safe_serialization=True)  # type: ignore[union-attr]
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        raise CheckpointError(f"{target}: cannot write the unlearned transformer ({exc})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [target]


def _load_classifier(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        clf = getattr(importlib.import_module(module_name), attr)()
    except Exception as exc:
        raise ConfigError(f"classifier {spec!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(clf, nn.Module):
        raise ConfigError(f"classifier {spec!r} did not return an nn.Module")
    return clf


def diffusers_dit(
    context: BuildContext,
    *,
    path: str,
    sampler_steps: int = 25,
    guidance_scale: float = 4.0,
    classifier: str | None = None,
    num_classes: int | None = None,
    gradient_checkpointing: bool = False,
) -> ModelBundle:
    """The bundle of a local diffusers DiT pipeline (see the module docstring)."""
    from diffusers import DDPMScheduler, DiTPipeline

    from genunlearn.data.imagefolder import ImageFolder
    from genunlearn.objectives.diffusion import DiffusionObjective

    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        raise ConfigError(f"diffusers:{path}: not a local diffusers pipeline folder (no model_index.json)")
    try:
        pipe = DiTPipeline.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # diffusers raises OSError, ValueError, EnvironmentError ... for broken folders
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"diffusers:{path}: cannot load the DiT pipeline from local files ({first})") from None
    model = LatentDiT(pipe.transformer, pipe.vae).to(context.device).eval()
    if gradient_checkpointing:
        model.transformer.enable_gradient_checkpointing()
    if context.data_dir is None:
        raise ConfigError(f"diffusers:{path}: give the training images with --data-dir (one folder per class index)")
    images = ImageFolder(context.data_dir, size=model.image_size)
    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = getattr(pipe.scheduler.config, "prediction_type", "epsilon")
    objective = DiffusionObjective(
        ddpm,
        prediction=prediction,
        reduction=context.loss_reduction,
        null_label=model.null_label,
        preprocess=model.encode,
    )
    scheduler_config = pipe.scheduler.config
    original = copy.deepcopy(model).eval()
    return ModelBundle(
        model=ModelAdapter(model, frozen=["vae"]),
        objective=objective,
        conditional_loss=objective.conditional,
        sampler=ConditionalDiffusionSampler(
            shape=(model.latent_channels, model.latent_size, model.latent_size),
            sample=lambda m, y, z: sample_latent_dit(
                m, y, z, scheduler_config=scheduler_config, steps=sampler_steps, guidance_scale=guidance_scale
            ),
            default_label=model.null_label,
        ),
        classifier=_load_classifier(classifier).to(context.device) if classifier else None,
        num_classes=num_classes or model.null_label,
        data=TrainingData(images, images.labels, name=str(context.data_dir)),
        labelled=True,
        description=f"diffusers DiT pipeline {path} (autoencoder frozen, latent space)",
        load_fresh=lambda: ModelAdapter(copy.deepcopy(original), frozen=["vae"]),
        save=save_transformer,
        info={"inputs": {"pipeline": str(folder / "model_index.json")}},
    )
