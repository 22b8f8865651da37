"""Attacks that try to bring a forgotten class back (issue 18): input search and relearning.

Sampling from the prior is the friendly case; an attacker searches. Two attacks, both model-agnostic:

- **Input search** (:func:`input_search`, :func:`grid_scan`): optimise the generator's *input* — what the
  bundle's sampler draws and ``sampler.generate(model, inputs)`` turns into samples: a VAE's latents, a diffusion
  model's initial noise — to maximise a detector's probability of the forgotten class, from many random starts,
  within a stated norm ball (:class:`InputBall`: ``|z|`` up to the prior's 99.9% radius). For 2-d inputs a grid
  over the ball weighs every point by its prior density, which gives the *prior mass* that decodes to a
  confident forgotten sample.
- **Relearning** (:func:`relearn`): fine-tune a copy of the model for a few updates on retained data only, or with a
  handful of forget examples added to every batch, and measure the forget fraction after ``k`` updates.

A :class:`Detector` is a classifier of samples and the forgotten classes; attacks optimise against one detector
and report every detector's verdict on what they found (an independent detector catches samples that only fool
the first).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genunlearn.adapters import eval_mode, preserved_modes
from genunlearn.data.batching import Data, data_length, infinite_batches
from genunlearn.errors import ConfigError

Generate = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class Detector:
    """A classifier of samples and the classes an audit looks for.

    Attributes:
        name: how reports call it.
        classifier: samples -> class logits (evaluated in eval mode, never trained).
        forget_classes: the forgotten classes; their probabilities are summed.
    """

    name: str
    classifier: nn.Module
    forget_classes: Sequence[int]

    def log_prob(self, samples: torch.Tensor) -> torch.Tensor:
        """Log-probability of the forgotten classes for each sample (differentiable in the samples)."""
        with preserved_modes(self.classifier):
            self.classifier.eval()
            logp = torch.log_softmax(self.classifier(samples).float(), dim=1)
        return torch.logsumexp(logp[:, list(self.forget_classes)], dim=1)

    @torch.no_grad()
    def predict(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p_forget, is_forget_argmax)`` per sample."""
        with preserved_modes(self.classifier):
            self.classifier.eval()
            logits = self.classifier(samples).float()
        p = torch.softmax(logits, dim=1)[:, list(self.forget_classes)].sum(1)
        hit = torch.isin(logits.argmax(1), torch.tensor(list(self.forget_classes), device=logits.device))
        return p, hit


@dataclass(frozen=True)
class InputBall:
    """Generator inputs an attacker may use: tensors of ``shape`` with Euclidean norm at most ``radius``.

    Attributes:
        shape: shape of one input (``(2,)`` for the MNIST VAE's latents, ``(C, H, W)`` for a diffusion model's
            initial noise).
        radius: the norm bound.
        quantile: for a standard Gaussian prior, the prior mass inside the ball (``radius`` is its quantile).
    """

    shape: tuple[int, ...]
    radius: float
    quantile: float | None = None

    @classmethod
    def gaussian(cls, shape: Sequence[int], quantile: float = 0.999) -> InputBall:
        """The ball holding ``quantile`` of a standard Gaussian's mass: radius ``sqrt(chi2.ppf(quantile, d))``."""
        from scipy.stats import chi2

        if not 0 < quantile < 1:
            raise ConfigError(f"the ball's prior quantile must lie in (0, 1), got {quantile}")
        d = math.prod(shape)
        return cls(tuple(int(s) for s in shape), float(math.sqrt(chi2.ppf(quantile, d))), quantile)

    @property
    def dim(self) -> int:
        """Number of input dimensions."""
        return math.prod(self.shape)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Each input scaled back onto the ball if it lies outside (unchanged inside)."""
        n = x.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        scale = (self.radius / n).clamp(max=1.0)
        return x * scale.reshape(-1, *([1] * (x.ndim - 1)))

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` starting points: standard Gaussian draws projected onto the ball."""
        return self.project(torch.randn(n, *self.shape, generator=generator))

    def grid(self, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """2-d inputs only: the centres of a ``k`` x ``k`` grid over ``[-radius, radius]^2`` that lie in the ball, each
        cell's standard-Gaussian prior mass (density x area), and the cell side."""
        if self.dim != 2:
            raise ConfigError(f"an exhaustive grid needs 2-d inputs, these have {self.dim}")
        side = 2 * self.radius / k
        axis = -self.radius + side * (torch.arange(k, dtype=torch.float64) + 0.5)
        zz = torch.cartesian_prod(axis, axis)
        zz = zz[zz.norm(dim=1) <= self.radius]
        mass = torch.exp(-0.5 * (zz**2).sum(1)) / (2 * math.pi) * side**2
        return zz.float().reshape(-1, *self.shape), mass, side


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with no parameter requiring gradients (flags and modes restored)."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with eval_mode(model):
            yield model
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)


@dataclass
class SearchResult:
    """What :func:`input_search` found: per start, the best input and its detectors' probabilities.

    Attributes:
        inputs: the best input of each start (the highest attacked-detector probability along its path).
        p: ``{detector name: p_forget}`` of each start's best input, for every detector.
        steps: optimisation steps per start.
    """

    inputs: torch.Tensor
    p: dict[str, torch.Tensor]
    steps: int

    def confident(self, threshold: float, detectors: Sequence[str] | None = None) -> torch.Tensor:
        """Starts whose best input every named detector (default: all) puts at ``p >= threshold``."""
        names = list(detectors or self.p)
        return torch.stack([self.p[n] >= threshold for n in names]).all(0)


def input_search(
    model: nn.Module,
    generate: Generate,
    ball: InputBall,
    target: Detector,
    *,
    others: Sequence[Detector] = (),
    starts: int = 256,
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    init: torch.Tensor | None = None,
) -> SearchResult:
    """Maximise ``target``'s log-probability of the forgotten classes over generator inputs within ``ball``.

    Projected, normalised gradient ascent from each of ``starts`` Gaussian starts (seeded), or from the given
    starting points ``init`` (projected onto the ball; ``starts`` is then ``len(init)``): every step moves each
    input by ``lr * radius`` (decaying linearly to 0 over ``steps``) along its own gradient's direction, then
    projects it onto the ball. (Adam's per-coordinate scaling would bend the step towards the sign of the gradient
    and stall on the ball's edge away from the constrained optimum.) The model is in eval mode and never changes.
    The best input along each path is kept, then judged by every detector (``target`` and ``others``).
    """
    device = torch.device(device)
    if init is not None:
        if tuple(init.shape[1:]) != ball.shape:
            raise ConfigError(f"starting points of shape {tuple(init.shape[1:])} for a ball of inputs {ball.shape}")
        z0, starts = ball.project(init.detach().float().cpu()), len(init)
    else:
        z0 = ball.draw(starts, torch.Generator().manual_seed(seed))
    best = []
    with frozen(model):
        for i in range(0, starts, batch_size):
            z = z0[i : i + batch_size].to(device).requires_grad_(True)
            keep = z.detach().clone()
            keep_lp = torch.full((z.shape[0],), -math.inf, device=device)
            for t in range(steps + 1):
                lp = target.log_prob(generate(model, z))
                with torch.no_grad():
                    better = lp.detach() > keep_lp
                    keep[better] = z.detach()[better]
                    keep_lp = torch.where(better, lp.detach(), keep_lp)
                if t == steps:
                    break
                (grad,) = torch.autograd.grad(lp.sum(), [z])
                with torch.no_grad():
                    flat = grad.reshape(len(grad), -1)
                    direction = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
                    step = lr * ball.radius * (1 - t / steps)
                    z.add_(step * direction.reshape(grad.shape))
                    z.copy_(ball.project(z))
            best.append(keep)
    inputs = torch.cat(best)
    return SearchResult(inputs.cpu(), judge(model, generate, inputs, [target, *others]), steps)


@torch.no_grad()
def judge(
    model: nn.Module, generate: Generate, inputs: torch.Tensor, detectors: Sequence[Detector], batch_size: int = 4096
) -> dict[str, torch.Tensor]:
    """``{detector: p_forget}`` of the samples generated from ``inputs`` (eval mode)."""
    out: dict[str, list[torch.Tensor]] = {d.name: [] for d in detectors}
    device = next(model.parameters()).device
    with eval_mode(model):
        for i in range(0, len(inputs), batch_size):
            samples = generate(model, inputs[i : i + batch_size].to(device))
            for d in detectors:
                out[d.name].append(d.predict(samples)[0].cpu())
    return {k: torch.cat(v) for k, v in out.items()}


@dataclass
class GridScan:
    """The 2-d input grid: each point's probabilities and prior mass.

    Attributes:
        inputs: grid points inside the ball.
        mass: each point's cell's prior mass (sums to about the ball's quantile).
        p: ``{detector name: p_forget}`` per point.
        side: the cell side.
    """

    inputs: torch.Tensor
    mass: torch.Tensor
    p: dict[str, torch.Tensor]
    side: float

    def confident_mass(self, threshold: float, detectors: Sequence[str] | None = None) -> float:
        """Prior mass of the points every named detector (default: all) puts at ``p >= threshold``."""
        names = list(detectors or self.p)
        hit = torch.stack([self.p[n] >= threshold for n in names]).all(0)
        return float(self.mass[hit].sum())


def grid_scan(model: nn.Module, generate: Generate, ball: InputBall, detectors: Sequence[Detector], k: int) -> GridScan:
    """Every point of a ``k`` x ``k`` grid over the (2-d) ball, judged by every detector."""
    inputs, mass, side = ball.grid(k)
    return GridScan(inputs, mass, judge(model, generate, inputs, detectors), side)


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b.to(a.device)])
    if isinstance(a, (tuple, list)):
        return type(a)(_concat(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return {k: _concat(a[k], b[k]) for k in a}
    raise ConfigError(f"cannot join batches of type {type(a).__name__}")


def _pick(data: Data, index: torch.Tensor) -> Any:
    if isinstance(data, torch.Tensor):
        return data[index.to(data.device)]
    if isinstance(data, tuple):
        return tuple(t[index.to(t.device)] for t in data)
    return torch.utils.data.default_collate([data[int(i)] for i in index])  # type: ignore[index]


def relearn(
    model: nn.Module,
    objective: Callable[[nn.Module, Any], torch.Tensor],
    retain_data: Data,
    forget_data: Data,
    measure: Callable[[nn.Module], dict[str, float]],
    *,
    n_forget: int = 0,
    steps: int = 100,
    at: Sequence[int] = (10, 50, 100),
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str = "cpu",
    initial: dict[str, float] | None = None,
) -> dict[int, dict[str, float]]:
    """Fine-tune a copy of ``model`` and measure it after each of the update counts ``at``.

    Every update descends ``objective`` (the model's training loss) with Adam (``lr``) on a batch of
    ``batch_size`` retained examples plus the same ``n_forget`` forget examples (drawn once, seeded): ``n_forget
    = 0`` is ordinary fine-tuning on retained data. The model is in train mode while it learns; ``measure`` sees it
    in eval mode. Returns ``{k: measure(model after k updates)}`` (``k = 0`` included: ``initial`` when given, the
    caller's measurement of the unchanged model, which saves one measurement per call).
    """
    device = torch.device(device)
    work = copy.deepcopy(model).to(device)
    for p in work.parameters():
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_f = data_length(forget_data)  # a (x, y) tuple holds len(x) examples, not 2
    if n_forget > n_f:
        raise ConfigError(f"relearning with {n_forget} forget examples, but the forget set holds {n_f}")
    extra = _pick(forget_data, torch.randperm(n_f, generator=g)[:n_forget]) if n_forget else None
    batches = infinite_batches(retain_data, batch_size, g, device=device)
    opt = torch.optim.Adam(list(work.parameters()), lr=lr)
    out: dict[int, dict[str, float]] = {}
    wanted = set(at) | {0}
    if initial is not None:
        out[0] = dict(initial)
    else:
        with eval_mode(work):
            out[0] = measure(work)
    for k in range(1, steps + 1):
        batch = next(batches)
        if extra is not None:
            batch = _concat(batch, extra)
        work.train()
        loss = objective(work, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k in wanted:
            with eval_mode(work):
                out[k] = measure(work)
    return out
