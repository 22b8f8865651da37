"""The forget monitor: what fraction of samples generated from fixed latents is classified as forgotten.

Never touches gradients and leaves the model as it found it (mode and BatchNorm buffers), so that
monitoring does not change the run it observes. Two settings are standard in genunlearn:

- reference: 128 latents fixed per run, generator in train mode (BatchNorm batch statistics), as the
  UNO authors' code;
- robust: >= 1,024 latents fixed per seed, generator in eval mode, with a Wilson confidence interval.

Given the original model's predictions on the same latents (:meth:`ForgetMonitor.set_reference`), every
reading also carries the collateral change (:mod:`genunlearn.eval.collateral`): the share of latents whose
original sample was a retained class and whose class is now different, and the total-variation distance of
the retained-class proportions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from genunlearn.adapters import preserved_modes
from genunlearn.errors import ConfigError
from genunlearn.eval.collateral import CollateralChange


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (95% by default).

    >>> lo, hi = wilson_interval(0, 1024); round(lo, 4), round(hi, 4)
    (0.0, 0.0037)
    """
    if n <= 0:
        raise ValueError("n must be positive")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class MonitorReading:
    """One measurement: ``fraction`` of ``n`` samples classified into a forget class, CI and class counts.

    With a reference (:meth:`ForgetMonitor.set_reference`) also the collateral change against the original:
    ``collateral`` = ``changed / retained_inputs`` (latents whose original sample was a retained class and
    whose class changed) and ``retained_tv``; all ``None`` without a reference.
    """

    fraction: float
    count: int
    n: int
    ci_low: float
    ci_high: float
    class_counts: tuple[int, ...]
    collateral: float | None = None
    changed: int | None = None
    retained_inputs: int | None = None
    retained_tv: float | None = None


@dataclass
class ForgetMonitor:
    """Forget fraction of samples generated from fixed latents.

    Attributes:
        generate: ``generate(model, latents) -> samples``.
        classifier: samples -> class logits.
        latents: the fixed latents (drawn once per run or seed).
        forget_classes: classes counted as forgotten.
        mode: ``"train"`` (BatchNorm batch statistics, the reference setting) or ``"eval"``.
        num_classes: classifier's number of classes.
        batch_size: generation batch size (in train mode the whole set is one batch, as in the reference).
        reference: the original model's predicted class per latent (:meth:`set_reference`); when set, every
            reading also reports the collateral change.
    """

    generate: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    classifier: nn.Module
    latents: torch.Tensor
    forget_classes: Sequence[int]
    mode: str = "eval"
    num_classes: int = 10
    batch_size: int = 4096
    reference: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("train", "eval"):
            raise ConfigError(f"monitor mode must be 'train' or 'eval', got {self.mode!r}")
        self.classifier.eval()
        if self.reference is not None and self.reference.numel() != len(self.latents):
            raise ConfigError(f"{self.reference.numel()} reference predictions for {len(self.latents)} latents")

    def set_reference(self, model: nn.Module) -> torch.Tensor:
        """Classify ``model``'s samples (the original) as the reference of the collateral change; returns them."""
        self.reference = self.predict(model).cpu()
        return self.reference

    @torch.no_grad()
    def predict(self, model: nn.Module) -> torch.Tensor:
        """Predicted class of the sample generated from each latent."""
        return self.predict_with(model, [self.classifier])[0]

    @torch.no_grad()
    def predict_with(self, model: nn.Module, classifiers: Sequence[nn.Module]) -> list[torch.Tensor]:
        """Predicted class of each latent's sample under each of ``classifiers``: the samples are generated once
        and every classifier reads the very same ones."""
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        with ExitStack() as stack:
            stack.enter_context(preserved_modes(model))
            for clf in classifiers:
                stack.enter_context(preserved_modes(clf))
            model.train(self.mode == "train")
            for clf in classifiers:
                clf.eval()
            try:
                step = len(self.latents) if self.mode == "train" else self.batch_size
                preds: list[list[torch.Tensor]] = [[] for _ in classifiers]
                for i in range(0, len(self.latents), step):
                    samples = self.generate(model, self.latents[i : i + step])
                    for out, clf in zip(preds, classifiers, strict=True):
                        out.append(clf(samples).argmax(1))
            finally:
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
        return [torch.cat(p) for p in preds]

    def measure(self, model: nn.Module) -> MonitorReading:
        """Generate, classify and count."""
        return self.measure_with(model, [])[0]

    def measure_with(self, model: nn.Module, others: Sequence[nn.Module]) -> list[MonitorReading]:
        """:meth:`measure`, followed by the readings of ``others`` (e.g. an independent classifier) on the very same
        samples (those carry no collateral change: the reference is the monitor's classifier's)."""
        preds = [p.cpu() for p in self.predict_with(model, [self.classifier, *others])]
        return [self._reading(p, collateral=i == 0) for i, p in enumerate(preds)]

    def _reading(self, pred: torch.Tensor, collateral: bool) -> MonitorReading:
        counts = torch.bincount(pred, minlength=self.num_classes)
        k = int(counts[list(self.forget_classes)].sum())
        n = int(pred.numel())
        lo, hi = wilson_interval(k, n)
        extra: dict[str, float | int | None] = {}
        if collateral and self.reference is not None:
            metric = CollateralChange(self.num_classes, list(self.forget_classes))
            metric.update(self.reference, pred)
            c = metric.compute()
            extra = {
                "collateral": c["changed_share"],
                "changed": c["changed"],
                "retained_inputs": c["retained_inputs"],
                "retained_tv": c["retained_tv"],
            }
        return MonitorReading(k / n, k, n, lo, hi, tuple(int(c) for c in counts), **extra)
