"""Unlearning a digit from an MNIST VAE: the assembly of data, models, monitor, hat term and FID.

This is the code behind ``genunlearn unlearn --model mnist-vae``; the engine itself is model-agnostic
(:func:`genunlearn.loop.unlearn`), this file is one user of it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genunlearn.checkpoints import atomic_write_json, save_weights
from genunlearn.data import ForgetSplit, load_dataset
from genunlearn.errors import CheckpointError, ConfigError
from genunlearn.eval.fid import ClassifierFID
from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.experiments.records import mnist_inputs
from genunlearn.loop import UnlearnConfig, UnlearnResult, unlearn
from genunlearn.methods import METHODS
from genunlearn.models import MNISTVAE, load_model
from genunlearn.objectives import HatTerm, LatentReplacement, StandardTask, vae_objective
from genunlearn.provenance import run_record
from genunlearn.runinfo import resolve_device, versions


def generate_from(model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Decode latents with the VAE (images in [0, 1], flattened)."""
    return model.decode(latents)


@dataclass(frozen=True)
class MnistUnlearnSpec:
    """What to unlearn and how to measure it.

    Attributes:
        forget: digit(s) to forget.
        checkpoint: VAE weights (``None``: bundled); never overwritten.
        classifier_checkpoint: monitor/FID classifier (``None``: bundled).
        classifier_bn: override the classifier's ``bn1`` use (``None``: as stored in its checkpoint).
        monitor_samples: latents of the forget monitor (fixed by the seed).
        monitor_mode: ``"eval"`` (robust) or ``"train"`` (reference code).
        fid_samples: generated samples for FID before and after (0: skip).
        dataset, data_dir: the training data (the retain/forget split is made from its train split).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    forget: tuple[int, ...] = (1,)
    checkpoint: str | None = None
    classifier_checkpoint: str | None = None
    classifier_bn: bool | None = None
    monitor_samples: int = 1024
    monitor_mode: str = "eval"
    fid_samples: int = 0
    dataset: str = "mnist"
    data_dir: str | None = None
    device: str = "auto"


class MnistSetup:
    """Loaded data and models for MNIST VAE unlearning (reusable across seeds and methods)."""

    def __init__(self, spec: MnistUnlearnSpec) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        train = load_dataset(spec.dataset, "train", spec.data_dir)
        self.split = ForgetSplit.by_class(train.labels, spec.forget, num_classes=10)
        self.images = train.flat_float().to(self.device)
        self.labels = train.labels
        self.retain_data = self.images[self.split.retain.to(self.device)]
        self.forget_data = self.images[self.split.forget.to(self.device)]
        self.original_state = {k: v.clone() for k, v in self._load_vae().state_dict().items()}
        self.classifier = load_model(
            "mnist-classifier", spec.classifier_checkpoint, device=self.device, use_bn=spec.classifier_bn
        )
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self._fid: ClassifierFID | None = None
        self._fid_retain: ClassifierFID | None = None
        self._replacements: dict[tuple[int, str, int], LatentReplacement] = {}

    def _load_vae(self) -> MNISTVAE:
        model = load_model("mnist-vae", self.spec.checkpoint, device=self.device)
        if not isinstance(model, MNISTVAE):
            raise CheckpointError("mnist-vae checkpoint did not produce an MNISTVAE")
        return model

    def fresh_model(self) -> MNISTVAE:
        """The original VAE (a new copy each call)."""
        model = MNISTVAE().to(self.device)
        model.load_state_dict(self.original_state)
        return model.eval()

    def monitor(self, seed: int, n: int | None = None, mode: str | None = None) -> ForgetMonitor:
        """Forget monitor with latents fixed by ``seed``."""
        g = torch.Generator().manual_seed(10_000 + seed)
        latents = torch.randn(n or self.spec.monitor_samples, 2, generator=g).to(self.device)
        return ForgetMonitor(
            generate=generate_from,
            classifier=self.classifier,
            latents=latents,
            forget_classes=self.spec.forget,
            mode=mode or self.spec.monitor_mode,
        )

    def hat(self, config: UnlearnConfig) -> HatTerm:
        """The classifier term with ``config``'s kind, alpha and sample count."""

        def generate(model: nn.Module, n: int) -> torch.Tensor:
            return model.decode(torch.randn(n, 2, device=self.device))

        return HatTerm(
            generate=generate,
            classifier=self.classifier,
            forget_classes=self.spec.forget,
            kind=config.hat_kind,
            alpha=config.alpha,
            samples=config.hat_samples,
        )

    def replacement(self, config: UnlearnConfig) -> LatentReplacement:
        """The latent replacement term, built once per (neighbours, reduction, batch size) from the original VAE."""
        key = (config.replace_neighbors, config.loss_reduction, config.batch_size)
        if key not in self._replacements:
            self._replacements[key] = LatentReplacement.for_vae(
                self.fresh_model(),
                self.retain_data,
                self.forget_data,
                neighbours=config.replace_neighbors,
                samples=config.batch_size,
                reduction=config.loss_reduction,
            )
        return self._replacements[key]

    def fid(self, model: MNISTVAE, n: int, seed: int = 0) -> dict[str, float]:
        """FID of ``n`` samples (eval mode) against all real training digits and against the retain digits."""
        if self._fid is None:
            self._fid = ClassifierFID(self.classifier).to(self.device)
            self._fid.update_batches(self.images, real=True)
            self._fid_retain = ClassifierFID(self.classifier).to(self.device)
            self._fid_retain.update_batches(self.retain_data, real=True)
        assert self._fid_retain is not None
        g = torch.Generator().manual_seed(20_000 + seed)
        with torch.no_grad():
            model.eval()
            samples = torch.cat(
                [model.decode(torch.randn(min(5000, n - i), 2, generator=g).to(self.device)) for i in range(0, n, 5000)]
            )
        out = {}
        for key, metric in (("fid", self._fid), ("fid_retain", self._fid_retain)):
            metric.reset()
            metric.update_batches(samples, real=False)
            out[key] = float(metric.compute())
        return out

    def run(
        self,
        config: UnlearnConfig,
        *,
        monitor: ForgetMonitor | None = None,
        extra_monitors: dict[str, ForgetMonitor] | None = None,
        log_path: str | Path | None = None,
        progress: bool = True,
    ) -> tuple[MNISTVAE, UnlearnResult]:
        """Unlearn with ``config`` on a fresh copy of the original model (monitor: default, by the seed)."""
        model = self.fresh_model()
        task = StandardTask(vae_objective(config.loss_reduction))
        result = unlearn(
            model,
            task,
            self.retain_data,
            self.forget_data,
            config,
            hat=self.hat(config) if METHODS[config.method].uses_classifier else None,
            replacement=self.replacement(config) if METHODS[config.method].uses_replacement else None,
            monitor=monitor or self.monitor(config.seed),
            extra_monitors=extra_monitors,
            log_path=log_path,
            progress=progress,
        )
        return model, result


def unlearn_to_dir(
    spec: MnistUnlearnSpec, config: UnlearnConfig, out: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Run one unlearning job and write ``summary.json``, ``log.csv`` and ``model.safetensors`` into ``out``."""
    config.validate()
    out = Path(out)
    if spec.checkpoint is not None and (out / "model.safetensors").resolve() == Path(spec.checkpoint).resolve():
        raise ConfigError(f"{out / 'model.safetensors'}: refusing to overwrite the input checkpoint")
    t0 = time.perf_counter()
    setup = MnistSetup(spec)
    out.mkdir(parents=True, exist_ok=True)
    fid_before = setup.fid(setup.fresh_model(), spec.fid_samples, config.seed) if spec.fid_samples > 0 else {}
    model, result = setup.run(config, log_path=out / "log.csv", progress=progress)
    fid_after = setup.fid(model, spec.fid_samples, config.seed) if spec.fid_samples > 0 else {}
    save_weights(model, out / "model.safetensors", metadata={"unlearn_config": asdict(config), "spec": asdict(spec)})
    summary: dict[str, Any] = {
        "method": config.method,
        "seed": config.seed,
        **result.summary(),
        "fid_original": fid_before.get("fid"),
        "fid_final": fid_after.get("fid"),
        "fid_retain_original": fid_before.get("fid_retain"),
        "fid_retain_final": fid_after.get("fid_retain"),
        "forget": list(spec.forget),
        "forget_set_size": int(setup.split.forget.numel()),
        "retain_set_size": int(setup.split.retain.numel()),
        "config": asdict(config),
        "spec": asdict(spec),
        "wall_time_s": time.perf_counter() - t0,
        "versions": versions(),
        "provenance": run_record({"config": config, "spec": spec}, inputs=mnist_inputs(spec)),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
