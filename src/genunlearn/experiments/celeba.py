"""The original CelebA 64x64 models, measured: ``genunlearn bench celeba64-original --out results/celeba64/original``.

Writes tables and figures only (never weights, never CelebA's own images):

- ``summary.json`` — command line, git commit, machine, versions, checkpoints (sha256), and every number below;
- ``report.md`` — the tables (``genunlearn report`` regenerates it from ``summary.json``);
- ``vae.md`` — eq.-13 loss per image (squared error + KL) on the held-out and training images of the VAE's
  framing (eval mode, fixed noise);
- ``classifier.csv`` — per-attribute accuracy, balanced accuracy, false-positive / false-negative rates of the
  attribute classifier on the held-out split (both framings, and aligned only);
- ``generated_attributes.csv`` — rates of every attribute among ``samples`` faces generated from the prior
  (fixed latents, eval mode; and train-mode BatchNorm in batches of 128, as the UNO reference code generates),
  with Wilson 95% intervals: the baseline "forget fraction" of feature unlearning;
- FID from the classifier's 256-d features (:func:`genunlearn.eval.fid.face_fid`): generated vs held-out real
  faces, and the real-vs-real floor (training vs held-out real faces) for scale;
- ``samples.png`` (64 faces from fixed latents), ``reconstructions.png`` (reconstructions of the first 32
  held-out faces from the posterior mean; the real faces themselves are CelebA's and are not written unless
  ``show_originals``, into a git-ignored ``*.local.png``).
"""

from __future__ import annotations

import copy
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write_csv, atomic_write_json, atomic_write_text, read_metadata
from genunlearn.data.celeba import CelebA64
from genunlearn.eval.fid import face_fid
from genunlearn.eval.figures import rgb_grid
from genunlearn.eval.monitor import wilson_interval
from genunlearn.models.registry import cached_weights, load_model
from genunlearn.provenance import command_line
from genunlearn.runinfo import git_commit, machine, versions
from genunlearn.train_celeba import (
    KEY_ATTRIBUTES,
    attribute_metrics,
    evaluate_vae,
    predict_attributes,
    reconstruct,
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@torch.no_grad()
def _generate(vae: torch.nn.Module, z: torch.Tensor, batch_size: int, train_mode: bool) -> torch.Tensor:
    """Decode latents in batches; train mode uses BatchNorm batch statistics on a copy (buffers untouched)."""
    model = copy.deepcopy(vae).train() if train_mode else vae.eval()
    return torch.cat([model.decode(b) for b in z.split(batch_size)])


def _rates(pred: torch.Tensor, names: list[str]) -> dict[str, dict[str, float]]:
    n = pred.shape[0]
    out = {}
    for j, name in enumerate(names):
        k = int(pred[:, j].sum())
        lo, hi = wilson_interval(k, n)
        out[name] = {"rate": k / n, "count": k, "n": n, "ci_low": lo, "ci_high": hi}
    return out


def original_report(
    out: str | Path,
    *,
    vae_checkpoint: str | Path | None = None,
    classifier_checkpoint: str | Path | None = None,
    celeba_dir: str | Path | None = None,
    samples: int = 10_000,
    seed: int = 0,
    inception_weights: str | Path | None = None,
    independent_classifier: str | Path | None = None,
    batch_size: int = 500,
    show_originals: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure the original face VAE and attribute classifier and write the report into ``out``.

    ``show_originals`` also writes ``reconstructions-with-originals.local.png`` (held-out CelebA images next to
    their reconstructions); CelebA's license forbids redistributing it, so ``*.local.png`` is git-ignored.
    """
    t0 = time.perf_counter()
    out = Path(out)
    vae_path = Path(vae_checkpoint) if vae_checkpoint else cached_weights("celeba64-vae")
    clf_path = Path(classifier_checkpoint) if classifier_checkpoint else cached_weights("celeba64-classifier")
    vae = load_model("celeba64-vae", vae_checkpoint)
    clf = load_model("celeba64-classifier", classifier_checkpoint)
    vae_meta, clf_meta = read_metadata(vae_path), read_metadata(clf_path)
    vae_framing = vae_meta.get("train_config", {}).get("framing", "aligned")
    out.mkdir(parents=True, exist_ok=True)

    # held-out data
    test_vae = CelebA64(celeba_dir, split="test", framing=vae_framing)
    train_vae = CelebA64(celeba_dir, split="train", framing=vae_framing)
    test_all = CelebA64(celeba_dir, split="test", framing="all")
    names = test_all.attribute_names
    test_vae_u8 = test_vae.load_all(progress=progress)
    train_vae_u8 = train_vae.load_all(progress=progress)
    test_all_u8 = test_all.load_all(progress=progress)

    # VAE loss (eq. 13 per image)
    vae_loss = {"test": evaluate_vae(vae, test_vae_u8, seed=seed), "train": evaluate_vae(vae, train_vae_u8, seed=seed)}

    # classifier on held-out real faces
    pred_all = predict_attributes(clf, test_all_u8)
    clf_all = attribute_metrics(pred_all, test_all.attributes, names)
    aligned_mask = torch.tensor([f == "aligned" for f in test_all.framings])
    clf_aligned = attribute_metrics(pred_all[aligned_mask], test_all.attributes[aligned_mask], names)

    # generated faces: attribute rates and FID
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, vae.latent_dim, generator=g)
    fid = face_fid(clf, inception_weights=inception_weights)
    fid.update_batches(test_vae_u8.float().div(255), real=True, batch_size=batch_size)
    clf2 = None if independent_classifier is None else load_model("celeba64-classifier", independent_classifier)
    preds_eval, preds_train, preds_indep = [], [], []
    for zb in tqdm(z.split(batch_size), desc="generate", disable=not progress, leave=False):
        imgs = _generate(vae, zb, batch_size, train_mode=False)
        preds_eval.append(predict_attributes(clf, imgs))
        if clf2 is not None:
            preds_indep.append(predict_attributes(clf2, imgs))
        fid.update(imgs, real=False)
        preds_train.append(predict_attributes(clf, _generate(vae, zb, 128, train_mode=True)))
    fid_generated = float(fid.compute())
    fid_floor = face_fid(clf, inception_weights=inception_weights)
    fid_floor.update_batches(test_vae_u8.float().div(255), real=True, batch_size=batch_size)
    k = min(samples, train_vae_u8.shape[0])
    floor_idx = torch.randperm(train_vae_u8.shape[0], generator=torch.Generator().manual_seed(seed))[:k]
    fid_floor.update_batches(train_vae_u8[floor_idx].float().div(255), real=False, batch_size=batch_size)
    fid_real = float(fid_floor.compute())
    gen_eval = _rates(torch.cat(preds_eval), names)
    gen_train = _rates(torch.cat(preds_train), names)
    real_pred_vae = _rates(predict_attributes(clf, test_vae_u8), names)
    real_true_vae = _rates(test_vae.attributes.bool(), names)
    # the classifier on the VAE's own domain: its reconstructions of held-out faces (labels known)
    recon_u8 = reconstruct(vae, test_vae_u8)
    clf_recon = attribute_metrics(predict_attributes(clf, recon_u8), test_vae.attributes, names)
    indep_recon = indep_generated = None
    if clf2 is not None:
        indep_recon = attribute_metrics(predict_attributes(clf2, recon_u8), test_vae.attributes, names)
        indep_generated = _rates(torch.cat(preds_indep), names)

    # figures
    with torch.no_grad():
        rgb_grid(_generate(vae, z[:64], 64, train_mode=False), out / "samples.png", nrow=8)
        cols = min(8, test_vae_u8.shape[0])
        rows = min(4, test_vae_u8.shape[0] // cols)
        originals = test_vae_u8[: rows * cols].float().div(255)
        mu, _ = vae.eval().encode(originals)
        recon = vae.decode(mu)
    rgb_grid(recon, out / "reconstructions.png", nrow=cols)
    if show_originals:  # CelebA's own images: keep this file out of any repository (license)
        shape = (rows, cols, 3, *originals.shape[2:])
        pairs = torch.stack([originals.view(shape), recon.view(shape)], dim=1).reshape(-1, *originals.shape[1:])
        rgb_grid(pairs, out / "reconstructions-with-originals.local.png", nrow=cols)

    fid_kind = "inception" if type(fid).__name__ == "InceptionFID" else "classifier-features"
    summary: dict[str, Any] = {
        "command": command_line() if sys.argv and sys.argv[0] else None,
        "git_commit": git_commit(),
        "machine": machine(),
        "versions": versions(),
        "seconds": None,
        "seed": seed,
        "checkpoints": {
            "vae": {"path": str(vae_path), "sha256": _sha256(vae_path), "train_config": vae_meta.get("train_config")},
            "classifier": {
                "path": str(clf_path),
                "sha256": _sha256(clf_path),
                "train_config": clf_meta.get("train_config"),
            },
        },
        "vae": {
            "framing": vae_framing,
            "parameters": sum(p.numel() for p in vae.parameters()),
            "test_images": test_vae_u8.shape[0],
            "train_images": train_vae_u8.shape[0],
            "loss_per_image": vae_loss,
        },
        "classifier": {
            "parameters": sum(p.numel() for p in clf.parameters()),
            "test_images": test_all_u8.shape[0],
            "test_images_aligned": int(aligned_mask.sum()),
            "test_all_framings": clf_all,
            "test_aligned": clf_aligned,
            "test_vae_reconstructions": clf_recon,
        },
        "independent_classifier": None
        if independent_classifier is None
        else {
            "path": str(independent_classifier),
            "sha256": _sha256(Path(independent_classifier)),
            "test_vae_reconstructions": indep_recon,
            "generated_eval_mode": indep_generated,
        },
        "generated": {"samples": samples, "eval_mode": gen_eval, "train_mode_batches_of_128": gen_train},
        "real_heldout_vae_framing": {"predicted": real_pred_vae, "labels": real_true_vae},
        "fid": {
            "features": fid_kind,
            "generated_vs_heldout": fid_generated,
            "real_train_vs_heldout": fid_real,
            "generated_samples": samples,
            "real_train_samples": k,
            "heldout_samples": test_vae_u8.shape[0],
        },
    }
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", summary)
    atomic_write_csv(
        out / "classifier.csv",
        [{"attribute": a, "framing": "all", **clf_all[a]} for a in names]
        + [{"attribute": a, "framing": "aligned", **clf_aligned[a]} for a in names],
    )
    atomic_write_csv(
        out / "generated_attributes.csv",
        [
            {
                "attribute": a,
                "generated_rate": gen_eval[a]["rate"],
                "generated_ci_low": gen_eval[a]["ci_low"],
                "generated_ci_high": gen_eval[a]["ci_high"],
                "generated_train_bn_rate": gen_train[a]["rate"],
                "heldout_predicted_rate": real_pred_vae[a]["rate"],
                "heldout_label_rate": real_true_vae[a]["rate"],
            }
            for a in names
        ],
    )
    atomic_write_text(out / "report.md", render_report(summary))
    return summary


def _as_typed(command: str | None) -> str | None:
    """A stored command line as a user types it (``.../bin/genunlearn`` -> ``genunlearn``; older summaries)."""
    import shlex

    return command if not command else command_line(shlex.split(command))


def render_report(s: dict[str, Any]) -> str:
    """The markdown tables of :func:`original_report`."""
    v, c, gen, fid = s["vae"], s["classifier"], s["generated"], s["fid"]
    lines = [
        "# The original CelebA 64x64 models",
        "",
        f"Regenerate: `{_as_typed(s['command'])}` (commit {s['git_commit']}, {s['machine']['cpu']}, "
        f"{s['machine']['cpu_count']} cores, {s['seconds']:.0f} s).",
        "",
        f"## VAE ({v['parameters']:,} parameters, trained on `{v['framing']}` images)",
        "",
        "Loss of paper eq. 13 per image (squared error summed over 3x64x64 values in [0, 1], plus KL), "
        "eval mode, fixed noise:",
        "",
        "| images | n | loss | squared error | KL |",
        "|---|---|---|---|---|",
    ]
    for split in ("test", "train"):
        m = v["loss_per_image"][split]
        n = v["test_images"] if split == "test" else v["train_images"]
        label = "held-out" if split == "test" else "training"
        lines.append(f"| {label} | {n:,} | {m['loss']:.2f} | {m['squared_error']:.2f} | {m['kl']:.2f} |")
    lines += [
        "",
        "![samples](samples.png) ![reconstructions](reconstructions.png)",
        "",
        "`samples.png`: 64 faces from fixed latents (eval mode). `reconstructions.png`: reconstructions of the "
        "first 32 held-out faces from the posterior mean (the real faces are not reproduced: CelebA's license).",
        "",
        f"## Attributes among {gen['samples']:,} generated faces (classifier, Wilson 95% interval)",
        "",
        "| attribute | generated (eval BN) | 95% CI | generated (train BN, batches of 128) "
        "| held-out real: predicted | held-out real: labels |",
        "|---|---|---|---|---|---|",
    ]
    for a in [a for a in KEY_ATTRIBUTES if a in gen["eval_mode"]]:
        e, t = gen["eval_mode"][a], gen["train_mode_batches_of_128"][a]
        rp, rl = s["real_heldout_vae_framing"]["predicted"][a], s["real_heldout_vae_framing"]["labels"][a]
        lines.append(
            f"| {a} | {e['rate']:.4f} | [{e['ci_low']:.4f}, {e['ci_high']:.4f}] | {t['rate']:.4f} "
            f"| {rp['rate']:.4f} | {rl['rate']:.4f} |"
        )
    lines += [
        "",
        f"## FID ({fid['features']})",
        "",
        "Classifier-feature FID is NOT comparable with Inception FID (the paper's numbers); compare only rows here.",
        "",
        "| compared sets | FID |",
        "|---|---|",
        f"| {fid['generated_samples']:,} generated vs {fid['heldout_samples']:,} held-out real | "
        f"{fid['generated_vs_heldout']:.3f} |",
        f"| {fid['real_train_samples']:,} training real vs {fid['heldout_samples']:,} held-out real (floor) | "
        f"{fid['real_train_vs_heldout']:.3f} |",
        "",
    ]
    if c.get("test_vae_reconstructions"):
        lines += _recon_section(c["test_vae_reconstructions"], s.get("independent_classifier"), v["test_images"])
    lines += [
        f"## Classifier ({c['parameters']:,} parameters) on held-out real faces",
        "",
        f"{c['test_images']:,} held-out images of both framings ({c['test_images_aligned']:,} aligned). "
        "FPR: false-positive rate (negatives predicted positive), FNR: false-negative rate.",
        "",
        "| attribute | accuracy | balanced acc. | FPR | FNR | accuracy (aligned) | FPR (aligned) | prevalence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = sorted(c["test_all_framings"], key=lambda a: (a not in KEY_ATTRIBUTES, a))
    for a in names:
        m, al = c["test_all_framings"][a], c["test_aligned"][a]
        lines.append(
            f"| {a} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} | {m['false_positive_rate']:.4f} "
            f"| {m['false_negative_rate']:.4f} | {al['accuracy']:.4f} | {al['false_positive_rate']:.4f} "
            f"| {m['prevalence']:.3f} |"
        )
    mean_acc = sum(m["accuracy"] for m in c["test_all_framings"].values()) / len(c["test_all_framings"])
    lines += ["", f"Mean accuracy over the {len(names)} attributes: {mean_acc:.4f}.", ""]
    return "\n".join(lines)


def _recon_section(rec: dict, ind: dict | None, n: int) -> list[str]:
    """The classifier(s) on the VAE's reconstructions of held-out faces: the domain of generated faces."""
    out = [
        "## The classifiers on the VAE's own domain: reconstructions of held-out faces",
        "",
        f"The VAE's reconstructions (posterior mean) of the {n:,} held-out faces of its framing, with their real "
        "labels: how well the classifiers see attributes in the VAE's blurry outputs. TPR: share of faces with "
        "the attribute called so; FPR: share of faces without it called so (the floor of a forget fraction).",
        "",
        "| attribute | TPR | FPR | independent: TPR | independent: FPR | generated, independent |",
        "|---|---|---|---|---|---|",
    ]
    for a in [a for a in KEY_ATTRIBUTES if a in rec]:
        m = rec[a]
        tpr = 1 - m["false_negative_rate"]
        cells = [f"{tpr:.4f}", f"{m['false_positive_rate']:.4f}"]
        if ind and ind.get("test_vae_reconstructions"):
            mi = ind["test_vae_reconstructions"][a]
            g = ind["generated_eval_mode"][a]
            cells += [f"{1 - mi['false_negative_rate']:.4f}", f"{mi['false_positive_rate']:.4f}", f"{g['rate']:.4f}"]
        else:
            cells += ["—", "—", "—"]
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    return [*out, ""]
