"""The built-in model bundles (``--model`` names): each wires a registered generator to its data and classifier.

- ``mnist-vae``: the UNO paper's MNIST VAE (bundled weights, or ``--checkpoint``) on MNIST or any IDX dataset
  (``--dataset NAME --data-dir DIR``; then ``--checkpoint`` and ``--classifier-checkpoint`` must be models
  trained on that dataset with ``genunlearn train vae|classifier --dataset NAME``).
"""

from __future__ import annotations

import copy

from genunlearn.errors import ConfigError
from genunlearn.models.bundle import BuildContext, LatentSampler, ModelBundle, TrainingData, register_bundle
from genunlearn.models.mnist_vae import MNISTVAE
from genunlearn.models.registry import bundled_weights, load_model
from genunlearn.objectives.vae import VAEObjective


def mnist_vae(context: BuildContext) -> ModelBundle:
    """The MNIST VAE with its training data and classifier (see the module docstring)."""
    from genunlearn.data import load_dataset

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
