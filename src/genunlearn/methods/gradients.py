"""Gradient algebra over lists of parameter tensors (no flattening, no concatenation).

Every method uses these helpers, so a speed-up here speeds up every method. A "gradient" is a list of
tensors shaped like the parameters. Divisions by a norm are guarded by a tiny floor only where the norm
can be zero; the floor changes nothing otherwise.

In a data-parallel run (:mod:`genunlearn.distributed`) :func:`grad` returns the *global* gradient (one
all-reduce of the ranks' shares) and :func:`orthogonality_penalty_grad` the global Hessian-vector products
(one more all-reduce): the only two places where methods communicate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from genunlearn.distributed import current as _data_parallel

Grads = list[torch.Tensor]
TINY = 1e-30
_SMALL = 1e-18  # below this a sum of squares may have underflowed (float32 min normal ~1.2e-38)


def grad(
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> Grads:
    """d loss / d params; parameters the loss does not depend on get zero gradients.

    In a data-parallel run the ranks' gradients are summed (``loss`` is the rank's share of the global loss):
    the result is the global gradient, whose autograd graph (with ``create_graph``) is the rank's own.
    """
    gs = torch.autograd.grad(
        loss, list(params), create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    out = [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)]
    dp = _data_parallel()
    return out if dp is None else dp.reduce_gradient(out, keep_graph=create_graph)


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inner product of two gradients (a 0-d tensor, differentiable)."""
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b, strict=True)]).sum()


def sqnorm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared Euclidean norm of a gradient."""
    return dot(a, a)


def axpy(alpha: torch.Tensor | float, x: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> Grads:
    """``y + alpha * x`` elementwise over the lists."""
    return [yi + alpha * xi for xi, yi in zip(x, y, strict=True)]


def scale(alpha: torch.Tensor | float, x: Sequence[torch.Tensor]) -> Grads:
    """``alpha * x``."""
    return [alpha * xi for xi in x]


def _norm_parts(a: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(|a|, scale, |a / scale|)``; ``scale`` is ``None`` on the fast path (no rescaling needed)."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(a)))
    value = float(total.detach())
    if math.isfinite(value) and value >= _SMALL:
        return total, None, None
    big = torch.stack(torch._foreach_norm(a, ord=float("inf"))).max()
    if not bool(torch.isfinite(big)) or float(big) == 0.0:
        return total, None, None  # non-finite entries: the caller's finiteness checks report them; zero stays zero
    scaled = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(torch._foreach_div(a, big))))
    return big * scaled, big, scaled


def norm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of a gradient, without overflow for norms beyond ``sqrt(float32 max)`` (~1.8e19) and without
    underflow for norms below ``sqrt(float32 min)`` (~1e-19).

    The fast path sums the per-tensor norms' squares; only when that overflows or is that small (one host sync to
    find out) is the gradient rescaled by its largest magnitude first. (A norm beyond float32's largest number,
    ~3.4e38, is ``inf``; :func:`unit`, :func:`cosine` and :func:`project_out` stay exact even then.)
    """
    a = list(a)
    if not a:
        return torch.zeros(())
    return _norm_parts(a)[0]


def unit(a: Sequence[torch.Tensor]) -> tuple[Grads, torch.Tensor]:
    """``(a / |a|, |a|)``; the zero gradient stays zero (any other has length 1, however small or large its norm)."""
    a = list(a)
    if not a:
        return [], torch.zeros(())
    n, big, scaled = _norm_parts(a)
    if big is not None and scaled is not None:  # rescaled: divide twice, never forming the norm itself
        return torch._foreach_div(torch._foreach_div(a, big), scaled), n
    return torch._foreach_div(a, torch.where(n > 0, n, torch.ones_like(n))), n


def project_out(g: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> Grads:
    """``g - (g.u) u`` with ``u = ref/|ref|``: the part of ``g`` orthogonal to ``ref`` (``g`` itself if ref = 0).

    Computed with the unit vector so that no product of two large norms can overflow.
    """
    u, _ = unit(ref)
    return axpy(-dot(g, u), u, g)


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cosine of the angle between two gradients (0 if either is zero), from unit vectors (no overflow).

    Clamped to [-1, 1]: rounding puts the dot product of two float32 unit vectors up to ~4e-7 outside.
    """
    return dot(unit(a)[0], unit(b)[0]).clamp(-1.0, 1.0)


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """True if every element of every tensor is finite (one device synchronisation)."""
    if not tensors:
        return True
    norms = torch._foreach_norm(list(tensors))
    return bool(torch.isfinite(torch.stack(norms)).all())


@torch.no_grad()
def penalty_vectors(
    g_r: Sequence[torch.Tensor], g_f: Sequence[torch.Tensor], *, kind: str = "cos"
) -> tuple[Grads, Grads, torch.Tensor, torch.Tensor]:
    """``(v_r, v_f, factor, value)`` with ``grad penalty = factor * (H_r v_r + H_f v_f)`` (no graph).

    ``kind="cos"``: ``c^2``, ``v_r = g_f/(|r||f|) - c g_r/|r|^2 = (u_f - c u_r)/|r|``,
    ``v_f = (u_r - c u_f)/|f|`` with unit vectors ``u``, ``factor = 2c``;
    ``kind="dot"``: ``d^2``, ``v_r = g_f``, ``v_f = g_r``, ``factor = 2d``.
    """
    gr = [x.detach() for x in g_r]
    gf = [x.detach() for x in g_f]
    if kind == "cos":  # from unit vectors, so that |g_r|^2 |g_f|^2 never has to be formed (overflow)
        u_r, n_r = unit(gr)
        u_f, n_f = unit(gf)
        c = dot(u_r, u_f)
        v_r = scale(1.0 / n_r.clamp_min(TINY), axpy(-c, u_r, u_f))
        v_f = scale(1.0 / n_f.clamp_min(TINY), axpy(-c, u_f, u_r))
        return v_r, v_f, 2.0 * c, c * c
    if kind == "dot":
        d = dot(gr, gf)
        return gf, gr, 2.0 * d, d * d
    raise ValueError(f"unknown orthogonality kind {kind!r}; use 'cos' or 'dot'")


def orthogonality_penalty_grad(
    g_r: Sequence[torch.Tensor],
    g_f: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    kind: str = "cos",
) -> tuple[Grads, torch.Tensor]:
    """Exact gradient of the orthogonality penalty and its value, via two Hessian-vector products.

    For ``kind="cos"`` the penalty is ``c^2`` with ``c = g_r.g_f / (|g_r||g_f|)`` (paper eq. 3) and

        d(c^2) = 2c [ H_r (g_f/(|r||f|) - c g_r/|r|^2) + H_f (g_r/(|r||f|) - c g_f/|f|^2) ];

    for ``kind="dot"`` it is ``d^2`` with ``d = g_r.g_f`` (appendix I, eq. 17): ``2d (H_r g_f + H_f g_r)``.
    ``g_r`` and ``g_f`` must have been computed with ``create_graph=True``; both Hessian-vector products
    are taken in a single backward pass through the two gradient graphs. In a data-parallel run each rank
    takes them through its own share's graph with the (global) vectors, and one all-reduce sums them.
    """
    v_r, v_f, factor, value = penalty_vectors(g_r, g_f, kind=kind)
    outputs, grad_outputs = [], []
    for g, v in zip(list(g_r) + list(g_f), v_r + v_f, strict=True):
        if g.requires_grad:  # a parameter a loss does not use has a constant (zero) gradient
            outputs.append(g)
            grad_outputs.append(v)
    if not outputs:
        return [torch.zeros_like(p) for p in params], value
    hv = torch.autograd.grad(outputs, list(params), grad_outputs=grad_outputs, allow_unused=True)
    hv = [torch.zeros_like(p) if h is None else h for h, p in zip(hv, params, strict=True)]
    dp = _data_parallel()
    if dp is not None:
        hv = dp.all_reduce(hv)
    return [h * factor for h in hv], value
