"""The extra terms of the peer methods (SalUn, Selective Amnesia, ESD, SISS) for VAEs and diffusion models.

A term is ``term(model, retain_batch, forget_batch) -> scalar`` (:data:`genunlearn.loop.Term`), evaluated on the
step's batches; a method names the terms it needs (:data:`genunlearn.methods.TERMS`) and the loop refuses to
start without them. Frozen copies of the original model are taken when a term is built and never train.

Encoder-decoder models (the VAE contract of :mod:`genunlearn.objectives.vae`) have no condition to relabel;
their "forget condition" is the forget data's latent region (as for ``rep``): the frozen original encoder's
posteriors of the forget examples. Choices and their justification: ``docs/peers.md``.

- ``relabel`` (SalUn): :class:`LatentRegionLoss` decoding forget latents towards *random* retained images;
  diffusion: :class:`DiffusionRelabel` (the forget label's prediction towards the prediction under a random
  other label, SalUn's DDPM loss).
- ``surrogate`` (SA): :class:`LatentRegionLoss` decoding forget latents towards uniform noise images.
- ``replay`` (SA): :class:`VAEReplay`, the ELBO of images the frozen original decodes from retained examples'
  latents.
- ``ewc`` (SA): :class:`EWCPenalty` with :func:`fisher_diagonal` from samples of the original model.
- ``negative_guidance`` (ESD): :class:`NegativeGuidance`.
- ``siss`` (SISS): :class:`SISSLoss`.

Selective Amnesia on a class-conditional diffusion model (as SA's DDPM code): ``surrogate`` is
:class:`DiffusionSurrogate` (the forget label's denoising loss on uniform-noise images), ``replay`` is
:class:`DiffusionReplay` over a pool of samples the frozen original generates once under the retained labels
(:func:`generate_pool`), and ``ewc``'s Fisher is :func:`diffusion_fisher` of the same pool (all labels).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genunlearn.adapters import eval_mode
from genunlearn.errors import ConfigError, DataError
from genunlearn.objectives.diffusion import DiffusionObjective, model_prediction
from genunlearn.objectives.replacement import Examples, encode_all, gather, unambiguous_mask
from genunlearn.objectives.tasks import batch_inputs, batch_labels
from genunlearn.objectives.vae import VAEObjective, reconstruction_loss


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off (the "frozen original" of SA and ESD)."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def _reduce(per: torch.Tensor, reduction: str) -> torch.Tensor:
    return per.sum() if reduction == "sum" else per.mean()


# --- encoder-decoder models ---------------------------------------------------------------------------------


@dataclass
class LatentRegionLoss:
    """Decode latents of the forget region towards given targets (SalUn's relabelling, SA's surrogate, for a VAE).

    Each call draws ``samples`` forget examples, latents ``z ~ N(mu_f, std_f^2)`` from their frozen posteriors,
    and targets from ``targets(n, device)``; returns the decoder's reconstruction loss of the targets at those
    latents (the model in eval mode, as it generates: batches of forget-region latents alone must not move
    BatchNorm statistics, see :class:`~genunlearn.objectives.LatentReplacement`).

    Attributes:
        mu, std: frozen posterior means and standard deviations of the forget examples ``(N, d)``.
        targets: ``targets(n, device) -> (n, ...)`` target images (drawn afresh every call).
        likelihood: ``"bernoulli"`` or ``"mse"`` (the VAE's).
        samples: latents per call.
        reduction: ``"sum"`` or ``"mean"`` over the samples (match the retain loss).
        latent_shape: shape of one latent as the decoder takes it (``()``: flat).
    """

    mu: torch.Tensor
    std: torch.Tensor
    targets: Callable[[int, torch.device], torch.Tensor]
    likelihood: str = "bernoulli"
    samples: int = 128
    reduction: str = "sum"
    latent_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mu.shape[0] == 0:
            raise ConfigError("a latent-region term needs at least one forget example")

    def __call__(self, model: nn.Module, retain_batch: Any = None, forget_batch: Any = None) -> torch.Tensor:
        z = draw_latents(self.mu, self.std, self.samples, self.latent_shape)
        with eval_mode(model):
            per = reconstruction_loss(model, z, self.targets(self.samples, self.mu.device), self.likelihood)
        return _reduce(per, self.reduction)


def draw_latents(mu: torch.Tensor, std: torch.Tensor, n: int, latent_shape: tuple[int, ...] = ()) -> torch.Tensor:
    """``n`` latents ``z ~ N(mu_i, std_i^2)`` of uniformly drawn examples ``i`` (shaped ``latent_shape`` if given)."""
    i = torch.randint(0, mu.shape[0], (n,), device=mu.device)
    z = mu[i] + std[i] * torch.randn_like(mu[i])
    return z.reshape(n, *latent_shape) if latent_shape else z


def random_examples(examples: Examples) -> Callable[[int, torch.device], torch.Tensor]:
    """Targets: examples drawn uniformly (with replacement) from ``examples`` (a tensor or a dataset)."""
    n = len(examples)  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError("no examples to draw targets from")

    def draw(k: int, device: torch.device) -> torch.Tensor:
        return gather(examples, torch.randint(0, n, (k,)), device)

    return draw


def uniform_noise(shape: Sequence[int]) -> Callable[[int, torch.device], torch.Tensor]:
    """Targets: images of uniform noise in [0, 1] (Selective Amnesia's surrogate for MNIST)."""

    def draw(k: int, device: torch.device) -> torch.Tensor:
        return torch.rand(k, *shape, device=device)

    return draw


@dataclass
class VAEReplay:
    """Generative replay for a VAE: the ELBO of images the frozen original decodes at retained examples' latents.

    Selective Amnesia replays samples of the retained classes from a frozen copy; an unconditional VAE has no
    class to condition on, so the retained "condition" is the retained data's latent region: latents are drawn
    from the frozen posteriors of random retained examples, decoded by the frozen original (pixel means), and
    the model's negative ELBO of those images is the loss (the model in the loop's mode, like the retain loss).

    Attributes:
        frozen: the frozen original.
        mu, std: frozen posterior means and standard deviations of the retained examples.
        objective: the VAE's objective (its reduction applies).
        samples: replayed images per call.
    """

    frozen: nn.Module
    mu: torch.Tensor
    std: torch.Tensor
    objective: VAEObjective
    samples: int = 128

    def __call__(self, model: nn.Module, retain_batch: Any = None, forget_batch: Any = None) -> torch.Tensor:
        i = torch.randint(0, self.mu.shape[0], (self.samples,), device=self.mu.device)
        with torch.no_grad():
            z = self.mu[i] + self.std[i] * torch.randn_like(self.mu[i])
            x = generate_vae(self.frozen, z, self.objective.likelihood)
        return self.objective(model, x)


@dataclass
class DecoderKeep:
    """Hold the decoder to the frozen original on the retained data's latent region (``rep-keep``'s term).

    Each call draws ``samples`` retained examples, latents ``z ~ N(mu, std^2)`` from their frozen posteriors, and
    returns how far the model's output distribution at those latents is from the frozen original's, summed over
    pixels per example: KL(Bern(original) || Bern(model)) for Bernoulli decoders (the reconstruction loss of the
    original's pixel means minus their entropy), the squared error of the means for ``"mse"``. It is 0, with a
    zero gradient, while the decoder is the original's. No classifier and no labels: the retained examples'
    latent region stands for "what must not move" (genunlearn, issue 17: it targets the collateral change
    directly, where the retain loss only asks for good reconstructions of retained images). Computed in eval
    mode, like the replacement term (latents of one region must not move BatchNorm statistics).

    Attributes:
        frozen: the frozen original.
        mu, std: frozen posterior means and standard deviations of the retained examples ``(N, d)``.
        likelihood: ``"bernoulli"`` or ``"mse"`` (the VAE's).
        samples: latents per call.
        reduction: ``"sum"`` or ``"mean"`` over the samples (match the retain loss).
        latent_shape: shape of one latent as the decoder takes it (``()``: flat).
    """

    frozen: nn.Module
    mu: torch.Tensor
    std: torch.Tensor
    likelihood: str = "bernoulli"
    samples: int = 128
    reduction: str = "sum"
    latent_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mu.shape[0] == 0:
            raise ConfigError("the decoder-keep term needs at least one retained example")

    def __call__(self, model: nn.Module, retain_batch: Any = None, forget_batch: Any = None) -> torch.Tensor:
        z = draw_latents(self.mu, self.std, self.samples, self.latent_shape)
        with torch.no_grad():
            if self.likelihood == "bernoulli" and hasattr(self.frozen, "decode_logits"):
                logits = self.frozen.decode_logits(z)  # type: ignore[operator]
                target = torch.sigmoid(logits)
                floor = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
            else:
                target, floor = generate_vae(self.frozen, z, self.likelihood), torch.zeros(z.shape[0], device=z.device)
        with eval_mode(model):
            per = reconstruction_loss(model, z, target, self.likelihood) - floor
        return _reduce(per, self.reduction)


def generate_vae(model: nn.Module, z: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Pixel means the decoder produces at ``z`` (sigmoid of the logits for Bernoulli likelihoods)."""
    if likelihood == "bernoulli" and hasattr(model, "decode_logits"):
        return torch.sigmoid(model.decode_logits(z))  # type: ignore[operator]
    return model.decode(z)  # type: ignore[operator]


# --- EWC ------------------------------------------------------------------------------------------------------


def fisher_diagonal(
    model: nn.Module,
    per_example_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    inputs: Iterable[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher ``mean_x (d loss(x) / d theta)^2`` over single examples, for trainable parameters.

    ``per_example_loss(model, x)`` is called with batches of one example (``x`` of shape ``(1, ...)``) and must
    return a scalar (Selective Amnesia: the negative log-likelihood bound of a generated sample). The model is
    evaluated in eval mode (BatchNorm cannot normalise a batch of one) and left in the mode it was in.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fisher = {n: torch.zeros_like(p) for n, p in named}
    params = [p for _, p in named]
    count = 0
    with eval_mode(model):
        for x in inputs:
            for j in range(x.shape[0]):
                gs = torch.autograd.grad(per_example_loss(model, x[j : j + 1]), params, allow_unused=True)
                for (n, _), g in zip(named, gs, strict=True):
                    if g is not None:
                        fisher[n].add_(g.detach().pow(2))
                count += 1
    if count == 0:
        raise ConfigError("the Fisher estimate needs at least one sample")
    return {n: f / count for n, f in fisher.items()}


@dataclass
class EWCPenalty:
    """``sum_i F_i (theta_i - theta*_i)^2`` over the parameters named in ``fisher`` (theta* = the original's).

    Attributes:
        fisher: diagonal Fisher per parameter name (:func:`fisher_diagonal`).
        anchor: the original parameter values per name.
    """

    fisher: dict[str, torch.Tensor]
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def around(cls, model: nn.Module, fisher: dict[str, torch.Tensor]) -> EWCPenalty:
        """The penalty anchored at ``model``'s current parameters."""
        params = dict(model.named_parameters())
        missing = sorted(set(fisher) - set(params))
        if missing:
            raise ConfigError(f"the Fisher names parameters the model does not have: {missing[:3]}")
        return cls(fisher, {n: params[n].detach().clone() for n in fisher})

    def __call__(self, model: nn.Module, retain_batch: Any = None, forget_batch: Any = None) -> torch.Tensor:
        params = dict(model.named_parameters())
        missing = [n for n in self.fisher if n not in params]
        if missing:  # e.g. a LoRA-wrapped model: its own weights are renamed and frozen
            raise ConfigError(f"the EWC penalty's parameter {missing[0]!r} is not a parameter of the model")
        terms = [(self.fisher[n] * (params[n] - self.anchor[n]).pow(2)).sum() for n in self.fisher]
        return torch.stack(terms).sum()


# --- diffusion models -----------------------------------------------------------------------------------------


def _noised(objective: DiffusionObjective, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x0, x_t, t, labels)`` of a labelled batch: timesteps and noise from the global random state."""
    x0 = objective._prepare(batch_inputs(batch))
    y = batch_labels(batch)
    if y is None:
        raise DataError("this term needs labelled batches (x, y): a class-conditional diffusion model")
    y = torch.as_tensor(y, device=x0.device).long().reshape(-1)
    t = torch.randint(0, objective.num_train_timesteps, (x0.shape[0],), device=x0.device)
    x_t = objective.scheduler.add_noise(x0, torch.randn_like(x0), t)
    return x0, x_t, t, y


def _mse(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    per = (pred.float() - target.float()).pow(2).reshape(pred.shape[0], -1).mean(1)
    return _reduce(per, reduction)


def other_labels(labels: torch.Tensor, num_classes: int, excluded: Sequence[int]) -> torch.Tensor:
    """A uniformly random label for each entry, different from every label in ``excluded`` (and from itself)."""
    choices = torch.tensor([c for c in range(num_classes) if c not in set(excluded)], device=labels.device)
    if choices.numel() == 0:
        raise ConfigError("no label is left to relabel the forget data with")
    out = choices[torch.randint(0, choices.numel(), labels.shape, device=labels.device)]
    return out


@dataclass
class DiffusionRelabel:
    """SalUn's loss for conditional diffusion: ``|| eps_theta(x_t, t, c_f) - sg(eps_theta(x_t, t, c')) ||^2``.

    ``x_t`` is a noised forget example, ``c_f`` its label and ``c'`` a random label that is not a forget class
    (SalUn's "random labelling"); the prediction under ``c'`` is the current model's, without gradient.

    Attributes:
        objective: the model's :class:`DiffusionObjective` (scheduler, preprocessing, reduction).
        num_classes: number of class labels (not counting the null label).
        forget_classes: labels never used as replacement labels.
    """

    objective: DiffusionObjective
    num_classes: int
    forget_classes: Sequence[int]

    def __call__(self, model: nn.Module, retain_batch: Any, forget_batch: Any) -> torch.Tensor:
        _, x_t, t, y = _noised(self.objective, forget_batch)
        with torch.no_grad():
            target = model_prediction(model, x_t, t, other_labels(y, self.num_classes, self.forget_classes))
        return _mse(model_prediction(model, x_t, t, y), target, self.objective.reduction)


@dataclass
class NegativeGuidance:
    """ESD's loss: the forget label's prediction towards the frozen model's prediction guided away from it.

    ``|| eps_theta(x_t, t, c_f) - [eps*(x_t, t, null) - g (eps*(x_t, t, c_f) - eps*(x_t, t, null))] ||^2`` with
    ``eps*`` the frozen original. ESD draws ``x_t`` from the model's own partial sampling trajectory under the
    concept; here ``x_t`` is a forget example noised by the forward process (the same marginal when the model
    generates the forget data, without running the sampler every step).

    Attributes:
        objective: the model's :class:`DiffusionObjective` (its ``null_label`` is the unconditional label).
        frozen: the frozen original.
        guidance: the negative guidance scale ``g`` (ESD: 1).
    """

    objective: DiffusionObjective
    frozen: nn.Module
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if self.objective.null_label is None:
            raise ConfigError("ESD needs the model's unconditional (null) label: DiffusionObjective(null_label=...)")

    def __call__(self, model: nn.Module, retain_batch: Any, forget_batch: Any) -> torch.Tensor:
        _, x_t, t, y = _noised(self.objective, forget_batch)
        with torch.no_grad():
            e_0 = model_prediction(self.frozen, x_t, t, torch.full_like(y, int(self.objective.null_label)))  # type: ignore[arg-type]
            e_c = model_prediction(self.frozen, x_t, t, y)
            target = e_0 - self.guidance * (e_c - e_0)
        return _mse(model_prediction(model, x_t, t, y), target, self.objective.reduction)


@dataclass
class SISSLoss:
    """SISS (Alberti et al. 2025): one noisy input per (retain, forget) pair from their mixture, importance-weighted.

    With ``abar_t`` the scheduler's cumulative alpha, ``q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)`` and
    ``q_mix = (1 - lam) q(x_t | x) + lam q(x_t | a)``, ``x_t`` is drawn from ``q_mix`` and the loss is

        n/(n-k) q(x_t|x)/q_mix |eps_theta(x_t) - eps_x|^2 - s k/(n-k) q(x_t|a)/q_mix |eps_theta(x_t) - eps_a|^2

    with ``eps_x = (x_t - sqrt(abar_t) x) / sqrt(1 - abar_t)`` (and likewise for ``a``) and ``x`` drawn from the
    whole training set (a retain example, or with probability ``k/n`` the pair's forget example): an unbiased
    estimate of ``n/(n-k) L(data) - s k/(n-k) L(forget) = L(retained data) + (1 - s) k/(n-k) L(forget)`` from one
    forward pass (``s = 1``: the loss of the data without the forget set). Epsilon-prediction models. A class-
    conditional model is called with the pair's label: each forget example is paired with a retain example of
    the same class from the retain batch (data unlearning inside classes; pairs without one are dropped).

    Attributes:
        objective: the model's :class:`DiffusionObjective` (epsilon prediction).
        n_data, n_forget: sizes ``n`` of the whole training set and ``k`` of the forget set.
        mixture: ``lam``, the probability of noising the forget example (SISS: 0.5).
        forget_scale: ``s``, the weight of the subtracted forget term (SISS: 1 is the exact retain loss).
    """

    objective: DiffusionObjective
    n_data: int
    n_forget: int
    mixture: float = 0.5
    forget_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.objective.prediction != "epsilon":
            raise ConfigError("SISS is written for epsilon-prediction models")
        if not 0 < self.mixture < 1:
            raise ConfigError(f"the SISS mixture weight must lie in (0, 1), got {self.mixture}")
        if not 0 < self.n_forget < self.n_data:
            raise ConfigError(f"SISS needs 0 < forget set size < data size, got {self.n_forget} of {self.n_data}")

    def _pairs(self, retain_batch: Any, forget_batch: Any):
        x = self.objective._prepare(batch_inputs(retain_batch))
        a = self.objective._prepare(batch_inputs(forget_batch))
        if not self.objective.conditional_model:
            m = min(len(x), len(a))
            return x[:m], a[:m], None
        y_x, y_a = batch_labels(retain_batch), batch_labels(forget_batch)
        if y_x is None or y_a is None:
            raise DataError("a class-conditional model needs labelled batches (x, y) for SISS")
        y_x = torch.as_tensor(y_x, device=x.device).long().reshape(-1)
        y_a = torch.as_tensor(y_a, device=a.device).long().reshape(-1)
        pick, keep = [], []
        for j, c in enumerate(y_a.tolist()):
            same = torch.nonzero(y_x == c).reshape(-1)
            if same.numel():
                pick.append(int(same[torch.randint(0, same.numel(), (1,))]))
                keep.append(j)
        if not keep:
            raise DataError("SISS pairs each forget example with a retained one of its class; none in this batch")
        return x[pick], a[keep], y_a[keep]

    def __call__(self, model: nn.Module, retain_batch: Any, forget_batch: Any) -> torch.Tensor:
        if retain_batch is None:
            raise DataError("SISS needs retain data")
        x, a, y = self._pairs(retain_batch, forget_batch)
        b = x.shape[0]
        n, k = self.n_data, self.n_forget
        # SISS draws x from the whole training set: a retain example, or (probability k/n) the pair's forget one
        swap = (torch.rand(b, device=x.device) < k / n).reshape(b, *([1] * (x.dim() - 1)))
        x = torch.where(swap, a, x)
        t = torch.randint(0, self.objective.num_train_timesteps, (b,), device=x.device)
        abar = self.objective.scheduler.alphas_cumprod.to(x.device)[t].float().reshape(b, *([1] * (x.dim() - 1)))
        sa, sb = abar.sqrt(), (1 - abar).sqrt()
        from_forget = (torch.rand(b, device=x.device) < self.mixture).reshape(b, *([1] * (x.dim() - 1)))
        x0 = torch.where(from_forget, a, x)
        x_t = sa * x0 + sb * torch.randn_like(x0)
        eps_x, eps_a = (x_t - sa * x) / sb, (x_t - sa * a) / sb
        log_qx = -eps_x.pow(2).reshape(b, -1).sum(1) / 2  # log q(x_t | x) up to the shared constant
        log_qa = -eps_a.pow(2).reshape(b, -1).sum(1) / 2
        lam = self.mixture
        w_x = 1.0 / ((1 - lam) + lam * torch.exp((log_qa - log_qx).clamp(max=80)))
        w_a = 1.0 / ((1 - lam) * torch.exp((log_qx - log_qa).clamp(max=80)) + lam)
        pred = model_prediction(model, x_t, t, y)
        err_x = (pred.float() - eps_x).pow(2).reshape(b, -1).mean(1)
        err_a = (pred.float() - eps_a).pow(2).reshape(b, -1).mean(1)
        per = (n / (n - k)) * w_x.detach() * err_x - self.forget_scale * (k / (n - k)) * w_a.detach() * err_a
        return _reduce(per, self.objective.reduction)


@dataclass
class DiffusionSurrogate:
    """Selective Amnesia's surrogate for a class-conditional diffusion model: forget label -> uniform noise.

    The denoising loss (the objective's) of images drawn uniformly in ``[0, 1]`` in the data's input format
    (mapped by the objective's preprocessing, e.g. to ``[-1, 1]``, as SA's DDPM code draws them) under the forget
    labels, one image per forget example of the step's batch: the forget batch gives only the count and the
    labels, never its images. No label dropout.

    Attributes:
        objective: the model's :class:`DiffusionObjective`.
    """

    objective: DiffusionObjective

    def __call__(self, model: nn.Module, retain_batch: Any, forget_batch: Any) -> torch.Tensor:
        x = batch_inputs(forget_batch)
        y = batch_labels(forget_batch)
        if y is None:
            raise DataError("the surrogate term needs labelled forget batches (x, y): a class-conditional model")
        noise_images = torch.rand(x.shape, device=x.device, dtype=x.dtype)
        labels = torch.as_tensor(y, device=x.device).long().reshape(-1)
        return self.objective.loss(model, self.objective._prepare(noise_images), labels)


@dataclass
class DiffusionReplay:
    """Generative replay for a class-conditional diffusion model: the denoising loss of the frozen original's samples.

    Each call draws ``samples`` entries of a pool the frozen original generated under the retained labels
    (:func:`generate_pool`; SA's DDPM code also samples its replay set once, 500 images per class) and returns the
    objective's loss of those images under their labels.

    Attributes:
        objective: the model's :class:`DiffusionObjective`.
        images: pool images in the data's input format ``(N, ...)``.
        labels: their labels ``(N,)``.
        samples: images per call (the batch size).
    """

    objective: DiffusionObjective
    images: torch.Tensor
    labels: torch.Tensor
    samples: int = 128

    def __post_init__(self) -> None:
        if self.images.shape[0] == 0:
            raise ConfigError("the replay pool holds no sample of a retained label")

    def __call__(self, model: nn.Module, retain_batch: Any = None, forget_batch: Any = None) -> torch.Tensor:
        i = torch.randint(0, self.images.shape[0], (self.samples,), device=self.images.device)
        return self.objective.loss(model, self.objective._prepare(self.images[i]), self.labels[i])


def generate_pool(
    generate: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    frozen: nn.Module,
    noise_shape: Sequence[int],
    num_classes: int,
    size: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    chunk: int = 250,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` samples of ``frozen`` under labels ``0, 1, ..., num_classes - 1, 0, ...`` (balanced), with labels.

    ``generate(model, noise, labels) -> images`` is the model's sampler (in the data's input format); the initial
    noises come from a generator seeded by ``30_000 + seed``. Returns ``(images, labels)`` on ``device``.
    """
    if size < 1:
        raise ConfigError(f"the sample pool needs at least one sample, got {size}")
    g = torch.Generator().manual_seed(30_000 + seed)
    labels = torch.arange(size) % num_classes
    noise = torch.randn(size, *noise_shape, generator=g)
    out = []
    with torch.no_grad():
        for a in range(0, size, chunk):
            out.append(generate(frozen, noise[a : a + chunk].to(device), labels[a : a + chunk].to(device)).to(device))
    return torch.cat(out), labels.to(device)


def diffusion_fisher(
    model: nn.Module,
    objective: DiffusionObjective,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    timesteps: int = 10,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of a diffusion model from samples: per sample, the squared gradient of its denoising loss.

    SA's DDPM code squares, per generated sample, the gradient of its loss summed over all 1000 timesteps (the
    ELBO). Here the loss of one sample is the mean over ``timesteps`` stratified timesteps (one in each of
    ``timesteps`` equal bins of the schedule, each with its own noise): a Monte Carlo estimate of the mean over
    all timesteps, i.e. SA's sum up to the factor ``num_train_timesteps`` (squared in the Fisher; the EWC weight
    lambda absorbs it). Per-example loss as the objective defines it (mean over elements). Timesteps and noise come
    from the global random state.
    """
    if timesteps < 1:
        raise ConfigError(f"the Fisher needs at least one timestep per sample, got {timesteps}")
    n_t = objective.num_train_timesteps
    width = n_t / timesteps

    def per_sample(m: nn.Module, index: torch.Tensor) -> torch.Tensor:
        j = int(index.reshape(-1)[0])
        one = objective._prepare(images[j : j + 1])
        x0 = one.expand(timesteps, *one.shape[1:]).contiguous()
        t = (torch.arange(timesteps, device=x0.device) * width + torch.rand(timesteps, device=x0.device) * width).long()
        t = t.clamp(max=n_t - 1)
        y = None if labels is None else labels[j : j + 1].expand(timesteps)
        return objective.per_example(m, x0, y, t, torch.randn_like(x0)).mean()

    return fisher_diagonal(model, per_sample, [torch.arange(images.shape[0])])


# --- building them -------------------------------------------------------------------------------------------


def vae_terms(
    names: Iterable[str],
    original: nn.Module,
    retain: Examples,
    forget: Examples,
    *,
    likelihood: str = "bernoulli",
    reduction: str = "sum",
    samples: int = 128,
    fisher_samples: int = 500,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The named terms for an encoder-decoder model (VAE contract), built from its original weights.

    ``retain`` and ``forget`` are the examples (tensors or datasets); ``samples`` matches the batch size. The
    Fisher of ``ewc`` is estimated from ``fisher_samples`` images the original decodes from ``z ~ N(0, I)`` (all
    of its distribution, forget class included, as Selective Amnesia), drawn from a generator seeded by ``seed``.
    """
    names = list(names)
    if device is None:
        device = next(original.parameters()).device
    frozen = frozen_copy(original)
    out: dict[str, Any] = {}
    need_forget = {"relabel", "surrogate", "keep_away"} & set(names)
    mu_f = std_f = None
    if need_forget:
        mu_f, std_f = encode_all(frozen, forget, device=device)
    with torch.no_grad():
        first = gather(forget, torch.zeros(1, dtype=torch.int64), device)
        latent_shape = tuple(frozen.encode(first)[0].shape[1:])  # type: ignore[operator]
        image_shape = tuple(first.shape[1:])
    flat_latent = () if len(latent_shape) == 1 else latent_shape
    objective = VAEObjective(likelihood, reduction)
    for name in names:
        if name == "relabel":
            out[name] = LatentRegionLoss(
                mu_f,
                std_f,
                random_examples(retain),
                likelihood,
                samples,
                reduction,
                flat_latent,  # type: ignore[arg-type]
            )
        elif name == "surrogate":
            out[name] = LatentRegionLoss(
                mu_f,
                std_f,
                uniform_noise(image_shape),
                likelihood,
                samples,
                reduction,
                flat_latent,  # type: ignore[arg-type]
            )
        elif name == "replay":
            mu_r, std_r = encode_all(frozen, retain, device=device)
            out[name] = VAEReplay(frozen, mu_r, std_r, objective, samples)
        elif name in ("keep", "keep_away"):
            mu_r, std_r = encode_all(frozen, retain, device=device)
            if name == "keep_away":  # only retained examples away from the forget data (rep's purity rule)
                away = unambiguous_mask(mu_r, mu_f).to(mu_r.device)  # type: ignore[arg-type]
                if not bool(away.any()):
                    raise ConfigError("no retained example lies away from the forget data in latent space")
                mu_r, std_r = mu_r[away], std_r[away]
            out[name] = DecoderKeep(
                frozen,
                mu_r,
                std_r,
                likelihood,
                samples,
                reduction,
                flat_latent,  # type: ignore[arg-type]
            )
        elif name == "ewc":
            g = torch.Generator().manual_seed(30_000 + seed)
            with torch.no_grad():
                z = torch.randn(fisher_samples, *latent_shape, generator=g).to(device)
                images = generate_vae(frozen, z, likelihood)
            per_example = VAEObjective(likelihood, "sum")
            model = copy.deepcopy(original)
            fisher = fisher_diagonal(model, per_example, [images])
            out[name] = EWCPenalty.around(original, fisher)
        else:
            raise ConfigError(f"no VAE version of the term {name!r}")
    return out


def diffusion_terms(
    names: Iterable[str],
    original: nn.Module,
    objective: DiffusionObjective,
    *,
    num_classes: int,
    forget_classes: Sequence[int],
    n_data: int,
    n_forget: int,
    guidance: float = 1.0,
    siss_mixture: float = 0.5,
    siss_forget_scale: float = 1.0,
    generate: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    noise_shape: Sequence[int] | None = None,
    samples: int = 128,
    pool_samples: int = 500,
    fisher_timesteps: int = 10,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The named terms for a diffusion model trained with ``objective`` (class-conditional unless SISS).

    Selective Amnesia's ``replay`` and ``ewc`` need the model's sampler, ``generate(model, noise, labels)`` with
    initial noises of ``noise_shape``: the frozen original generates ``pool_samples`` samples once, balanced over
    all labels (seeded by ``seed``); ``replay`` draws ``samples`` per call from those of retained labels, and the
    Fisher of ``ewc`` is estimated from all of them (:func:`diffusion_fisher`, ``fisher_timesteps`` per sample).
    """
    names = list(names)
    if device is None:
        device = next(original.parameters()).device
    out: dict[str, Any] = {}
    pool: tuple[torch.Tensor, torch.Tensor] | None = None
    if {"replay", "ewc"} & set(names):
        if generate is None or noise_shape is None:
            raise ConfigError(
                "Selective Amnesia's replay and EWC terms on a diffusion model need its sampler (a model with one)"
            )
        pool = generate_pool(
            generate, frozen_copy(original), noise_shape, num_classes, pool_samples, seed=seed, device=device
        )
    for name in names:
        if name == "relabel":
            out[name] = DiffusionRelabel(objective, num_classes, forget_classes)
        elif name == "negative_guidance":
            out[name] = NegativeGuidance(objective, frozen_copy(original), guidance)
        elif name == "siss":
            out[name] = SISSLoss(objective, n_data, n_forget, siss_mixture, siss_forget_scale)
        elif name == "surrogate":
            out[name] = DiffusionSurrogate(objective)
        elif name == "replay":
            assert pool is not None
            keep = ~torch.isin(pool[1], torch.tensor(list(forget_classes), device=pool[1].device))
            out[name] = DiffusionReplay(objective, pool[0][keep], pool[1][keep], samples)
        elif name == "ewc":
            assert pool is not None
            per_example = copy.deepcopy(original)
            fisher = diffusion_fisher(
                per_example, objective, pool[0], pool[1] if objective.conditional_model else None, fisher_timesteps
            )
            out[name] = EWCPenalty.around(original, fisher)
        else:
            raise ConfigError(f"no diffusion version of the term {name!r}")
    return out
