"""Evaluate the original models the same way: VAE test negative ELBO, classifier test accuracy.

``genunlearn models --evaluate`` prints this table for the bundled weights and, when the shared folder is
present, for the UNO authors' weights (classifier with and without ``bn1``); with ``--out DIR`` it also
writes ``evaluation.json`` (values, weight files with their sha256, provenance) and ``evaluation.md``.
The README's table of the original models is generated from that JSON by ``genunlearn report``, through
:func:`render_evaluation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genunlearn.checkpoints import atomic_write_text
from genunlearn.data import load_dataset
from genunlearn.models import load_model
from genunlearn.models.registry import bundled_weights
from genunlearn.paths import authors_weights
from genunlearn.provenance import file_fingerprint, run_record
from genunlearn.train import evaluate_classifier, evaluate_vae

_METRIC_LABEL = {"neg_elbo": "neg. ELBO (nats/image)", "accuracy": "accuracy"}


def evaluate_models() -> list[dict[str, Any]]:
    """Test metrics of every available original model (value ``None``: weights not found)."""
    test = load_dataset("mnist", "test")
    rows: list[dict[str, Any]] = []
    vae_sources = [
        ("bundled (genunlearn)", bundled_weights("mnist-vae")),
        ("UNO authors", authors_weights("vae.safetensors")),
    ]
    for label, path in vae_sources:
        value = None if path is None else evaluate_vae(load_model("mnist-vae", path), test)
        row = {"model": "mnist-vae", "weights": label, "metric": "neg_elbo", "value": value}
        rows.append({**row, "file": file_fingerprint(path)})
    cls_sources = [
        ("bundled (genunlearn), bn1 applied", bundled_weights("mnist-classifier"), None),
        ("UNO authors, bn1 skipped (their forward)", authors_weights("classifier.safetensors"), False),
        ("UNO authors, bn1 applied", authors_weights("classifier.safetensors"), True),
    ]
    for label, path, bn in cls_sources:
        value = None if path is None else evaluate_classifier(load_model("mnist-classifier", path, use_bn=bn), test)
        rows.append(
            {
                "model": "mnist-classifier",
                "weights": label,
                "metric": "accuracy",
                "value": value,
                "use_bn": bn,
                "file": file_fingerprint(path),
            }
        )
    return rows


def _value(row: Mapping[str, Any]) -> str:
    v = row["value"]
    if v is None:
        return "not found"
    return f"{100 * v:.2f}%" if row["metric"] == "accuracy" else f"{v:.2f}"


def render_evaluation(rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table of :func:`evaluate_models`'s rows."""
    out = ["| model | weights | test metric | value |", "|---|---|---|---|"]
    out += [f"| {r['model']} | {r['weights']} | {_METRIC_LABEL[r['metric']]} | {_value(r)} |" for r in rows]
    return "\n".join(out)


def evaluate_all() -> str:
    """A markdown table of test metrics for every available original model."""
    return render_evaluation(evaluate_models())


def evaluation_markdown(data: Mapping[str, Any]) -> str:
    """``evaluation.md``: the table with the command that made it."""
    cmd = (data.get("provenance") or {}).get("command", {}).get("line", "genunlearn models --evaluate --out DIR")
    return (
        "# Test metrics of the original MNIST models\n\n"
        f"MNIST test split (10,000 images); negative ELBO of paper eq. 12 in nats per image (eval mode, fixed "
        f"reparameterisation noise); classifier top-1 accuracy. Made by `{cmd}`; data in `evaluation.json`.\n\n"
        + render_evaluation(data["rows"])
        + "\n"
    )


def write_evaluation(out: str | Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``evaluation.json`` and ``evaluation.md`` into ``out``; returns the JSON data."""
    from genunlearn.experiments.records import dumps_compact

    out = Path(out)
    data = {"split": "mnist test", "rows": rows, "provenance": run_record({"out": str(out)})}
    atomic_write_text(out / "evaluation.json", dumps_compact(data))
    atomic_write_text(out / "evaluation.md", evaluation_markdown(data))
    return data
