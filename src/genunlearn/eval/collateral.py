"""Collateral change: what unlearning did to the classes it was supposed to leave alone.

On fixed generator inputs (latents, initial noise), the original model generates a sample per input and a
classifier labels it. After unlearning the same inputs generate new samples. Two numbers:

- **changed share**: among the inputs whose original sample was a *retained* class, the share whose class is
  now different (a 7 that became a 9, or a blob). Forgetting the forget class should leave it near 0; an
  input that generated the forget class does not count (it is supposed to change).
- **retained-proportion TV**: the total-variation distance between the retained-class proportions (the
  class histogram restricted to the retained classes and renormalised) of the original and of the
  unlearned model: whether the *mix* of what the model still generates moved, regardless of which inputs
  moved. It needs no pairing, so it also compares models with unrelated latent spaces (a retrained model).

:class:`CollateralChange` accumulates over batches (``update``) and reports (``compute``), like a
torchmetrics metric, so a monitor can feed it as samples are generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from genunlearn.errors import ConfigError


def retained_proportions(counts: torch.Tensor | Sequence[int], forget_classes: Sequence[int]) -> torch.Tensor:
    """Class histogram restricted to the retained classes, renormalised to sum to 1 (zeros if none)."""
    c = torch.as_tensor(counts, dtype=torch.float64).clone()
    c[list(forget_classes)] = 0.0
    total = c.sum()
    return c / total if total > 0 else c


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """``1/2 sum |p - q|`` of two distributions over the same classes."""
    return float(0.5 * (torch.as_tensor(p, dtype=torch.float64) - torch.as_tensor(q, dtype=torch.float64)).abs().sum())


def histogram_tv(counts_a: Sequence[int], counts_b: Sequence[int]) -> float:
    """Total-variation distance between two class histograms (each normalised to proportions)."""
    a = torch.as_tensor(counts_a, dtype=torch.float64)
    b = torch.as_tensor(counts_b, dtype=torch.float64)
    return total_variation(a / a.sum().clamp_min(1), b / b.sum().clamp_min(1))


@dataclass
class CollateralChange:
    """Changed share and retained-proportion TV between an original and an unlearned model (module docstring).

    Feed the classifier's predicted classes of the samples both models generate from the *same* inputs, in
    the same order: ``update(original_pred, new_pred)`` for each batch, then ``compute()``.

    Attributes:
        num_classes: number of classes the classifier predicts.
        forget_classes: the classes being forgotten (their inputs are left out of the changed share).

    Example:
        >>> m = CollateralChange(num_classes=3, forget_classes=[1])
        >>> m.update(torch.tensor([0, 0, 2, 1]), torch.tensor([0, 2, 2, 0]))
        >>> r = m.compute(); r["changed_share"], r["retained_inputs"]
        (0.3333333333333333, 3)
    """

    num_classes: int
    forget_classes: Sequence[int]
    _orig: torch.Tensor = field(init=False, repr=False)
    _new: torch.Tensor = field(init=False, repr=False)
    _changed: int = field(init=False, default=0)
    _retained: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        bad = [c for c in self.forget_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ConfigError(f"forget class {bad[0]} outside 0..{self.num_classes - 1}")
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._orig = torch.zeros(self.num_classes, dtype=torch.int64)
        self._new = torch.zeros(self.num_classes, dtype=torch.int64)
        self._changed = 0
        self._retained = 0

    def update(self, original_pred: torch.Tensor, new_pred: torch.Tensor) -> None:
        """Add one batch of predicted classes (same inputs, same order, both models)."""
        o, n = original_pred.detach().reshape(-1).cpu().long(), new_pred.detach().reshape(-1).cpu().long()
        if o.shape != n.shape:
            raise ConfigError(f"{o.numel()} original predictions but {n.numel()} new ones: the inputs must be the same")
        self._orig += torch.bincount(o, minlength=self.num_classes)[: self.num_classes]
        self._new += torch.bincount(n, minlength=self.num_classes)[: self.num_classes]
        kept = ~torch.isin(o, torch.tensor(list(self.forget_classes), dtype=torch.int64))
        self._retained += int(kept.sum())
        self._changed += int((kept & (o != n)).sum())

    def compute(self) -> dict[str, float | int | list[int]]:
        """``changed_share`` (None without retained inputs), ``retained_tv``, counts and both histograms."""
        return {
            "changed_share": self._changed / self._retained if self._retained else None,
            "changed": self._changed,
            "retained_inputs": self._retained,
            "retained_tv": total_variation(
                retained_proportions(self._orig, self.forget_classes),
                retained_proportions(self._new, self.forget_classes),
            ),
            "original_counts": self._orig.tolist(),
            "new_counts": self._new.tolist(),
        }
