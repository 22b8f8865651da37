"""The built-in model bundles (``--model`` names): each wires a registered generator to its data and classifier.

- ``mnist-vae``: the UNO paper's MNIST VAE (bundled weights, or ``--checkpoint``) on MNIST or any IDX dataset
  (``--dataset NAME --data-dir DIR``; then ``--checkpoint`` and ``--classifier-checkpoint`` must be models
  trained on that dataset with ``genunlearn train vae|classifier --dataset NAME``).
- ``celeba64-vae``: the CelebA 64x64 face VAE (weights from the cache or ``--checkpoint``) for *feature*
  unlearning: ``--forget-attr Male`` (or several, ``--attr-mode any|all``) makes the faces with the feature
  class 1; the monitor's classifier is the attribute classifier reduced to "has the feature" (factory options
  ``framing``, ``cache_images``).
- ``mnist-dit``: the class-conditional MNIST DiT (bundled weights or ``--checkpoint``) with the denoising
  objective over its DDPM schedule, its classifier-free-guided sampler (factory options ``sampler_steps``,
  ``guidance_scale``, ``sampler``, ``gradient_checkpointing``) and the MNIST classifier; batches carry labels.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from genunlearn.errors import ConfigError
from genunlearn.models.bundle import BuildContext, LatentSampler, ModelBundle, TrainingData, register_bundle
from genunlearn.models.mnist_vae import MNISTVAE
from genunlearn.models.registry import bundled_weights, load_model
from genunlearn.objectives.vae import VAEObjective


def _no_attributes(context: BuildContext, name: str) -> None:
    if context.forget_attr:
        raise ConfigError(f"--forget-attr selects features of attribute datasets (celeba64), not of {name}")


def mnist_vae(context: BuildContext) -> ModelBundle:
    """The MNIST VAE with its training data and classifier (see the module docstring)."""
    from genunlearn.data import load_dataset

    _no_attributes(context, "mnist-vae")
    dataset = context.dataset or "mnist"
    if dataset != "mnist" and (context.checkpoint is None or context.classifier_checkpoint is None):
        raise ConfigError(
            f"--dataset {dataset}: pass --checkpoint and --classifier-checkpoint trained on it "
            f"(genunlearn train vae --dataset {dataset} ...; genunlearn train classifier --dataset {dataset} ...)"
        )
    train = load_dataset(dataset, "train", context.data_dir)
    images = train.flat_float().to(context.device)
    vae = load_model("mnist-vae", context.checkpoint, device=context.device, allow_pickle=context.allow_pickle)
    if not isinstance(vae, MNISTVAE):
        raise ConfigError("mnist-vae checkpoint did not produce an MNISTVAE")
    if images.shape[1] != vae.image_size:
        raise ConfigError(
            f"{dataset} images have {images.shape[1]} pixels but the VAE takes {vae.image_size}; "
            "train a VAE on this dataset (genunlearn train vae --dataset ...)"
        )
    classifier = load_model(
        "mnist-classifier",
        context.classifier_checkpoint,
        device=context.device,
        use_bn=context.classifier_bn,
        allow_pickle=context.allow_pickle,
    )
    if classifier.fc1.in_features != images.shape[1]:
        raise ConfigError(
            f"the classifier takes {classifier.fc1.in_features} pixels but {dataset} images have {images.shape[1]}"
        )
    for p in classifier.parameters():
        p.requires_grad_(False)
    original = copy.deepcopy(vae).eval()
    return ModelBundle(
        model=vae,
        objective=VAEObjective("bernoulli", context.loss_reduction),
        sampler=LatentSampler((vae.latent_dim,)),
        classifier=classifier,
        num_classes=classifier.fc2.out_features,
        data=TrainingData(images, train.labels, name=dataset),
        replacement_likelihood="bernoulli",
        description=f"MNIST VAE ({'bundled' if context.checkpoint is None else context.checkpoint}) on {dataset}",
        load_fresh=lambda: copy.deepcopy(original),
        info={
            "inputs": {
                "vae": str(context.checkpoint or bundled_weights("mnist-vae")),
                "classifier": str(context.classifier_checkpoint or bundled_weights("mnist-classifier")),
            }
        },
    )


register_bundle("mnist-vae", mnist_vae)


def _mnist_images_and_classifier(context: BuildContext, model_name: str):
    from genunlearn.data import load_dataset

    dataset = context.dataset or "mnist"
    if dataset != "mnist" and (context.checkpoint is None or context.classifier_checkpoint is None):
        raise ConfigError(
            f"--dataset {dataset}: pass --checkpoint and --classifier-checkpoint trained on it "
            f"(genunlearn train {model_name.split('-')[-1]} --dataset {dataset} ...; "
            f"genunlearn train classifier --dataset {dataset} ...)"
        )
    train = load_dataset(dataset, "train", context.data_dir)
    classifier = load_model(
        "mnist-classifier", context.classifier_checkpoint, device=context.device, use_bn=context.classifier_bn
    )
    for p in classifier.parameters():
        p.requires_grad_(False)
    return dataset, train, classifier


def mnist_dit(
    context: BuildContext,
    *,
    sampler_steps: int = 10,
    guidance_scale: float = 2.0,
    sampler: str = "dpm++",
    gradient_checkpointing: bool = False,
) -> ModelBundle:
    """The class-conditional MNIST DiT with its training data, sampler and classifier (module docstring).

    ``gradient_checkpointing``: recompute the transformer blocks' activations in the backward pass (diffusers'
    non-reentrant checkpointing; S, UNO and UNO-FD give bit-identical directions with it, tested).
    """
    from genunlearn.models.bundle import ConditionalDiffusionSampler
    from genunlearn.models.mnist_dit import SAMPLERS, MnistDiT, sample
    from genunlearn.objectives.diffusion import DiffusionObjective

    _no_attributes(context, "mnist-dit")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler_steps < 1:
        raise ConfigError(f"sampler_steps must be >= 1, got {sampler_steps}")
    dataset, train, classifier = _mnist_images_and_classifier(context, "mnist-dit")
    if context.checkpoint is None and not bundled_weights("mnist-dit").is_file():
        raise ConfigError(
            "no MNIST DiT weights are bundled yet: train one (genunlearn train dit --out runs/dit) "
            "and pass --checkpoint runs/dit/model.safetensors"
        )
    dit = load_model("mnist-dit", context.checkpoint, device=context.device)
    if not isinstance(dit, MnistDiT):
        raise ConfigError("mnist-dit checkpoint did not produce an MnistDiT")
    if gradient_checkpointing:
        dit.transformer.enable_gradient_checkpointing()
    c, side = dit.in_channels, dit.sample_size
    if tuple(train.images.shape[1:]) != (side, side) or c != 1:
        raise ConfigError(f"{dataset} images are {tuple(train.images.shape[1:])}, the DiT makes {c}x{side}x{side}")
    images = train.images.float().div_(255.0).unsqueeze(1).to(context.device)
    objective = DiffusionObjective(
        dit.make_scheduler(),
        prediction="epsilon",
        reduction=context.loss_reduction,
        null_label=dit.null_label,
        preprocess=lambda x: x.reshape(x.shape[0], c, side, side) * 2.0 - 1.0,
    )
    original = copy.deepcopy(dit).eval()
    return ModelBundle(
        model=dit,
        objective=objective,
        conditional_loss=objective.conditional,
        sampler=ConditionalDiffusionSampler(
            shape=(c, side, side),
            sample=lambda m, y, z: sample(m, y, z, steps=sampler_steps, guidance_scale=guidance_scale, sampler=sampler),
            default_label=dit.null_label,
            sample_grad=lambda m, y, z, e: sample(
                m,
                y,
                z,
                steps=sampler_steps,
                guidance_scale=guidance_scale,
                sampler=sampler,
                class_embedding=e,
                grad=True,
            ),
            label_embedding=lambda m, y: m.label_embedding(y),
        ),
        classifier=classifier,
        num_classes=dit.num_classes,
        data=TrainingData(images, train.labels, name=dataset),
        labelled=True,
        description=(
            f"MNIST DiT ({'bundled' if context.checkpoint is None else context.checkpoint}) on {dataset}; "
            f"{sampler} {sampler_steps} steps, guidance {guidance_scale}"
        ),
        load_fresh=lambda: copy.deepcopy(original),
        info={
            "inputs": {
                "dit": str(context.checkpoint or bundled_weights("mnist-dit")),
                "classifier": str(context.classifier_checkpoint or bundled_weights("mnist-classifier")),
            },
            "sampler": {"sampler": sampler, "steps": sampler_steps, "guidance_scale": guidance_scale},
        },
    )


register_bundle("mnist-dit", mnist_dit)


class AttributeDetector(torch.nn.Module):
    """A multi-label attribute classifier reduced to two classes, "without" (0) and "with" (1) the feature.

    The logit of the feature is the largest (``how="any"``) or smallest (``"all"``) of the attributes' logits,
    so ``softmax([0, s])[1] = sigmoid(s)`` is the classifier's probability of the feature (for one attribute)
    and ``argmax`` says whether it sees it. ``features`` are the classifier's (for FID).
    """

    def __init__(self, classifier: torch.nn.Module, indices: list[int], how: str = "any") -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long), persistent=False)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x)[:, self.indices]
        s = logits.max(1).values if self.how == "any" else logits.min(1).values
        return torch.stack([torch.zeros_like(s), s], 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)  # type: ignore[operator]


def celeba64_vae(context: BuildContext, *, framing: str = "aligned", cache_images: bool = False) -> ModelBundle:
    """The CelebA face VAE for feature unlearning (see the module docstring)."""
    from genunlearn.data.celeba import CelebA64

    if context.dataset not in (None, "celeba64"):
        raise ConfigError(f"celeba64-vae is trained on celeba64, not {context.dataset}")
    if not context.forget_attr:
        raise ConfigError("celeba64-vae unlearns features: name them with --forget-attr (e.g. Male)")
    faces = CelebA64(context.data_dir, split="train", framing=framing, cache=cache_images)  # type: ignore[arg-type]
    labels = faces.forget_mask(list(context.forget_attr), context.attr_mode).long()  # type: ignore[arg-type]
    vae = load_model("celeba64-vae", context.checkpoint, device=context.device)
    clf = load_model("celeba64-classifier", context.classifier_checkpoint, device=context.device)
    for p in clf.parameters():
        p.requires_grad_(False)
    detector = AttributeDetector(clf, [faces.attribute_index(a) for a in context.forget_attr], context.attr_mode)
    original = copy.deepcopy(vae).eval()
    feature = ("|" if context.attr_mode == "any" else "&").join(context.forget_attr)
    from genunlearn.models.registry import cached_weights

    return ModelBundle(
        model=vae,
        objective=VAEObjective("mse", context.loss_reduction),
        sampler=LatentSampler((vae.latent_dim,)),
        classifier=detector.to(context.device).eval(),
        num_classes=2,
        data=TrainingData(faces, labels, name=f"celeba64 ({framing}, train split)"),
        replacement_likelihood="mse",
        description=f"CelebA 64x64 VAE, forget {feature}",
        load_fresh=lambda: copy.deepcopy(original),
        info={
            "inputs": {
                "vae": str(context.checkpoint or cached_weights("celeba64-vae")),
                "classifier": str(context.classifier_checkpoint or cached_weights("celeba64-classifier")),
            },
            "attribute_classifier": clf,
            "attribute_names": faces.attribute_names,
            "dataset": faces,
        },
    )


register_bundle("celeba64-vae", celeba64_vae)


def _save_i2i(model: torch.nn.Module, out: Path) -> list[Path]:
    """``model.safetensors`` with the build options (task, mask size), so ``load_model("mnist-i2i", path)``
    rebuilds an unlearned outpainting model as one."""
    from genunlearn.checkpoints import save_weights

    return [save_weights(model, out / "model.safetensors", metadata={"build_options": model.build_options()})]


#: What the ``mnist-i2i`` bundle's retain and forget losses are.
I2I_OBJECTIVES = ("reconstruction", "embedding")


def mnist_i2i(
    context: BuildContext,
    *,
    task: str = "inpaint",
    objective: str = "reconstruction",
    train_decoder: bool = False,
    noise_mean: float | None = None,
    noise_std: float | None = None,
) -> ModelBundle:
    """The MNIST I2I model with its data, the MNIST classifier and an I2I objective (see the module docstring).

    ``noise_mean`` / ``noise_std``: the embedding task's per-pixel Gaussian noise (default: the training images'
    pixel mean and standard deviation, :mod:`genunlearn.objectives.i2i`).
    """
    from genunlearn.adapters import ModelAdapter
    from genunlearn.models.mnist_i2i import MNISTI2I, check_task
    from genunlearn.models.registry import i2i_weights
    from genunlearn.objectives.i2i import I2IEmbeddingTask, I2IReconstruction, NoiseImages

    _no_attributes(context, "mnist-i2i")
    check_task(task)
    if objective not in I2I_OBJECTIVES:
        raise ConfigError(f"unknown I2I objective {objective!r}; use one of {', '.join(I2I_OBJECTIVES)}")
    dataset, train, classifier = _mnist_images_and_classifier(context, "mnist-i2i")
    images = train.flat_float().reshape(-1, 1, *train.images.shape[1:]).to(context.device)
    weights = context.checkpoint or i2i_weights(task)
    model = load_model("mnist-i2i", weights, device=context.device, allow_pickle=context.allow_pickle)
    if not isinstance(model, MNISTI2I) or model.task != task:
        raise ConfigError(f"{weights}: an I2I model for {getattr(model, 'task', '?')}, not {task} (set task)")
    if images.shape[2:] != model.mask.shape[2:]:
        raise ConfigError(f"{dataset} images are {tuple(images.shape[2:])}, the I2I model takes 28x28")
    stats = images if noise_mean is None or noise_std is None else None
    noise = NoiseImages(
        mean=float(stats.mean()) if noise_mean is None else noise_mean,  # type: ignore[union-attr]
        std=float(stats.std()) if noise_std is None else noise_std,  # type: ignore[union-attr]
    )
    original = copy.deepcopy(model).eval()
    frozen = [] if train_decoder else ["decoder"]
    return ModelBundle(
        model=ModelAdapter(model, frozen=frozen),
        objective=I2IReconstruction(reduction=context.loss_reduction),
        task=I2IEmbeddingTask.from_model(model, noise=noise) if objective == "embedding" else None,
        classifier=classifier,
        num_classes=classifier.fc2.out_features,
        data=TrainingData(images, train.labels, name=dataset),
        description=f"MNIST I2I {task} ({weights}) on {dataset}, {objective} objective",
        load_fresh=lambda: ModelAdapter(copy.deepcopy(original), frozen=frozen),
        save=_save_i2i,
        info={
            "inputs": {
                "i2i": str(weights),
                "classifier": str(context.classifier_checkpoint or bundled_weights("mnist-classifier")),
            },
            "noise": {"mean": noise.mean, "std": noise.std},
        },
    )


register_bundle("mnist-i2i", mnist_i2i)
