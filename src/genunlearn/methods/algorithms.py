"""The algorithms of the UNO paper (sections 3.1-3.5, appendix B), one small class each.

Update rules, with ``g_r``/``g_f`` the retain/forget loss gradients and ``eta`` the learning rate (the
loop's optimizer applies the step; with ``--optimizer sgd`` these are literally the paper's rules):

- (A)      theta += eta g_f
- (A-D)    even steps (A), odd steps theta -= eta g_r
- (SA)     theta += eta (g_f - (g_r.g_f/|g_r|^2) g_r)
- (S)      theta -= eta (g_r - (g_r.g_f/|g_f|^2) g_f)
- (UNO)    theta -= eta grad[L_r + beta_o cos^2(g_r, g_f)]
- (UNO-S)  even steps (UNO), odd steps (S)
- hat variants: g_r and g_f both get ``+ beta_h grad d_KL`` (eqs. 10-11), UNO's loss gets ``+ beta_h d_KL``
- (H)      theta -= eta grad[L_r + beta_h d_KL]
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from genunlearn.errors import ConfigError
from genunlearn.methods.base import Method, StepContext, StepOutput, register
from genunlearn.methods.gradients import (
    TINY,
    Grads,
    axpy,
    cosine,
    grad,
    norm,
    orthogonality_penalty_grad,
    penalty_vectors,
    project_out,
    scale,
)


def _f(x) -> float:
    return float(x.detach())


def _out(
    direction: Grads,
    l_r: torch.Tensor | None = None,
    l_f: torch.Tensor | None = None,
    g_r: Grads | None = None,
    g_f: Grads | None = None,
    **extra: float | torch.Tensor | None,
) -> StepOutput:
    """The step's output: losses as 0-d tensors (no host sync while timed) and deferred gradient diagnostics.

    Gradient norms and the squared cosine of ``g_r`` and ``g_f`` are computed by ``StepOutput.diagnostics``,
    which the loop calls after the timed region (and only when diagnostics are on).
    """
    logs: dict[str, float | torch.Tensor] = {}
    if l_r is not None:
        logs["loss_r"] = l_r.detach()
    if l_f is not None:
        logs["loss_f"] = l_f.detach()
    logs.update({k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in extra.items() if v is not None})
    gr = None if g_r is None else [g.detach() for g in g_r]
    gf = None if g_f is None else [g.detach() for g in g_f]

    def diagnostics() -> dict[str, float]:
        d: dict[str, float] = {}
        if gr is not None:
            d["grad_norm_r"] = float(norm(gr))
        if gf is not None:
            d["grad_norm_f"] = float(norm(gf))
        if gr is not None and gf is not None:
            d["cos2"] = float(cosine(gr, gf) ** 2)
        return d

    return StepOutput(direction, logs, diagnostics if (gr is not None or gf is not None) else None)


@register
class Ascent(Method):
    """(A): gradient ascent on the forget loss."""

    name = "a"
    summary = "gradient ascent on the forget loss (A); fast but destroys the model"
    uses_retain = False

    def compute(self, ctx: StepContext) -> StepOutput:
        l_f = ctx.forget_loss()
        g_f = grad(l_f, ctx.params)
        return _out(scale(-1.0, g_f), l_f=l_f, g_f=g_f)


@register
class RetainDescent(Method):
    """Plain descent on the retain loss (fine-tuning on retained data; a baseline and half of A-D)."""

    name = "d"
    summary = "descent on the retain loss only (fine-tuning baseline, half of A-D)"

    def compute(self, ctx: StepContext) -> StepOutput:
        l_r = ctx.retain_loss()
        g_r = grad(l_r, ctx.params)
        return _out(g_r, l_r=l_r, g_r=g_r)


class Alternating(Method):
    """Even steps run ``first``, odd steps ``second`` (A-D, UNO-S and their hat variants)."""

    first: ClassVar[type[Method]]
    second: ClassVar[type[Method]]

    def __init__(self) -> None:
        self._first, self._second = self.first(), self.second()

    def _phase(self, ctx: StepContext) -> Method:
        return self._first if ctx.step % 2 == 0 else self._second

    def compute(self, ctx: StepContext) -> StepOutput:
        out = self._phase(ctx).compute(ctx)
        out.logs["phase"] = float(ctx.step % 2)
        return out

    def needs_double_backward(self, ctx: StepContext) -> bool:
        return self._phase(ctx).needs_double_backward(ctx)


@register
class AscentDescent(Alternating):
    """(A-D): alternate ascent on g_f and descent on g_r."""

    name = "a-d"
    summary = "alternating ascent on forget / descent on retain (A-D)"
    first, second = Ascent, RetainDescent


class _Surgery(Method):
    """Shared part of the surgery methods: both gradients (plus the hat term when assisted)."""

    def gradients(self, ctx: StepContext) -> tuple[Grads, Grads, dict[str, Any]]:
        """``g_r``, ``g_f`` (hat term added when assisted) and the keyword arguments of :func:`_out`."""
        l_r, l_f = ctx.retain_loss(), ctx.forget_loss()
        g_r, g_f = grad(l_r, ctx.params), grad(l_f, ctx.params)
        d_kl = None
        if self.uses_classifier:
            g_h, d_kl = self.hat_grad(ctx)
            g_r, g_f = axpy(1.0, g_h, g_r), axpy(1.0, g_h, g_f)
        return g_r, g_f, {"l_r": l_r, "l_f": l_f, "g_r": g_r, "g_f": g_f, "d_kl": d_kl}


@register
class SurgeryAscent(_Surgery):
    """(SA): ascent along g_f with its component along g_r removed (Bae et al., 2023)."""

    name = "sa"
    summary = "gradient surgery, ascent on g_f projected orthogonal to g_r (SA)"

    def compute(self, ctx: StepContext) -> StepOutput:
        g_r, g_f, logs = self.gradients(ctx)
        return _out(scale(-1.0, project_out(g_f, g_r)), **logs)


@register
class Surgery(_Surgery):
    """(S): descent along g_r with its component along g_f removed."""

    name = "s"
    summary = "gradient surgery, descent on g_r projected orthogonal to g_f (S)"

    def compute(self, ctx: StepContext) -> StepOutput:
        g_r, g_f, logs = self.gradients(ctx)
        return _out(project_out(g_r, g_f), **logs)


@register
class SurgeryHat(Surgery):
    """(S^): surgery with the classifier term added to both gradients (Algorithm 7)."""

    name = "s-hat"
    summary = "classifier-assisted surgery S^ (needs a classifier)"
    uses_classifier = True


@register
class UNO(Method):
    """(UNO): descent on L_r + beta_o cos^2(g_r, g_f), the exact gradient via two Hessian-vector products."""

    name = "uno"
    summary = "unlearning via orthogonalization: retain loss + beta_o * squared cosine (UNO)"

    def needs_double_backward(self, ctx: StepContext) -> bool:
        return ctx.hp.beta_o != 0.0

    def compute(self, ctx: StepContext) -> StepOutput:
        second_order = ctx.hp.beta_o != 0.0  # with beta_o = 0 the penalty's gradient is exactly zero
        l_r, l_f = ctx.retain_loss(), ctx.forget_loss()
        g_r = grad(l_r, ctx.params, create_graph=second_order)
        g_f = grad(l_f, ctx.params, create_graph=second_order)
        d_kl = None
        if self.uses_classifier:
            g_h, d_kl = self.hat_grad(ctx, create_graph=second_order)
            g_r, g_f = axpy(1.0, g_h, g_r), axpy(1.0, g_h, g_f)
        logs = {"l_r": l_r, "l_f": l_f, "g_r": g_r, "g_f": g_f, "d_kl": d_kl}
        if not second_order:
            return _out([g.detach() for g in g_r], **logs)
        g_pen, _ = orthogonality_penalty_grad(g_r, g_f, ctx.params, kind=ctx.hp.orthogonality)
        direction = axpy(ctx.hp.beta_o, g_pen, [g.detach() for g in g_r])
        return _out(direction, **logs)


@register
class UNOHat(UNO):
    """(UNO^): UNO with the classifier term in the loss and in both gradients (Algorithm 8)."""

    name = "uno-hat"
    summary = "classifier-assisted UNO^ (needs a classifier)"
    uses_classifier = True


@register
class UNOS(Alternating):
    """(UNO-S): alternate UNO and S steps, starting with UNO (Algorithm 6)."""

    name = "uno-s"
    summary = "alternating UNO and surgery S steps (UNO-S)"
    first, second = UNO, Surgery


@register
class UNOSHat(Alternating):
    """(UNO^-S^): alternate UNO^ and S^ (Algorithm 9)."""

    name = "uno-s-hat"
    summary = "classifier-assisted UNO^-S^ (needs a classifier)"
    uses_classifier = True
    first, second = UNOHat, SurgeryHat


@register
class Histogram(Method):
    """(H): descent on L_r + beta_h d_KL (Algorithm 10; UNO^ with beta_o = 0)."""

    name = "h"
    summary = "histogram unlearning: retain loss + beta_h * classifier KL (H; needs a classifier)"
    uses_classifier = True

    def compute(self, ctx: StepContext) -> StepOutput:
        l_r = ctx.retain_loss()
        g_r = grad(l_r, ctx.params)
        g_h, d_kl = self.hat_grad(ctx)
        direction = axpy(1.0, g_h, g_r)
        return _out(direction, l_r=l_r, g_r=direction, d_kl=d_kl)


@register
class SurgeryBoundedAscent(_Surgery):
    """(S-asc, genunlearn): S plus a bounded ascent on the forget loss, both parts orthogonalised.

    ``d = g_r' - w (|g_r'| / |g_f'|) g_f'`` with ``g_r'`` = g_r projected orthogonal to g_f (the S
    direction) and ``g_f'`` = g_f projected orthogonal to g_r (the SA direction); ``w = ascent_weight``
    while the forget loss is below ``forget_cap`` times its first value, else 0, so the ascent cannot run
    away (the failure of A and SA). Experimental: see docs/findings.md.
    """

    name = "s-asc"
    summary = "S + bounded forget ascent orthogonal to g_r (experimental, genunlearn)"

    def __init__(self) -> None:
        self._first_forget: float | None = None

    def compute(self, ctx: StepContext) -> StepOutput:
        g_r, g_f, logs = self.gradients(ctx)
        l_f = _f(logs["l_f"])
        if self._first_forget is None:
            self._first_forget = l_f
        cap = ctx.hp.forget_cap * abs(self._first_forget)
        w = ctx.hp.ascent_weight if l_f < cap else 0.0
        descent, ascent = project_out(g_r, g_f), project_out(g_f, g_r)
        ratio = norm(descent) / norm(ascent).clamp_min(TINY)
        return _out(axpy(-w * ratio, ascent, descent), ascent_w=w, **logs)


@register
class LatentReplacementDescent(Method):
    """(REP, genunlearn): descent on ``L_r + beta_r L_rep``, no classifier.

    ``L_rep`` (:class:`~genunlearn.objectives.LatentReplacement`) teaches the generator to produce retained
    examples where the frozen original encoder places the forget examples: the unconditional analogue of
    the paper's conditional replacement (section 3.4), with the latent region of the forget data playing
    the role of the forget condition. See docs/findings.md for the measurements.
    """

    name = "rep"
    summary = "latent replacement: retain loss + beta_r * (forget region -> nearest retained data); no classifier"
    uses_replacement = True

    def compute(self, ctx: StepContext) -> StepOutput:
        if ctx.replace_loss is None:
            raise ConfigError("this method needs a latent replacement term (replace_loss) but none was given")
        l_r, l_p = ctx.retain_loss(), ctx.replace_loss()
        g_r, g_p = grad(l_r, ctx.params), grad(l_p, ctx.params)
        direction = axpy(ctx.hp.beta_r, g_p, g_r)
        return _out(direction, l_r=l_r, g_r=g_r, loss_rep=l_p)


@register
class LatentReplacementDecoded(LatentReplacementDescent):
    """(REP-DECODED, genunlearn, experimental): ``rep`` taught the original's own samples, not training images.

    The same rule as ``rep`` (descent on ``L_r + beta_r L_rep``), but the replacement targets are what the frozen
    original decodes at the nearest unambiguous retained examples' posterior means (issue 17's idea: targets from
    the frozen decoder at nearby retained latents), so the forget region is asked for samples the model already
    generates in its own style. No classifier. Measured in docs/findings.md.
    """

    name = "rep-decoded"
    summary = "rep with targets decoded by the frozen original at the nearest retained latents; no classifier"
    replacement_targets = "decoded"


@register
class LatentReplacementKeep(Method):
    """(REP-KEEP, genunlearn, experimental): ``rep`` with the decoder held in place on retained latents.

    Descent on ``L_r + beta_r L_rep + beta_k L_keep``: ``rep``'s replacement of the forget region, plus
    :class:`~genunlearn.objectives.peer_terms.DecoderKeep` (the model's output at retained examples' latents
    against the frozen original's), which asks directly for what the collateral change measures: every sample
    of a retained class stays where it was. No classifier. Measured in docs/findings.md (issue 17).
    """

    name = "rep-keep"
    summary = "rep + beta_k * decoder keep (frozen original's outputs on retained latents); no classifier"
    uses_replacement = True
    terms = ("keep",)
    keep_term = "keep"

    def compute(self, ctx: StepContext) -> StepOutput:
        if ctx.replace_loss is None:
            raise ConfigError("this method needs a latent replacement term (replace_loss) but none was given")
        l_r, l_p, l_k = ctx.retain_loss(), ctx.replace_loss(), ctx.term(self.keep_term)
        g_r, g_p, g_k = grad(l_r, ctx.params), grad(l_p, ctx.params), grad(l_k, ctx.params)
        direction = axpy(ctx.hp.keep_weight, g_k, axpy(ctx.hp.beta_r, g_p, g_r))
        return _out(direction, l_r=l_r, g_r=g_r, loss_rep=l_p, loss_keep=l_k)


@register
class LatentReplacementKeepAway(LatentReplacementKeep):
    """(REP-KEEP-AWAY, genunlearn, experimental): ``rep-keep`` with the keep term away from the forget region.

    As ``rep-keep``, but the decoder is held to the frozen original only at latents of retained examples that
    lie away from the forget data (none of their 16 nearest latents is a forget example: the rule that chooses
    ``rep``'s targets), so that the keep term does not defend the border the replacement must move (issue 17's
    reading of ``rep-keep``'s rebound). No classifier. Measured in docs/findings.md.
    """

    name = "rep-keep-away"
    summary = "rep-keep with the keep term only on retained latents away from the forget data; no classifier"
    terms = ("keep_away",)
    keep_term = "keep_away"


class _RNGState:
    """The CPU (and, if initialised, every CUDA device's) random state, to replay a loss's sampling noise."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


@register
class UNOFiniteDifference(Method):
    """(UNO-FD, genunlearn): UNO with both Hessian-vector products taken by forward finite differences.

    The exact penalty gradient is ``2c [H_r v_r + H_f v_f]`` (see
    :func:`~genunlearn.methods.gradients.orthogonality_penalty_grad`); here
    ``H v ~ (grad L(theta + eps v) - grad L(theta)) / eps`` on the *same* batch and the same sampling noise
    (the random state is replayed), with ``eps = fd_eps * (1 + |theta|) / |v|``. Four first-order gradients
    and no graph kept: about 2x an S step in time and S's memory, instead of ~3x and ~3x. An
    approximation: measured against exact UNO in benchmarks/NOTES.md and results/.
    """

    name = "uno-fd"
    summary = "UNO with finite-difference Hessian-vector products (approximate, first-order only; genunlearn)"

    def compute(self, ctx: StepContext) -> StepOutput:
        params = ctx.params
        rng_r = _RNGState()
        l_r = ctx.retain_loss()
        g_r = grad(l_r, params)
        rng_f = _RNGState()
        l_f = ctx.forget_loss()
        g_f = grad(l_f, params)
        rng_end = _RNGState()
        if ctx.hp.beta_o == 0.0:
            return _out(g_r, l_r, l_f, g_r, g_f)
        v_r, v_f, factor, _ = penalty_vectors(g_r, g_f, kind=ctx.hp.orthogonality)
        with torch.no_grad():
            theta_norm = norm(params)
        # The perturbed forwards must not move BatchNorm running statistics (train mode): exact UNO updates them
        # once per batch, so the extra forwards' updates are undone.
        saved_buffers = [b.detach().clone() for b in ctx.buffers]
        pen: Grads | None = None
        try:
            for v, g0, rng, loss in ((v_r, g_r, rng_r, ctx.retain_loss), (v_f, g_f, rng_f, ctx.forget_loss)):
                with torch.no_grad():
                    eps = float(ctx.hp.fd_eps * (1.0 + theta_norm) / norm(v).clamp_min(TINY))
                    torch._foreach_add_(params, v, alpha=eps)
                try:
                    rng.restore()
                    hv = grad(loss(), params)
                finally:
                    with torch.no_grad():
                        torch._foreach_add_(params, v, alpha=-eps)
                with torch.no_grad():  # in place: (g(theta + eps v) - g(theta)) / eps, summed over both batches
                    torch._foreach_sub_(hv, g0)
                    torch._foreach_mul_(hv, 1.0 / eps)
                    if pen is None:
                        pen = hv
                    else:
                        torch._foreach_add_(pen, hv)
                del hv
        finally:
            with torch.no_grad():
                for b, saved in zip(ctx.buffers, saved_buffers, strict=True):
                    b.copy_(saved)
        rng_end.restore()
        assert pen is not None
        with torch.no_grad():
            torch._foreach_mul_(pen, ctx.hp.beta_o * factor)
            torch._foreach_add_(pen, g_r)
        return _out(pen, l_r, l_f, g_r, g_f)
