"""Tasks: what the retain loss and the forget loss of one unlearning step are.

- :class:`StandardTask` — the same objective ``loss(model, batch)`` on retain and forget batches (class or
  feature unlearning of an unconditional model: VAE ELBO, diffusion denoising ...).
- :class:`ReplacementTask` — conditional replacement unlearning (paper section 3.4, eqs. 4-8): forget
  conditions ``c_f`` are taught to generate the data of target conditions ``c_t``.

A *batch* is whatever the data yields: a tensor, a tuple ``(x, y, ...)`` or a dict with ``"x"`` (and ``"y"``);
:func:`batch_inputs` and :func:`batch_labels` read the two parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from genunlearn.distributed import per_example_randint
from genunlearn.errors import ConfigError, DataError

Objective = Callable[[nn.Module, Any], torch.Tensor]
ConditionalLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def batch_inputs(batch: Any) -> torch.Tensor:
    """The data part of a batch: the tensor itself, the first element of a tuple/list, or ``batch["x"]``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, Mapping):
        for key in ("x", "image", "images", "pixel_values", "input"):
            if key in batch:
                return batch[key]
        raise DataError(f"a dict batch needs an 'x' (or 'image') entry, got keys {sorted(batch)}")
    raise DataError(f"cannot read inputs from a batch of type {type(batch).__name__}")


def batch_labels(batch: Any) -> torch.Tensor | None:
    """The label part of a batch (second element of a tuple, ``batch["y"]``/``["label"]``), or ``None``."""
    if isinstance(batch, (tuple, list)) and len(batch) > 1:
        return batch[1]
    if isinstance(batch, Mapping):
        for key in ("y", "label", "labels", "class_labels"):
            if key in batch:
                return batch[key]
    return None


class Task(Protocol):
    """Turns batches into the two losses the methods work with."""

    def retain_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Loss on a retain (or target) batch."""
        ...

    def forget_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Loss on a forget batch."""
        ...


def task_reduction(task: Any) -> str | None:
    """``"sum"`` or ``"mean"``: how ``task``'s losses reduce over the batch, if it says (``None`` if not).

    Looks at ``task.reduction``, then its objective's (``StandardTask``) or its conditional loss's owner's
    (``ReplacementTask`` over ``DiffusionObjective.conditional``). A data-parallel run needs it to weight the
    ranks' parts of a batch.
    """
    for owner in (
        task,
        getattr(task, "objective", None),
        getattr(task, "conditional_loss", None),
        getattr(getattr(task, "conditional_loss", None), "__self__", None),
    ):
        red = getattr(owner, "reduction", None)
        if red in ("sum", "mean"):
            return red
    return None


@dataclass(frozen=True)
class StandardTask:
    """Unconditional unlearning: one objective on both batches."""

    objective: Objective

    def retain_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.objective(model, batch)

    def forget_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.objective(model, batch)


def labelled_draws(examples: Any) -> Callable[[int, torch.device], tuple[torch.Tensor, torch.Tensor]]:
    """``draw(k, device) -> (x, y)``: ``k`` labelled examples drawn uniformly (with replacement, global random
    state) from an ``(x, y)`` tensor pair or a dataset of labelled items (``ReplacementTask.preserve``)."""
    if isinstance(examples, (tuple, list)) and len(examples) == 2 and isinstance(examples[0], torch.Tensor):
        x_all, y_all = examples
        n = len(x_all)
    else:
        x_all = y_all = None
        n = len(examples)
    if n == 0:
        raise ConfigError("no examples of the preserved classes to draw from")

    def draw(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n, (k,))
        if x_all is not None:
            return x_all[idx.to(x_all.device)].to(device), torch.as_tensor(y_all)[idx.to(y_all.device)].to(device)
        items = [examples[int(i)] for i in idx.tolist()]
        xs = torch.stack([torch.as_tensor(batch_inputs(it)) for it in items]).to(device)
        ys = torch.as_tensor([int(torch.as_tensor(batch_labels(it))) for it in items], device=device)
        return xs, ys

    return draw


def _as_list(v: int | Sequence[int]) -> list[int]:
    return [int(v)] if isinstance(v, int) else [int(c) for c in v]


@dataclass(frozen=True)
class ReplacementTask:
    """Conditional replacement unlearning (paper eqs. 4-8) for any conditional model.

    ``conditional_loss(model, x, c)`` is the model's training loss for data ``x`` under conditions ``c`` (an
    int64 tensor of shape ``(B,)``). Forget conditions map to target conditions: ``forget_condition=1,
    target_condition=7`` (the paper: 207 -> 208), or lists of equal length (``[1, 3] -> [7, 9]``), or several
    forget conditions and one target (``[1, 3] -> 7``).

    - Retain (target) batches hold target data ``x_t``: the loss is eq. 4,
      ``L(M(c_f), x_t) + L(M(c_t), x_t)``, where ``c_t`` is each example's label and ``c_f`` a forget condition
      mapped to it (drawn uniformly per example with the global random state when several map to the same
      target, so a replayed random state replays it, and a data-parallel rank draws what one process would).
    - Forget batches hold forget data ``x_f``: the loss is eq. 7's ``L(M(c_f), x_f)``, ``c_f`` each example's
      label.

    Batches may be plain tensors when there is one forget and one target condition; otherwise they must carry
    labels (``(x, y)`` or a dict), and a label outside the map is an error.

    ``preserve`` (genunlearn, not in the paper) extends the retain loss to the other conditions: a callable
    ``preserve(k, device) -> (x_o, c_o)`` drawing ``k`` examples of conditions that are neither forgotten nor
    targets (with the global random state, like the other draws), whose plain loss ``L(M(c_o), x_o)`` is added
    with weight ``preserve_weight``, one draw as large as the retain batch per call. The paper's L^R sees only
    ``c_f`` and ``c_t``; on a small model the other conditions then drift (measured in ``results/mnist-dit``).
    ``preserve_loss`` replaces that plain loss for the preserved draws, e.g. a distillation towards the frozen
    original's predictions (:meth:`~genunlearn.objectives.DiffusionObjective.conditional_distillation`).
    """

    conditional_loss: ConditionalLoss
    forget_condition: int | Sequence[int]
    target_condition: int | Sequence[int]
    preserve: Callable[[int, torch.device], tuple[torch.Tensor, torch.Tensor]] | None = None
    preserve_weight: float = 1.0
    preserve_loss: ConditionalLoss | None = None

    def __post_init__(self) -> None:
        forget, target = _as_list(self.forget_condition), _as_list(self.target_condition)
        if not forget:
            raise ConfigError("replacement unlearning needs at least one forget condition")
        if len(target) == 1:
            target = target * len(forget)
        if len(target) != len(forget):
            raise ConfigError(
                f"{len(forget)} forget conditions but {len(target)} targets: "
                "give one target or one per forget condition"
            )
        if len(set(forget)) != len(forget):
            raise ConfigError(f"forget conditions repeat: {forget}")
        if set(forget) & set(target):
            raise ConfigError(f"a condition cannot be both forgotten and a target: {sorted(set(forget) & set(target))}")
        if self.preserve_weight < 0:
            raise ConfigError(f"preserve_weight must be >= 0, got {self.preserve_weight}")
        object.__setattr__(self, "_map", dict(zip(forget, target, strict=True)))
        inverse: dict[int, list[int]] = {}
        for f, t in zip(forget, target, strict=True):
            inverse.setdefault(t, []).append(f)
        object.__setattr__(self, "_inverse", inverse)

    @property
    def mapping(self) -> dict[int, int]:
        """Forget condition -> target condition."""
        return dict(self._map)  # type: ignore[attr-defined]

    def _labels(self, batch: Any, x: torch.Tensor, allowed: Sequence[int], what: str) -> torch.Tensor:
        y = batch_labels(batch)
        if y is None:
            if len(set(allowed)) != 1:
                raise DataError(f"{what} batches must carry labels when there are several {what} conditions")
            return torch.full((x.shape[0],), int(allowed[0]), dtype=torch.int64, device=x.device)
        y = torch.as_tensor(y, device=x.device).long().reshape(-1)
        bad = set(torch.unique(y).tolist()) - set(allowed)
        if bad:
            raise DataError(f"{what} batch holds labels {sorted(bad)}, expected only {sorted(set(allowed))}")
        return y

    def retain_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x_t = batch_inputs(batch)
        inverse: dict[int, list[int]] = self._inverse  # type: ignore[attr-defined]
        c_t = self._labels(batch, x_t, list(inverse), "target")
        c_f = torch.empty_like(c_t)
        for t, sources in inverse.items():
            sel = c_t == t
            if len(sources) == 1:
                c_f[sel] = sources[0]
            else:  # one draw per example of the batch (data-parallel ranks draw the global batch's, keep theirs)
                pick = per_example_randint(0, len(sources), len(c_t), device=c_t.device)
                c_f[sel] = torch.as_tensor(sources, device=c_t.device)[pick[sel]]
        loss = self.conditional_loss(model, x_t, c_f) + self.conditional_loss(model, x_t, c_t)
        if self.preserve is None or self.preserve_weight == 0:
            return loss
        x_o, c_o = self.preserve(x_t.shape[0], x_t.device)
        c_o = torch.as_tensor(c_o, device=x_t.device).long().reshape(-1)
        clash = set(torch.unique(c_o).tolist()) & (set(self._map) | set(inverse))  # type: ignore[attr-defined]
        if clash:
            raise DataError(f"preserved examples carry forgotten or target labels {sorted(clash)}")
        preserve_loss = self.preserve_loss or self.conditional_loss
        return loss + self.preserve_weight * preserve_loss(model, x_o.to(x_t.device), c_o)

    def forget_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x_f = batch_inputs(batch)
        return self.conditional_loss(model, x_f, self._labels(batch, x_f, list(self._map), "forget"))  # type: ignore[attr-defined]
