"""Peer methods: unlearning algorithms of other papers, in the same engine as the UNO paper's (one class each).

Update rules, with ``g_r``/``g_f`` the retain/forget gradients, ``u = g/|g|`` and ``eta`` the learning rate (the
loop's optimizer applies the step). Sources and the choices made for each model family: ``docs/peers.md``.

- (GDiff)   theta -= eta grad[L_r - lambda L_f]                       gradient difference (e.g. Liu et al. 2022)
- (NGDiff)  theta -= eta_t (u_r - u_f), eta_t by the generalized Newton rule on L_r   (Bu et al. 2024)
- (SalUn)   theta -= eta m * grad[L_r + w L_relabel], m = top fraction of |sum grad L_f| at the start
                                                                        (Fan et al., ICLR 2024)
- (SA)      theta -= eta grad[L_surrogate + gamma L_replay + lambda sum_i F_i (theta_i - theta*_i)^2]
                                                                        (Heng & Soh, NeurIPS 2023)
- (ESD)     theta -= eta grad || eps_theta(x_t, c_f) - [eps*(x_t) - g (eps*(x_t, c_f) - eps*(x_t))] ||^2
                                                                        (Gandikota et al., ICCV 2023)
- (SISS)    theta -= eta grad L_SISS (importance-sampled retain-minus-forget denoising loss)
                                                                        (Alberti et al., ICLR 2025)
- (I2I)     theta -= eta grad[L_r + alpha L_f], both losses *descended*: with the I2I embedding task, L_r keeps
            retain embeddings and L_f pulls forget embeddings to the noise embedding (Li et al., ICLR 2024)

The model-specific parts — what "a mismatched target", "a surrogate", "replay", "the frozen model's guided
prediction" are for a VAE or a diffusion model — are *terms* (:data:`~genunlearn.methods.base.TERMS`) that the
task provides (:mod:`genunlearn.objectives.peer_terms`); the methods only combine them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genunlearn.methods.algorithms import _out, _RNGState
from genunlearn.methods.base import Method, PrepareContext, StepContext, StepOutput, register
from genunlearn.methods.gradients import axpy, grad, unit


@register
class GradientDifference(Method):
    """(GDiff): descent on ``L_r - lambda L_f`` (``forget_weight`` = lambda)."""

    name = "gdiff"
    summary = "gradient difference: descent on L_r - lambda * L_f (GDiff)"

    def compute(self, ctx: StepContext) -> StepOutput:
        l_r, l_f = ctx.retain_loss(), ctx.forget_loss()
        g_r, g_f = grad(l_r, ctx.params), grad(l_f, ctx.params)
        return _out(axpy(-ctx.hp.forget_weight, g_f, g_r), l_r, l_f, g_r, g_f)


@register
class I2IEmbeddingUnlearning(Method):
    """(I2I, Li et al. ICLR 2024): descent on ``L_r + alpha L_f`` (``forget_weight`` = alpha).

    Both terms are minimised: the task's forget loss is itself a target to reach (with
    :class:`~genunlearn.objectives.i2i.I2IEmbeddingTask`: the forget images' embeddings pulled to the original
    encoder's embedding of noise), not a loss to ascend. Train only the encoder (the task's model adapter freezes
    the decoder).
    """

    name = "i2i"
    summary = "I2I unlearning (Li et al. 2024): descent on L_r + alpha * L_f, L_f a target (embedding task)"

    def compute(self, ctx: StepContext) -> StepOutput:
        l_r, l_f = ctx.retain_loss(), ctx.forget_loss()
        g_r, g_f = grad(l_r, ctx.params), grad(l_f, ctx.params)
        return _out(axpy(ctx.hp.forget_weight, g_f, g_r), l_r, l_f, g_r, g_f)


@register
class NormalizedGradientDifference(Method):
    """(NGDiff, Bu et al. 2024): descent along ``u_r - u_f`` with an automatic step size.

    The direction is the difference of the unit retain and forget gradients. With ``adaptive_step`` the step
    size ``eta_t`` comes from the generalized Newton rule (GeN, Bu & Xu 2024) on the retain loss along the
    direction: with ``L_0 = L_r(theta)`` and ``L_pm = L_r(theta +- eta_{t-1} d)`` (same batch, same sampling
    noise), ``eta_t = eta_{t-1} (L_+ - L_-) / (2 (L_+ - 2 L_0 + L_-))`` when the fitted parabola has a minimum
    ahead (positive slope and curvature), else ``eta_t = eta_{t-1}``; ``eta_0 = lr``. The direction is returned
    scaled by ``eta_t / lr``, so that the loop's SGD step is exactly ``eta_t (u_r - u_f)`` (Adam normalises the
    scale away: use ``optimizer = "sgd"`` for the adaptive step to act).
    """

    name = "ngdiff"
    summary = "normalized gradient difference u_r - u_f with a generalized-Newton step size (NGDiff)"

    def __init__(self) -> None:
        self._eta: float | None = None

    def compute(self, ctx: StepContext) -> StepOutput:
        params = ctx.params
        rng_r = _RNGState()
        l_r = ctx.retain_loss()
        g_r = grad(l_r, params)
        l_f = ctx.forget_loss()
        g_f = grad(l_f, params)
        rng_end = _RNGState()
        u_r, _ = unit(g_r)
        u_f, _ = unit(g_f)
        d = axpy(-1.0, u_f, u_r)
        if self._eta is None:
            self._eta = ctx.hp.lr
        eta = self._eta
        if ctx.hp.adaptive_step:
            eta = self._newton_step(ctx, d, float(l_r.detach()), rng_r)
            rng_end.restore()
        self._eta = eta
        return _out([x * (eta / ctx.hp.lr) for x in d], l_r, l_f, g_r, g_f, step_size=eta)

    def _newton_step(self, ctx: StepContext, d: list[torch.Tensor], l0: float, rng: _RNGState) -> float:
        """The generalized Newton step along ``d`` from two probes at ``+- eta_{t-1}`` (buffers restored)."""
        eta = float(self._eta)  # type: ignore[arg-type]
        saved = [b.detach().clone() for b in ctx.buffers]
        probes = []
        try:
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    torch._foreach_add_(ctx.params, d, alpha=sign * eta)
                try:
                    rng.restore()
                    with torch.no_grad():
                        probes.append(float(ctx.retain_loss()))
                finally:
                    with torch.no_grad():
                        torch._foreach_add_(ctx.params, d, alpha=-sign * eta)
        finally:
            with torch.no_grad():
                for b, v in zip(ctx.buffers, saved, strict=True):
                    b.copy_(v)
        l_plus, l_minus = probes
        slope, curvature = l_plus - l_minus, l_plus - 2.0 * l0 + l_minus
        if math.isfinite(slope) and math.isfinite(curvature) and slope > 0 and curvature > 0:
            return eta * slope / (2.0 * curvature)
        return eta


@register
class SaliencyUnlearning(Method):
    """(SalUn, Fan et al. 2024): only the salient weights train, on relabelled forget data plus the retain loss.

    Before the first update the gradient of the forget loss is summed over one pass of the forget data; the
    ``saliency_fraction`` of all trainable weights with the largest magnitude of that sum form the mask ``m``
    (one global threshold, as SalUn). Every update descends ``m * grad[L_r + w L_relabel]``: the ``relabel``
    term is the forget data with mismatched targets (random other labels; for a VAE, forget latents decoded
    towards random retained images), ``w = relabel_weight``. Weights outside the mask never move (their Adam
    moments stay zero).
    """

    name = "salun"
    summary = "saliency unlearning: masked descent on L_r + w * relabelled-forget loss (SalUn)"
    terms = ("relabel",)
    prepares = True

    def __init__(self) -> None:
        self.mask: list[torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The mask (prepared once, so a resumed run must carry it)."""
        return {"mask": None if self.mask is None else [m.detach().clone() for m in self.mask]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mask = None if state["mask"] is None else list(state["mask"])

    def prepare(self, ctx: PrepareContext) -> dict[str, float]:
        total: list[torch.Tensor] | None = None
        for loss in ctx.forget_losses:
            g = grad(loss(), ctx.params)
            with torch.no_grad():
                if total is None:
                    total = [x.detach().clone() for x in g]
                else:
                    torch._foreach_add_(total, g)
        assert total is not None
        self.mask = saliency_mask(total, ctx.hp.saliency_fraction)
        kept = sum(int(m.sum()) for m in self.mask)
        return {"saliency_kept": float(kept)}

    def compute(self, ctx: StepContext) -> StepOutput:
        l_rel = ctx.term("relabel")
        if self.mask is None:  # used outside the loop without prepare(): the forget batch of this step decides
            self.mask = saliency_mask(grad(ctx.forget_loss(), ctx.params), ctx.hp.saliency_fraction)
        l_r = ctx.retain_loss()
        g = grad(l_r + ctx.hp.relabel_weight * l_rel, ctx.params)
        direction = [x * m for x, m in zip(g, self.mask, strict=True)]
        return _out(direction, l_r=l_r, loss_relabel=l_rel)


def saliency_mask(gradient: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """0/1 masks (float, shaped like the parameters) of the ``fraction`` of entries with the largest ``|gradient|``.

    Exactly ``ceil(fraction * n)`` entries are kept (ties broken by position), over all tensors at once.
    """
    flat = torch.cat([g.detach().abs().reshape(-1).float() for g in gradient])
    k = min(flat.numel(), max(1, math.ceil(fraction * flat.numel())))
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, k, sorted=False).indices] = 1.0
    out, start = [], 0
    for g in gradient:
        out.append(keep[start : start + g.numel()].reshape(g.shape).to(g.dtype))
        start += g.numel()
    return out


@register
class SelectiveAmnesia(Method):
    """(SA, Heng & Soh 2023): surrogate for the forget condition, generative replay, and an EWC penalty.

    Descends ``L_surrogate + gamma L_replay + lambda EWC`` (``replay_weight`` = gamma, ``ewc_lambda`` = lambda).
    ``surrogate``: the forget condition (class label; for a VAE the forget data's latent region) trained on a
    surrogate distribution (uniform noise images); ``replay``: the training loss of retained-class samples
    generated by a frozen copy of the original model; ``ewc``: ``sum_i F_i (theta_i - theta*_i)^2`` with the
    diagonal Fisher ``F`` estimated from samples of the original model. No real data is used at all.
    """

    name = "amnesia"
    summary = "selective amnesia: surrogate + replay from a frozen copy + EWC with a generated-sample Fisher (SA)"
    terms = ("surrogate", "replay", "ewc")
    uses_retain = False

    def compute(self, ctx: StepContext) -> StepOutput:
        l_s, l_p, l_e = ctx.term("surrogate"), ctx.term("replay"), ctx.term("ewc")
        loss = l_s + ctx.hp.replay_weight * l_p + ctx.hp.ewc_lambda * l_e
        direction = grad(loss, ctx.params)
        return _out(direction, loss_surrogate=l_s, loss_replay=l_p, loss_ewc=l_e)


class _TermDescent(Method):
    """Descent on one named term (the term holds the method's objective)."""

    term_name: str = ""
    uses_retain = False

    def compute(self, ctx: StepContext) -> StepOutput:
        loss = ctx.term(self.term_name)
        return _out(grad(loss, ctx.params), **{f"loss_{self.term_name}": loss})


@register
class ErasedStableDiffusion(_TermDescent):
    """(ESD, Gandikota et al. 2023): the forget label's prediction trained towards negative guidance.

    The ``negative_guidance`` term is ``|| eps_theta(x_t, t, c_f) - [eps*(x_t, t) - g (eps*(x_t, t, c_f) -
    eps*(x_t, t))] ||^2`` with ``eps*`` the frozen original (unconditional: the null label) and ``g`` the
    guidance scale: the model learns to predict, under the forget label, what the original predicts when guided
    *away* from it. Conditional diffusion models only.
    """

    name = "esd"
    summary = "erasing by negative guidance towards a frozen copy (ESD; conditional diffusion models)"
    terms = ("negative_guidance",)
    term_name = "negative_guidance"


@register
class SubtractedImportanceSampledScores(_TermDescent):
    """(SISS, Alberti et al. 2025): descent on the importance-sampled retain-minus-forget denoising loss.

    The ``siss`` term draws each noisy input from the mixture ``(1 - lam) q(x_t | x) + lam q(x_t | a)`` of a
    retain example ``x`` and a forget example ``a`` and weights the two denoising errors by their density
    ratios to the mixture: one forward pass gives an unbiased estimate of ``n/(n-k) L(D) - s k/(n-k) L(A)``
    (the retain loss of the data without the forget set). Diffusion models; data (sample) unlearning.
    """

    name = "siss"
    summary = "subtracted importance-sampled scores: retain minus forget denoising loss, one forward (SISS)"
    terms = ("siss",)
    term_name = "siss"
    uses_retain = True


__all__ = [
    "ErasedStableDiffusion",
    "GradientDifference",
    "NormalizedGradientDifference",
    "SaliencyUnlearning",
    "SelectiveAmnesia",
    "SubtractedImportanceSampledScores",
    "saliency_mask",
]
