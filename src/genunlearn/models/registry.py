"""Model registry: a name maps to a builder, bundled weights and (optionally) the paper authors' weights.

Models trained on data genunlearn may not redistribute (CelebA) ship no weights: they are read from the
cache (``$GENUNLEARN_CACHE/<name>/model.safetensors``, default ``~/.cache/genunlearn``), where
``genunlearn train ...`` writes them, or from an explicit checkpoint.

>>> sorted(MODELS)
['celeba64-classifier', 'celeba64-vae', 'mnist-classifier', 'mnist-dit', 'mnist-i2i', 'mnist-vae']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genunlearn.checkpoints import file_format, load_into, read_metadata
from genunlearn.errors import CheckpointError, ConfigError
from genunlearn.models.celeba_classifier import CelebAClassifier
from genunlearn.models.celeba_vae import CelebAVAE
from genunlearn.models.mnist_classifier import MNISTClassifier
from genunlearn.models.mnist_i2i import MNISTI2I
from genunlearn.models.mnist_vae import MNISTVAE
from genunlearn.paths import cache_dir


@dataclass(frozen=True)
class ModelSpec:
    """How to build a registered model and where its weights are.

    Attributes:
        name: registry name (``"mnist-vae"``).
        kind: ``"generator"`` or ``"classifier"``.
        description: one line for ``genunlearn models``.
        build: builder taking keyword options (e.g. ``use_bn``), returns an untrained module.
        bundled: file name of the weights shipped in ``genunlearn/models/weights`` (or ``None``).
        authors_file: file name of the UNO authors' weights in ``shared/anchors/uno-paper-mnist``.
        dataset: dataset the model was trained on.
        train_command: for models without bundled weights, the command that writes them into the cache.
    """

    name: str
    kind: str
    description: str
    build: Callable[..., nn.Module]
    bundled: str | None
    authors_file: str | None
    dataset: str
    train_command: str | None = None


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (name must be new)."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} already registered")
    MODELS[spec.name] = spec
    return spec


register_model(
    ModelSpec(
        name="mnist-vae",
        kind="generator",
        description="UNO paper's MNIST VAE (632,788 params, 2-D latent), Bernoulli decoder",
        build=lambda **kw: MNISTVAE(**{k: kw[k] for k in ("latent_dim", "hidden", "image_size") if k in kw}),
        bundled="mnist-vae.safetensors",
        authors_file="vae.safetensors",
        dataset="mnist",
    )
)
register_model(
    ModelSpec(
        name="mnist-classifier",
        kind="classifier",
        description="UNO paper's MNIST classifier (159,410 params), monitor and FID features",
        build=lambda use_bn=False, **kw: MNISTClassifier(
            use_bn=use_bn, **{k: kw[k] for k in ("hidden", "num_classes", "in_features") if k in kw}
        ),
        bundled="mnist-classifier.safetensors",
        authors_file="classifier.safetensors",
        dataset="mnist",
    )
)
register_model(
    ModelSpec(
        name="celeba64-vae",
        kind="generator",
        description="CelebA 64x64 conv VAE (8,742,659 params, 512-D latent, BatchNorm), eq. 13; weights from cache",
        build=lambda latent_dim=512, widths=None, **kw: CelebAVAE(latent_dim=latent_dim, **_widths(widths)),
        bundled=None,
        authors_file=None,
        dataset="celeba64",
        train_command="genunlearn train vae --dataset celeba64",
    )
)
register_model(
    ModelSpec(
        name="celeba64-classifier",
        kind="classifier",
        description="CelebA 64x64 40-attribute classifier (BatchNorm), monitor and FID features; weights from cache",
        build=lambda widths=None, num_attributes=40, **kw: CelebAClassifier(num_attributes, **_widths(widths)),
        bundled=None,
        authors_file=None,
        dataset="celeba64",
        train_command="genunlearn train classifier --dataset celeba64",
    )
)


def _widths(widths: Any) -> dict[str, Any]:
    return {} if widths is None else {"widths": tuple(widths)}


def cached_weights(name: str) -> Path:
    """Where ``genunlearn train`` puts the weights of model ``name`` (``<cache>/<name>/model.safetensors``)."""
    return cache_dir() / name / "model.safetensors"


def _build_dit(**options: Any) -> nn.Module:
    from genunlearn.models.mnist_dit import MnistDiT  # imports diffusers: only when a DiT is built

    return MnistDiT(**options)


register_model(
    ModelSpec(
        name="mnist-dit",
        kind="generator",
        description="class-conditional pixel-space DiT (diffusers, 1.43M params), DDPM eps, CFG null label 10",
        build=_build_dit,
        bundled="mnist-dit.safetensors",
        authors_file=None,
        dataset="mnist",
    )
)


register_model(
    ModelSpec(
        name="mnist-i2i",
        kind="generator",
        description="MNIST image-to-image conv encoder-decoder (136,321 params), inpaint or outpaint (option task)",
        build=lambda **kw: MNISTI2I(**kw),
        bundled="mnist-i2i-inpaint.safetensors",
        authors_file=None,
        dataset="mnist",
    )
)


def i2i_weights(task: str) -> Path:
    """The bundled weights of the MNIST I2I model for ``task`` (``"inpaint"`` or ``"outpaint"``)."""
    from genunlearn.models.mnist_i2i import check_task

    return bundled_weights("mnist-i2i").with_name(f"mnist-i2i-{check_task(task)}.safetensors")


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or a one-line error listing the names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}") from None


def bundled_weights(name: str) -> Path:
    """Path of the weights shipped with genunlearn for model ``name``."""
    spec = get_spec(name)
    if spec.bundled is None:
        raise CheckpointError(f"model {name!r} ships no weights; pass --checkpoint")
    return Path(str(resources.files("genunlearn") / "models" / "weights" / spec.bundled))


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    **options: Any,
) -> nn.Module:
    """Build model ``name`` and load weights (bundled or cached ones unless ``checkpoint`` is given), strictly.

    Options stored in the checkpoint's metadata (e.g. ``use_bn`` for the classifier) are applied unless
    overridden by ``options``. The model is returned in eval mode on ``device``. A torch checkpoint that holds
    pickled objects beyond tensors is refused unless ``allow_pickle``.
    """
    spec = get_spec(name)
    if checkpoint is None and spec.bundled is None and spec.train_command is not None:
        path = cached_weights(name)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no weights for {name}; create them with `{spec.train_command}` or pass --checkpoint"
            )
    else:
        path = Path(checkpoint) if checkpoint is not None else bundled_weights(name)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    meta = read_metadata(path) if file_format(path) == "safetensors" else {}
    build_opts = dict(meta.get("build_options", {}))
    build_opts.update({k: v for k, v in options.items() if v is not None})
    model = spec.build(**build_opts)
    load_into(model, path, allow_pickle=allow_pickle)
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
