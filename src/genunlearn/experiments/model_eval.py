"""Evaluate the original models the same way: VAE test negative ELBO, classifier test accuracy.

``genunlearn models --evaluate`` prints this table for the bundled weights and, when the shared folder is
present, for the UNO authors' weights (classifier with and without ``bn1``).
"""

from __future__ import annotations

from genunlearn.data import load_dataset
from genunlearn.models import load_model
from genunlearn.models.registry import bundled_weights
from genunlearn.paths import authors_weights
from genunlearn.train import evaluate_classifier, evaluate_vae


def evaluate_all() -> str:
    """A markdown table of test metrics for every available original model."""
    test = load_dataset("mnist", "test")
    rows = ["| model | weights | test metric | value |", "|---|---|---|---|"]
    vae_sources = [
        ("bundled (genunlearn)", bundled_weights("mnist-vae")),
        ("UNO authors", authors_weights("vae.safetensors")),
    ]
    for label, path in vae_sources:
        if path is None:
            rows.append(f"| mnist-vae | {label} | neg. ELBO (nats/image) | not found |")
            continue
        vae = load_model("mnist-vae", path)
        rows.append(f"| mnist-vae | {label} | neg. ELBO (nats/image) | {evaluate_vae(vae, test):.2f} |")
    cls_sources = [
        ("bundled (genunlearn), bn1 applied", bundled_weights("mnist-classifier"), None),
        ("UNO authors, bn1 skipped (their forward)", authors_weights("classifier.safetensors"), False),
        ("UNO authors, bn1 applied", authors_weights("classifier.safetensors"), True),
    ]
    for label, path, bn in cls_sources:
        if path is None:
            rows.append(f"| mnist-classifier | {label} | accuracy | not found |")
            continue
        clf = load_model("mnist-classifier", path, use_bn=bn)
        rows.append(f"| mnist-classifier | {label} | accuracy | {100 * evaluate_classifier(clf, test):.2f}% |")
    return "\n".join(rows)
